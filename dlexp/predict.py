"""``dlexp-predict``: evaluate a saved model, from a checkpoint file, an MLflow run id or model URI.

    dlexp-predict outputs/runs/.../best_params.pkl            # test error on its data set
    dlexp-predict <run id> --split valid                       # from the MLflow store
    dlexp-predict <run id> --inputs images.npy --output labels.npy
    dlexp-predict models:/digits-mlp/3                         # a registered version (or @alias, /latest)
    dlexp-predict runs:/<run id>/model                         # a run's MLflow model

Checkpoints are read with the restricted unpickler (numpy arrays and plain
containers only), never with plain ``pickle.load``, and checked against the
model they name before anything is predicted: every mistake and fault ends in
one line ``dlexp-predict: error: ...`` on stderr and exit status 2 (a
registered name, version or alias that is not there included). An MLflow
model of dlexp carries its checkpoint, which is what is read. A run's
checkpoint is downloaded into a temp directory that is removed afterwards;
``--output`` is written atomically, never onto the store, the checkpoint or the inputs, and onto an
existing file only with ``--force`` (:mod:`dlexp.output`).
"""
import dataclasses
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from . import safe_pickle as checkpoint
from .config import DatasetConfig
from .data import sources
from .entry import OneLineParser
from .models import CONFIGS, build_model, check_model
from .output import check_output, write_output
from .tracking.artifacts import FORMAT, fetched_checkpoint
from .train.metrics import predict

PROG = "dlexp-predict"
DATASETS = ("digits", *sources.FILE_SETS)
# (C, H, W) of each data set, known before its files are read (a mismatch is refused without loading them)
IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28)}
# what save_checkpoint writes: key -> (accepted types, what it is)
KEYS = {"model": (dict, "a dict"), "dataset": (dict, "a dict"), "image_shape": ((list, tuple), "[C, H, W]"),
        "n_classes": (int, "an int >= 1"), "params": (dict, "a dict of arrays")}


class PredictError(ValueError):
    """A bad argument or file given to dlexp-predict; the message is one line naming it."""


def _size(shape) -> str:
    """An image shape as a user reads it: 8x8 (one channel) or 3x32x32."""
    shape = tuple(shape)
    return "x".join(map(str, shape[1:] if len(shape) == 3 and shape[0] == 1 else shape))


def _check_keys(ckpt, path) -> None:
    """The checkpoint is a dict of this format with every key save_checkpoint writes, of the right type."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise checkpoint.CheckpointError(f"{path}: not a dlexp checkpoint (no 'format': '{FORMAT}')")
    for key, (types, what) in KEYS.items():
        if key not in ckpt:
            raise checkpoint.CheckpointError(f"{path}: no {key!r} in the checkpoint (a {FORMAT} checkpoint has "
                                             f"{', '.join(KEYS)})")
        if not isinstance(ckpt[key], types) or isinstance(ckpt[key], bool):
            raise checkpoint.CheckpointError(f"{path}: {key!r} is {ckpt[key]!r:.60}, expected {what}")
    shape = ckpt["image_shape"]
    if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
        raise checkpoint.CheckpointError(f"{path}: 'image_shape' is {shape!r:.60}, expected [C, H, W] of "
                                         "positive ints")
    if ckpt["n_classes"] < 1:
        raise checkpoint.CheckpointError(f"{path}: 'n_classes' is {ckpt['n_classes']}, expected an int >= 1")


def _config(cls, values: dict, what: str, path):
    """``cls(**values)``, refusing keys the dataclass has not and values its checks refuse."""
    fields = [f.name for f in dataclasses.fields(cls)]
    extra = [k for k in values if k not in fields]
    if extra:
        raise checkpoint.CheckpointError(f"{path}: {what} has key {extra[0]!r}, which is not one of its "
                                         f"fields ({', '.join(fields)})")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path}: {what} {values!r:.200}: {e}") from None


def _model_config(ckpt, path):
    """The model's config dataclass, rebuilt from the checkpoint; the name must be a known model."""
    name = ckpt["model"].get("name")
    if name not in CONFIGS:
        raise checkpoint.CheckpointError(f"{path}: model name {name!r} is unknown: one of "
                                         f"{', '.join(sorted(CONFIGS))}")
    cfg = _config(CONFIGS[name], ckpt["model"], f"the {name} config", path)
    _config(DatasetConfig, ckpt["dataset"], "the dataset config", path)
    try:
        check_model(cfg, ckpt["image_shape"])
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{path}: {e}") from None
    return cfg


def _check_params(expected: dict, params: dict, what: str, path) -> dict:
    """The checkpoint's params as tensors, after checking them against the model's ``state_dict``:
    the same keys, shapes and numeric types, and every value finite. The first bad key is named."""
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        how = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the model has not"
        raise checkpoint.CheckpointError(f"{path}: params {how} (a {what} has {', '.join(expected)})")
    tensors, bad, first_bad = {}, 0, None
    for key, want in expected.items():
        try:
            value = np.array(params[key])
        except (ValueError, TypeError):
            value = np.array(None)
        if value.dtype.kind not in "biuf":
            raise checkpoint.CheckpointError(f"{path}: params[{key!r}] is not a numeric array "
                                             f"({type(params[key]).__name__} of {value.dtype})")
        if value.shape != tuple(want.shape):
            raise checkpoint.CheckpointError(f"{path}: params[{key!r}] has shape {value.shape}, a {what} "
                                             f"expects {tuple(want.shape)}")
        n = int(value.size - np.isfinite(value).sum())
        bad, first_bad = bad + n, first_bad or (key if n else None)
        tensors[key] = torch.from_numpy(value.astype(np.float32 if want.is_floating_point() else value.dtype))
    if bad:
        raise checkpoint.CheckpointError(f"{path}: {bad} NaN/Inf values in params (first in {first_bad!r}); "
                                         "refusing to predict with them")
    return tensors


def _check_checkpoint(ckpt, path):
    """The model a checkpoint describes, with its parameters loaded, or a one-line CheckpointError.

    Everything is checked before any real tensor is made: the keys and their types, the model name
    and config, then the parameters against a model built on the meta device (no memory used)."""
    _check_keys(ckpt, path)
    cfg = _model_config(ckpt, path)
    image_shape, n_classes = tuple(ckpt["image_shape"]), ckpt["n_classes"]
    try:
        with torch.device("meta"):
            skeleton = build_model(cfg, image_shape, n_classes)
    except (ValueError, TypeError, RuntimeError) as e:  # values of a wrong type that its checks let through
        raise checkpoint.CheckpointError(f"{path}: cannot build the {cfg.name} it describes "
                                         f"({str(e).strip().splitlines()[0]})") from None
    if not skeleton.supervised:
        raise checkpoint.CheckpointError(f"{path}: a {cfg.name} has no classifier; nothing to predict")
    what = f"{cfg.name} for {_size(image_shape)} inputs and {n_classes} classes"
    tensors = _check_params(skeleton.state_dict(), ckpt["params"], what, path)
    model = build_model(cfg, image_shape, n_classes)
    model.load_state_dict(tensors)
    return model.eval()


def load_model(path):
    """Rebuild the model saved in a dlexp checkpoint; returns (model, checkpoint dict).

    Raises :class:`dlexp.safe_pickle.CheckpointError` (one line naming ``path``) for any checkpoint
    that does not describe a usable classifier."""
    ckpt = checkpoint.load(path)
    return _check_checkpoint(ckpt, path), ckpt


def _check_output(args) -> None:
    """``--output``: a .npy name that :func:`dlexp.output.check_output` allows (never the store, the
    checkpoint, the inputs or an existing file without --force). Checked before any work."""
    if args.output is None:
        return
    check_output(args.output, args.force, args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
                 reads=((args.source, "the checkpoint"), (args.inputs, "the --inputs file")))
    if Path(args.output).suffix != ".npy":
        raise PredictError(f"--output {args.output}: must be a .npy file name (e.g. labels.npy)")


def _load_inputs(path, image_shape) -> np.ndarray:
    """``--inputs``: a numeric .npy array of N >= 1 images of the model's size, all values finite."""
    n = math.prod(image_shape)
    expected = f"the model expects {_size(image_shape)} inputs ({n} values): an array (N, {n}) or " \
               f"(N, {', '.join(map(str, image_shape[1:]))})"
    try:
        with checkpoint.open_regular(path) as f:
            x = np.load(f, allow_pickle=False)
            if not isinstance(x, np.ndarray):
                x.close()
                raise PredictError(f"--inputs {path}: is a .npz archive; give one .npy array")
    except FileNotFoundError:
        raise PredictError(f"--inputs {path}: no such file") from None
    except IsADirectoryError:
        raise PredictError(f"--inputs {path}: is a directory, not a .npy file") from None
    except PredictError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise PredictError(f"--inputs {path}: not a readable .npy array ({str(e).splitlines()[0]})") from None
    if x.dtype.kind not in "biuf":
        raise PredictError(f"--inputs {path}: holds {x.dtype} values; expected numbers in [0, 1]")
    if x.ndim < 2 or math.prod(x.shape[1:]) != n:
        raise PredictError(f"--inputs {path}: has shape {x.shape}; {expected}")
    if len(x) == 0:
        raise PredictError(f"--inputs {path}: holds no images (shape {x.shape})")
    x = x.reshape(len(x), n).astype(np.float32)
    bad = int(x.size - np.isfinite(x).sum())
    if bad:
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise PredictError(f"--inputs {path}: {bad} NaN/Inf values (first in image {row}); refusing to "
                           "predict on them")
    return x


def _check_dataset_shape(ckpt, name, image_shape) -> None:
    """A model takes inputs of one size only: refuse a data set of another size by name."""
    want = tuple(ckpt["image_shape"])
    if tuple(image_shape) != want:
        raise PredictError(f"--dataset {name}: the model expects {_size(want)} inputs ({math.prod(want)} "
                           f"values), dataset {name} has {_size(image_shape)}")


def _evaluate(model, ckpt, args):
    """Labels of a split of the data set (the trained one or ``--dataset``) and the line reporting its error."""
    from .data import load_dataset

    ds_cfg = dataclasses.asdict(DatasetConfig(**ckpt["dataset"]))  # checked by load_model; defaults filled in
    if args.dataset and args.dataset != ds_cfg["name"]:
        ds_cfg.update(name=args.dataset, path=None)  # the saved path holds the other data set
    if args.data_path:
        ds_cfg["path"] = args.data_path
    _check_dataset_shape(ckpt, ds_cfg["name"], IMAGE_SHAPES[ds_cfg["name"]])
    data = load_dataset(DatasetConfig(**ds_cfg))
    _check_dataset_shape(ckpt, ds_cfg["name"], data.image_shape)  # a file of another size than usual
    split = getattr(data, args.split)
    labels = predict(model, torch.from_numpy(split.x)).numpy()
    wrong = int((labels != split.y).sum())
    return labels, (f"{args.split} error {100 * wrong / len(labels):.2f} % ({wrong}/{len(labels)}) "
                    f"on {ds_cfg['name']} with {ckpt['model']['name']}")


def _run(args) -> None:
    """Check the files, read the checkpoint (a run's download is removed after), predict, write, print."""
    for path, what in ((args.source, "the checkpoint"), (args.inputs, "--inputs")):
        kind = path and checkpoint.file_kind(path)
        if kind and kind != "a directory":  # a FIFO would be waited on forever
            raise PredictError(f"{what} {path}: is {kind}, not a regular file; give a file")
    _check_output(args)
    with fetched_checkpoint(args.source, args.tracking_uri) as path:
        model, ckpt = load_model(path)
    if args.inputs:
        labels = predict(model, torch.from_numpy(_load_inputs(args.inputs, tuple(ckpt["image_shape"])))).numpy()
        report = " ".join(map(str, labels.tolist()))
    else:
        labels, report = _evaluate(model, ckpt, args)
    if args.output:
        write_output(args.output, lambda f: np.save(f, labels))
    print(report, flush=True)


def parser() -> OneLineParser:
    """The command line; --split and --dataset are choices, so a typo is refused before any work."""
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("source", help="checkpoint file (best_params.pkl), MLflow run id, or model URI: "
                                  "models:/<name>/<version>, models:/<name>@<alias>, runs:/<run id>/model")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--dataset", choices=DATASETS, help="data set to evaluate on (default: the one it was trained on)")
    p.add_argument("--data-path", help="dataset.path for the data set")
    p.add_argument("--inputs", help=".npy file of images (N, H*W) or (N, H, W) in [0, 1]: predict their labels")
    p.add_argument("--output", help="write the predicted labels here (.npy, written atomically; never the store "
                                    "or a file it reads)")
    p.add_argument("--force", action="store_true", help="let --output replace an existing file")
    p.add_argument("--tracking-uri", help="MLflow store holding the run (default: as dlexp)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        _run(args)
    except BrokenPipeError:  # stdout closed early (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
              file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{PROG}: error: out of memory (a smaller --inputs file, or fewer images at once)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: stopped", file=sys.stderr)
        return 130
    except Exception as e:  # a fault of dlexp itself, not of the user's input: still one line
        print(f"{PROG}: error: internal error, please report it: {type(e).__name__}: "
              f"{(str(e).strip().splitlines() or [''])[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
