"""``dlexp-predict``: evaluate a saved model, from a checkpoint file or an MLflow run id.

    dlexp-predict outputs/runs/.../best_params.pkl            # test error on its data set
    dlexp-predict <run id> --split valid                       # from the MLflow store
    dlexp-predict <run id> --inputs images.npy --output labels.npy

Checkpoints are read with the restricted unpickler (numpy arrays and plain
containers only), never with plain ``pickle.load``.
"""
import argparse
import sys

import numpy as np
import torch

from . import checkpoint
from .artifacts import FORMAT, fetch_checkpoint
from .config import DatasetConfig
from .models import build_model, config_class
from .train.metrics import predict


def load_model(path):
    """Rebuild the model saved in a dlexp checkpoint; returns (model, checkpoint dict)."""
    ckpt = checkpoint.load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise checkpoint.CheckpointError(f"{path}: not a dlexp checkpoint (no 'format': '{FORMAT}')")
    model_cfg = config_class(ckpt["model"]["name"])(**ckpt["model"])
    model = build_model(model_cfg, tuple(ckpt["image_shape"]), ckpt["n_classes"])
    if not model.supervised:
        raise checkpoint.CheckpointError(f"{path}: a {model_cfg.name} has no classifier; nothing to predict")
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ckpt["params"].items()})
    return model.eval(), ckpt


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
