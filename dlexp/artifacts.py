"""What a run leaves behind: the parameters checkpoint, the images, and reading them back.

A checkpoint is a pickle of plain containers and numpy arrays (format
``dlexp.params/1``: the model and dataset configs, image shape, classes, the
``state_dict`` as arrays, and the errors it reached), written atomically and
read only through the restricted unpickler (:mod:`dlexp.checkpoint`). Images
are tiled PNGs (:mod:`dlexp.viz`): the first layer's filters, and what the
model makes (``Model.pictures``: reconstructions, Gibbs samples).
"""
import contextlib
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

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
    """A local checkpoint path: ``source`` itself, or the run's ``artifact`` downloaded from MLflow.

    A download goes to ``dest``, else to a new ``dlexp-predict-*`` temp directory that the caller then
    owns; :func:`fetched_checkpoint` is the variant that removes it again.
    """
    local = _local_file(source)
    if local is not None:
        return local
    uri = _existing_store(source, tracking_uri)
    return _download(source, uri, artifact, dest or tempfile.mkdtemp(prefix="dlexp-predict-"))


@contextlib.contextmanager
def fetched_checkpoint(source: str, tracking_uri=None, artifact=f"checkpoint/{CHECKPOINT}") -> Iterator[Path]:
    """Yield a local checkpoint path, as :func:`fetch_checkpoint`; a download lives in a temp
    directory removed on exit (read the checkpoint inside the ``with``), so nothing is left behind."""
    local = _local_file(source)
    if local is not None:
        yield local
        return
    uri = _existing_store(source, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="dlexp-predict-") as tmp:
        yield _download(source, uri, artifact, tmp)


def _local_file(source: str):
    """``source`` as a path when it names an existing file; None for a run id; CheckpointError otherwise."""
    path = Path(source)
    if path.is_dir():
        raise checkpoint.CheckpointError(f"{source}: is a directory, not a checkpoint file (e.g. "
                                         f"{path / CHECKPOINT})")
    if path.exists():
        return path
    if not is_run_id(source):
        raise checkpoint.CheckpointError(f"{source!r} is neither an existing file nor an MLflow run id "
                                         "(32 hex digits)")
    return None


def _existing_store(run_id: str, tracking_uri=None) -> str:
    """The tracking URI to look ``run_id`` up in (as dlexp resolves it), refused without creating
    anything when no store is there."""
    from .store import check_existing, default_store

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_store()}"
    try:
        check_existing(uri)
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{e}; cannot look up run {run_id}") from None
    return uri


def _download(run_id: str, uri: str, artifact: str, dest) -> Path:
    """The run's ``artifact`` downloaded into ``dest``; one-line CheckpointError for a missing run or file."""
    from .tracking import RetryingClient

    def first_line(e):
        return (str(e).strip().splitlines() or [type(e).__name__])[0]

    try:
        client = RetryingClient(uri)
        client.get_run(run_id)
    except Exception as e:
        if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(e).lower():
            raise checkpoint.CheckpointError(f"no run {run_id} in the MLflow store {uri}") from None
        raise checkpoint.CheckpointError(f"cannot read the MLflow store {uri}: {first_line(e)}") from None
    try:
        with _no_progress_bar():
            return Path(client.download_artifacts(run_id, artifact, str(dest)))
    except Exception as e:
        raise checkpoint.CheckpointError(f"run {run_id} in {uri} has no {artifact}: {first_line(e)}") from None


@contextlib.contextmanager
def _no_progress_bar():
    """MLflow draws a download progress bar on stderr; a command's stderr is for its one error line."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def load_pretrained(model, source: str, tracking_uri=None) -> str:
    """Load a pretrained stack from a checkpoint path or an MLflow run id; returns where it was read
    (the path, or ``runs:/<run id>/checkpoint/pretrained_params.pkl``: the download is removed)."""
    artifact = f"checkpoint/{PRETRAINED}"
    with fetched_checkpoint(source, tracking_uri, artifact=artifact) as path:
        ckpt = checkpoint.load(path)
        where = str(path) if Path(source).exists() else f"runs:/{source}/{artifact}"
    params = ckpt.get("params") if isinstance(ckpt, dict) else None
    if not isinstance(params, dict):
        raise ConfigError(f"model.pretrained_from={source!r}: {where} is not a dlexp checkpoint (no 'params')")
    try:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"model.pretrained_from={source!r} does not fit this model: "
                          f"{str(e).strip().splitlines()[-1].strip()}") from None
    return where


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
