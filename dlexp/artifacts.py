"""What a run leaves behind: the parameters checkpoint, the images, and reading them back.

A checkpoint is a pickle of plain containers and numpy arrays (format
``dlexp.params/1``: the model and dataset configs, image shape, classes, the
``state_dict`` as arrays, and the errors it reached), written atomically and
read only through the restricted unpickler (:mod:`dlexp.checkpoint`). Images
are tiled PNGs (:mod:`dlexp.viz`): the first layer's filters, and what the
model makes (``Model.pictures``: reconstructions, Gibbs samples).
"""
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, viz
from .config import ConfigError
from .provenance import is_run_id

CHECKPOINT = "best_params.pkl"
PRETRAINED = "pretrained_params.pkl"
FORMAT = "dlexp.params/1"


def save_checkpoint(path, run, data, model, metrics: dict) -> None:
    """Parameters as plain containers of numpy arrays, written atomically."""
    checkpoint.save(path, {
        "format": FORMAT,
        "model": asdict(run.model),
        "dataset": asdict(run.dataset),
        "image_shape": list(data.image_shape),
        "n_classes": data.n_classes,
        "params": {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
        **metrics,
    })


def fetch_checkpoint(source: str, tracking_uri=None, dest=None, artifact=f"checkpoint/{CHECKPOINT}") -> Path:
    """A local checkpoint path: ``source`` itself, or the run's ``artifact`` downloaded from MLflow."""
    if Path(source).exists():
        return Path(source)
    if not is_run_id(source):
        raise checkpoint.CheckpointError(f"{source!r} is neither an existing file nor an MLflow run id "
                                         "(32 hex digits)")
    from .tracking import RetryingClient, resolve_uri

    client = RetryingClient(resolve_uri(tracking_uri))
    dest = dest or tempfile.mkdtemp(prefix="dlexp-predict-")
    try:
        return Path(client.download_artifacts(source, artifact, dest))
    except Exception as e:
        raise checkpoint.CheckpointError(f"{source!r} is neither a file nor an MLflow run with {artifact} in "
                                         f"{client.tracking_uri}: {str(e).splitlines()[0]}") from None


def load_pretrained(model, source: str, tracking_uri=None) -> str:
    """Load a pretrained stack from a checkpoint path or an MLflow run id; returns the file read."""
    path = fetch_checkpoint(source, tracking_uri, artifact=f"checkpoint/{PRETRAINED}")
    params = checkpoint.load(path).get("params", {})
    try:
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in params.items()})
    except RuntimeError as e:
        raise ConfigError(f"model.pretrained_from={source!r} does not fit this model: "
                          f"{str(e).splitlines()[-1].strip()}") from None
    return str(path)


def save_images(out: Path, data, model, tracker, prefix: str = "") -> None:
    """``<prefix>filters.png`` (first-layer filters) and the model's pictures, logged under ``images/``."""
    def log_png(name, img):
        viz.save_png(img, out / name, scale=max(1, 560 // max(img.shape)))
        tracker.log_artifact(out / name, "images")

    filters = model.filters().detach().float().cpu().numpy()
    n_pixels = data.image_shape[1] * data.image_shape[2]
    shape = tuple(data.image_shape[1:]) if filters.shape[1] == n_pixels else (int(filters.shape[1] ** 0.5),) * 2
    log_png(f"{prefix}filters.png", viz.filters_image(filters, shape))
    with torch.no_grad():
        pictures = model.pictures(data.test.x)
    for name, (rows, grid) in pictures.items():
        log_png(f"{prefix}{name}.png", viz.tile_raster_images(np.asarray(rows), data.image_shape[1:], grid,
                                                              scale_rows_to_unit_interval=False))
