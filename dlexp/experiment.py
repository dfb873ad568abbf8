"""One run, start to end: config -> data + model -> trainer -> tracker.

Everything that can be checked is checked before the MLflow run is created:
the config values (by ``config.validate``), the device, the data files, and
that the model and batch size fit the data. Then the run records params,
reproducibility tags, metrics, the best parameters (a pickle of numpy arrays)
and a filters image, and is marked FINISHED, FAILED or KILLED.
"""
import hashlib
import logging
import platform
import random
import subprocess
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, viz
from .config import ConfigError
from .data import load_dataset
from .data.device import resolve_device, to_device
from .models import build_model, check_model
from .progress import Progress
from .tracking import build_tracker
from .train import fit_cg, fit_sgd

log = logging.getLogger("dlexp")

CHECKPOINT = "best_params.pkl"


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("dlexp", "torch", "numpy", "mlflow", "hydra-core", "omegaconf", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_name(run, overrides) -> str:
    shown = [o for o in overrides if not o.startswith(("model=", "dataset="))]
    return " ".join([run.model.name, run.dataset.name, *shown])


def save_checkpoint(path, run, data, model, result) -> None:
    """Best parameters as plain containers of numpy arrays, written atomically."""
    checkpoint.save(path, {
        "format": "dlexp.params/1",
        "model": asdict(run.model),
        "dataset": asdict(run.dataset),
        "image_shape": list(data.image_shape),
        "n_classes": data.n_classes,
        "params": {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
        "best_valid_error": result.best_valid_error,
        "test_error": result.test_error,
    })


def filters_png(path, model, image_shape) -> None:
    filters = model.filters().detach().float().cpu().numpy()
    side = int(round(filters.shape[1] ** 0.5))
    shape = tuple(image_shape[1:]) if filters.shape[1] == image_shape[1] * image_shape[2] else (side, side)
    img = viz.filters_image(filters, shape)
    viz.save_png(img, path, scale=max(1, 280 // img.shape[1]))


def run_experiment(run, composed_yaml: str, overrides: list, output_dir) -> dict:
    """Train and track one run; returns its final metrics."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if run.trainer.threads:
        torch.set_num_threads(run.trainer.threads)
    device = resolve_device(run.trainer.device)
    dataset = load_dataset(run.dataset)
    try:
        check_model(run.model, dataset.image_shape)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if run.optimizer.batch_size > len(dataset.train.y):
        raise ConfigError(f"optimizer.batch_size={run.optimizer.batch_size} is not allowed: at most the "
                          f"{len(dataset.train.y)} training examples of dataset={run.dataset.name}")
    tracker = build_tracker(run.tracking)
    seed_everything(run.trainer.seed, run.trainer.deterministic)
    data = to_device(dataset, device)
    model = build_model(run.model, data.image_shape, data.n_classes).to(device)
    params = flatten({k: v for k, v in asdict(run).items()})
    tags = {
        "dlexp.overrides": " ".join(overrides) or "(none)",
        "dlexp.git_commit": git_commit(),
        "dlexp.device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dlexp.torch_version": torch.__version__,
        "dlexp.versions": " ".join(f"{k}={v}" for k, v in versions().items()),
        "dlexp.data_checksum": dataset.checksum,
        "dlexp.data_source": dataset.source,
        "dlexp.command": " ".join(sys.argv),
        "dlexp.output_dir": str(out.resolve()),
    }
    (out / "config.yaml").write_text(composed_yaml)
    (out / "overrides.txt").write_text("\n".join(overrides) + "\n")
    run_id = tracker.start(run.tracking.run_name or run_name(run, overrides), params, tags)
    if run_id:
        log.info("MLflow run %s in %s", run_id, tracker.uri)
    progress = Progress(run.trainer.progress, run.trainer.max_epochs)

    def callback(event, metrics, step):
        tracker(event, metrics, step)
        progress(event, metrics, step)

    try:
        tracker.log_artifact(out / "config.yaml")
        tracker.log_artifact(out / "overrides.txt")
        log.info("training %s on %s (%d/%d/%d examples) on %s", run.model.name, run.dataset.name,
                 len(data.train.y), len(data.valid.y), len(data.test.y), device)
        if run.optimizer.name == "cg":
            result = fit_cg(model, data, run.optimizer, run.regularization, run.trainer.max_epochs,
                            run.trainer.eval_batch_size, callback)
        else:
            generator = torch.Generator(device=device).manual_seed(run.trainer.seed) if run.trainer.shuffle else None
            result = fit_sgd(model, data, run.optimizer, run.regularization, run.early_stopping,
                             run.trainer.max_epochs, run.trainer.shuffle, run.trainer.eval_batch_size, callback,
                             generator)
        progress.close()
        final = {"best_valid_error": result.best_valid_error, "final_test_error": result.test_error,
                 "best_iter": result.best_iter, "epochs": result.epochs, "train_seconds": result.train_seconds}
        tracker.log_metrics(final, result.iterations)
        save_checkpoint(out / CHECKPOINT, run, data, model, result)
        tracker.log_artifact(out / CHECKPOINT, "checkpoint")
        if run.tracking.filters_image and run.model.name in ("mlp", "lenet", "logreg"):
            filters_png(out / "filters.png", model, data.image_shape)
            tracker.log_artifact(out / "filters.png", "images")
    except KeyboardInterrupt:
        progress.close()
        tracker.end("KILLED")
        raise
    except BaseException as e:
        progress.close()
        if run_id:
            tracker.set_tags({"dlexp.error": f"{type(e).__name__}: {e}"})
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    log.info("best valid error %.2f %% at iteration %d, test error %.2f %%, %d epochs in %.1f s (%.3f s/epoch)",
             100 * result.best_valid_error, result.best_iter, 100 * result.test_error, result.epochs,
             result.train_seconds, result.train_seconds / max(1, result.epochs))
    if run_id:
        log.info("checkpoint %s; view with: mlflow ui --backend-store-uri %s", out / CHECKPOINT, tracker.uri)
    return {**final, "run_id": run_id, "checkpoint": str(out / CHECKPOINT)}
