"""What a run leaves behind: the parameters checkpoint and the images.

A checkpoint is a pickle of plain containers and numpy arrays (format ``dlexp.params/1``, read back by
:mod:`dlexp.tracking.artifacts`): the model and dataset configs, image shape, classes, the ``state_dict``
as arrays, and the errors it reached, written atomically. Images are tiled PNGs (:mod:`dlexp.viz`): the
first layer's filters, and what the model makes (``Model.pictures``: reconstructions, Gibbs samples);
snapshots during training are MLflow images with a step (the UI's step slider).
"""
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import safe_pickle, viz
from ..tracking.artifacts import CHECKPOINT, FORMAT, PRETRAINED

__all__ = ["CHECKPOINT", "PRETRAINED", "save_checkpoint", "save_images", "log_snapshots"]


def save_checkpoint(path, run, data, model, metrics: dict) -> None:
    """Parameters as plain containers of numpy arrays, written atomically."""
    safe_pickle.save(path, {
        "format": FORMAT,
        "model": asdict(run.model),
        "dataset": asdict(run.dataset),
        "image_shape": list(data.image_shape),
        "n_classes": data.n_classes,
        "params": {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
        **metrics,
    })


def _images(data, model) -> dict:
    """name -> uint8 image: ``filters`` (first-layer filters, tiled) and the model's pictures."""
    filters = model.filters().detach().float().cpu().numpy()
    n_pixels = data.image_shape[1] * data.image_shape[2]
    shape = tuple(data.image_shape[1:]) if filters.shape[1] == n_pixels else (int(filters.shape[1] ** 0.5),) * 2
    images = {"filters": viz.filters_image(filters, shape)}
    with torch.no_grad():
        pictures = model.pictures(data.test.x)
    for name, (rows, grid) in pictures.items():
        images[name] = viz.tile_raster_images(np.asarray(rows), data.image_shape[1:], grid,
                                              scale_rows_to_unit_interval=False)
    return images


def _scale(img) -> int:
    return max(1, 560 // max(img.shape))


def save_images(out: Path, data, model, tracker, prefix: str = "", images=None) -> dict:
    """``<prefix>filters.png`` (first-layer filters) and the model's pictures, logged under ``images/``;
    returns them (name -> uint8 image)."""
    images = _images(data, model) if images is None else images
    for name, img in images.items():
        viz.save_png(img, out / f"{prefix}{name}.png", scale=_scale(img))
        tracker.log_artifact(out / f"{prefix}{name}.png", "images")
    return images


def log_snapshots(out: Path, data, model, tracker, step: int) -> None:
    """The images of ``model`` at training step ``step`` (an epoch): ``epoch_<step>_<name>.png`` under the
    run's ``images/`` (and in the run directory), and MLflow images with that step, which the run's page
    shows on a step slider (one key a picture: ``filters``, ``reconstructions``, ...)."""
    images = save_images(out, data, model, tracker, prefix=f"epoch_{step:03d}_")
    if not tracker.run_id:
        return
    from PIL import Image

    for name, img in images.items():
        big = Image.fromarray(img)
        big = big.resize((big.width * _scale(img), big.height * _scale(img)), Image.NEAREST)
        tracker.client.log_image(tracker.run_id, big, key=name, step=step, synchronous=True)
