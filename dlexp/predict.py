"""``dlexp-predict``: evaluate a saved model, from a checkpoint file or an MLflow run id.

    dlexp-predict outputs/runs/.../best_params.pkl            # test error on its data set
    dlexp-predict <run id> --split valid                       # from the MLflow store
    dlexp-predict <run id> --inputs images.npy --output labels.npy

Checkpoints are read with the restricted unpickler (numpy arrays and plain
containers only), never with plain ``pickle.load``.
"""
import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .config import MODELS, DatasetConfig
from .models import build_model
from .train.metrics import predict


def load_model(path):
    """Rebuild the model saved in a dlexp checkpoint; returns (model, checkpoint dict)."""
    ckpt = checkpoint.load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "dlexp.params/1":
        raise checkpoint.CheckpointError(f"{path}: not a dlexp checkpoint (no 'format': 'dlexp.params/1')")
    model_cfg = MODELS[ckpt["model"]["name"]](**ckpt["model"])
    if model_cfg.name in ("da", "ca", "rbm"):
        raise checkpoint.CheckpointError(f"{path}: a {model_cfg.name} has no classifier; nothing to predict")
    model = build_model(model_cfg, tuple(ckpt["image_shape"]), ckpt["n_classes"])
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ckpt["params"].items()})
    return model.eval(), ckpt


def fetch_checkpoint(source: str, tracking_uri=None, dest=None, artifact="checkpoint/best_params.pkl") -> Path:
    """A local checkpoint path: ``source`` itself, or the run's ``artifact`` downloaded from MLflow."""
    if Path(source).exists():
        return Path(source)
    if not re.fullmatch(r"[0-9a-f]{32}", source):
        raise checkpoint.CheckpointError(f"{source!r} is neither an existing file nor an MLflow run id "
                                         "(32 hex digits)")
    from mlflow.tracking import MlflowClient

    from .tracking import resolve_uri

    client = MlflowClient(tracking_uri=resolve_uri(tracking_uri))
    dest = dest or tempfile.mkdtemp(prefix="dlexp-predict-")
    try:
        return Path(client.download_artifacts(source, artifact, dest))
    except Exception as e:
        raise checkpoint.CheckpointError(f"{source!r} is neither a file nor an MLflow run with {artifact} in "
                                         f"{client.tracking_uri}: {str(e).splitlines()[0]}") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dlexp-predict", description=__doc__.splitlines()[0])
    p.add_argument("source", help="checkpoint file (best_params.pkl) or MLflow run id")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--dataset", help="data set to evaluate on (default: the one it was trained on)")
    p.add_argument("--data-path", help="dataset.path for the data set")
    p.add_argument("--inputs", help=".npy file of images (N, H*W) or (N, H, W) in [0, 1]: predict their labels")
    p.add_argument("--output", help="write the predicted labels here (.npy)")
    p.add_argument("--tracking-uri", help="MLflow store holding the run (default: as dlexp)")
    args = p.parse_args(argv)
    try:
        model, ckpt = load_model(fetch_checkpoint(args.source, args.tracking_uri))
        if args.inputs:
            x = np.load(args.inputs, allow_pickle=False).astype(np.float32)
            x = x.reshape(len(x), -1)
            labels = predict(model, torch.from_numpy(x)).numpy()
            print(" ".join(map(str, labels.tolist())))
        else:
            from .data import load_dataset

            ds_cfg = dict(ckpt["dataset"])
            if args.dataset:
                ds_cfg["name"] = args.dataset
            if args.data_path:
                ds_cfg["path"] = args.data_path
            split = getattr(load_dataset(DatasetConfig(**ds_cfg)), args.split)
            labels = predict(model, torch.from_numpy(split.x)).numpy()
            wrong = int((labels != split.y).sum())
            print(f"{args.split} error {100 * wrong / len(labels):.2f} % ({wrong}/{len(labels)}) "
                  f"on {ds_cfg['name']} with {ckpt['model']['name']}")
        if args.output:
            with checkpoint.atomic_write(args.output, "wb") as f:
                np.save(f, labels)
    except (ValueError, OSError) as e:
        print(f"dlexp-predict: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
