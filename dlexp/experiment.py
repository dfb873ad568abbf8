"""One run, start to end: config -> data + model -> trainer -> tracker.

Everything that can be checked is checked before the MLflow run is created:
the config values (by ``config.validate``), the device, the data files, and
that the model and batch size fit the data. Then the run records params,
reproducibility tags, metrics, the best parameters (a pickle of numpy arrays)
and a filters image, and is marked FINISHED, FAILED or KILLED.
"""
import contextlib
import logging
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, resume, sweep, viz
from .config import ConfigError
from .data import load_dataset
from .data.device import resolve_device, to_device
from .models import build_model, check_model
from .progress import Progress
from .tracking import build_tracker, check_reachable
from .train import fit_cg, fit_sgd
from .train.pretrain import pretrain_stack
from .train.result import Diverged
from .train.state import StopRequest

log = logging.getLogger("dlexp")

CHECKPOINT = "best_params.pkl"
PRETRAINED = "pretrained_params.pkl"


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest):
    """Ctrl-C and SIGTERM (a scheduler's or ``kill``'s stop) go to ``stop``: a training loop saves its
    state and stops; the run is marked KILLED, never left RUNNING."""
    try:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    hidden = ("model=", "dataset=", "tracking.", "trainer.progress", "hydra.", "hydra/")
    shown = [o for o in overrides if not o.lstrip("+~").startswith(hidden)]
    return " ".join([run.model.name, run.dataset.name, *shown])


def save_checkpoint(path, run, data, model, metrics: dict) -> None:
    """Parameters as plain containers of numpy arrays, written atomically."""
    checkpoint.save(path, {
        "format": "dlexp.params/1",
        "model": asdict(run.model),
        "dataset": asdict(run.dataset),
        "image_shape": list(data.image_shape),
        "n_classes": data.n_classes,
        "params": {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
        **metrics,
    })


def load_pretrained(model, source: str, tracking_uri=None) -> str:
    """Load a pretrained stack from a checkpoint path or an MLflow run id; returns the file read."""
    from .predict import fetch_checkpoint

    path = fetch_checkpoint(source, tracking_uri, artifact=f"checkpoint/{PRETRAINED}")
    params = checkpoint.load(path).get("params", {})
    try:
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in params.items()})
    except RuntimeError as e:
        raise ConfigError(f"model.pretrained_from={source!r} does not fit this model: "
                          f"{str(e).splitlines()[-1].strip()}") from None
    return str(path)


def save_images(out: Path, data, model, run, tracker, prefix: str = "") -> None:
    """Filters of the first layer, and what the model makes: reconstructions (dA, cA), samples (RBM)."""
    def log_png(name, img):
        viz.save_png(img, out / name, scale=max(1, 560 // max(img.shape)))
        tracker.log_artifact(out / name, "images")

    filters = model.filters().detach().float().cpu().numpy()
    n_pixels = data.image_shape[1] * data.image_shape[2]
    shape = tuple(data.image_shape[1:]) if filters.shape[1] == n_pixels else (int(filters.shape[1] ** 0.5),) * 2
    log_png(f"{prefix}filters.png", viz.filters_image(filters, shape))
    x = data.test.x
    with torch.no_grad():
        if hasattr(model, "decode") and hasattr(model, "encode"):
            inputs = x[:10]
            noisy = model.corrupt(inputs) if hasattr(model, "corrupt") else inputs
            rows = torch.cat([inputs, noisy, model.decode(model.encode(noisy))]).cpu().numpy()
            log_png(f"{prefix}reconstructions.png",
                    viz.tile_raster_images(rows, data.image_shape[1:], (3, 10), scale_rows_to_unit_interval=False))
        if hasattr(model, "sample"):
            cfg = run.model
            start = int(torch.randint(0, max(1, len(x) - cfg.n_chains), ()).item())
            samples = model.sample(x[start:start + cfg.n_chains], cfg.n_samples, cfg.plot_every)
            rows = samples.reshape(-1, samples.shape[-1]).cpu().numpy()
            log_png(f"{prefix}samples.png", viz.tile_raster_images(
                rows, data.image_shape[1:], (cfg.n_samples, cfg.n_chains), scale_rows_to_unit_interval=False))


def pretrain(run, model, data, out, tracker, callback, **loop) -> dict:
    """Greedy layer-wise pretraining, with filter images at ``image_every`` epochs."""
    cfg = run.model
    first = model.pretrain_layers()[0]

    def on_epoch(layer, epoch):
        if cfg.image_every and layer == 0 and epoch % cfg.image_every == 0:
            save_images(out, data, first, run, tracker, prefix=f"epoch_{epoch:03d}_")

    start = time.perf_counter()
    histories = pretrain_stack(model, data.train, cfg.pretrain_lr, cfg.pretrain_batch_size,
                               cfg.pretrain_epochs, callback, on_epoch, compile=run.trainer.compile,
                               precision=run.trainer.precision, **loop)
    final = {"pretrain_seconds": time.perf_counter() - start}
    for i, history in enumerate(histories):
        if history:
            final[f"pretrain/layer_{i}/final_cost" if len(histories) > 1 else "final_cost"] = history[-1]["cost"]
    return final


def finetune(run, model, data, callback, **loop) -> dict:
    if run.optimizer.name == "cg":
        result = fit_cg(model, data, run.optimizer, run.regularization, run.trainer.max_epochs,
                        run.trainer.eval_batch_size, callback)
    else:
        generator = (torch.Generator(device=data.train.x.device).manual_seed(run.trainer.seed)
                     if run.trainer.shuffle else None)
        result = fit_sgd(model, data, run.optimizer, run.regularization, run.early_stopping,
                         run.trainer.max_epochs, run.trainer.shuffle, run.trainer.eval_batch_size, callback,
                         generator, compile=run.trainer.compile, precision=run.trainer.precision, **loop)
    log.info("best valid error %.2f %% at iteration %d, test error %.2f %%, %d epochs in %.1f s (%.3f s/epoch)",
             100 * result.best_valid_error, result.best_iter, 100 * result.test_error, result.epochs,
             result.train_seconds, result.train_seconds / max(1, result.epochs))
    return {"best_valid_error": result.best_valid_error, "final_test_error": result.test_error,
            "best_iter": result.best_iter, "epochs": result.epochs, "train_seconds": result.train_seconds,
            "iterations": result.iterations}


def run_experiment(run, composed_yaml: str, overrides: list, output_dir) -> dict:
    """Train and track one run; returns its final metrics."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if run.trainer.threads:
        torch.set_num_threads(run.trainer.threads)
    device = resolve_device(run.trainer.device)
    if run.tracking.enabled:  # a tracking server that does not answer: fail now, not after training
        check_reachable(run.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI", ""))
    dataset = load_dataset(run.dataset)
    try:
        check_model(run.model, dataset.image_shape)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    batch_sizes = {"optimizer.batch_size": run.optimizer.batch_size}
    if hasattr(run.model, "pretrain_batch_size"):
        batch_sizes["model.pretrain_batch_size"] = run.model.pretrain_batch_size
    for key, b in batch_sizes.items():
        if b > len(dataset.train.y):
            raise ConfigError(f"{key}={b} is not allowed: at most the {len(dataset.train.y)} training examples "
                              f"of dataset={run.dataset.name}")
    seed_everything(run.trainer.seed, run.trainer.deterministic)
    data = to_device(dataset, device, run.dataset.device_chunk)
    model = build_model(run.model, data.image_shape, data.n_classes).to(device)
    pretrained_from = getattr(run.model, "pretrained_from", None)
    if pretrained_from:
        pretrained_path = load_pretrained(model, pretrained_from, run.tracking.uri)
    tracker = build_tracker(run.tracking)
    params = flatten(asdict(run))
    resume_id, state = resume.find(run.trainer.resume, tracker, params, out)
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
        "dlexp.config_key": resume.config_key(params),
    }
    if run.trainer.resume:
        where = state and (state.get("position") or state["loop"]["position"])
        tags["dlexp.resumed_from"] = (f"{state['phase']} iteration {where['it'] + 1}, epoch {where['epoch']}"
                                      + (f", layer {state['layer']}" if "layer" in state else "")
                                      if state else "the start")
    if pretrained_from:
        tags["dlexp.pretrained_from"] = pretrained_path
    parent = sweep.parent_run_id()
    if parent:
        tags["mlflow.parentRunId"] = parent
    (out / "config.yaml").write_text(composed_yaml)
    (out / "overrides.txt").write_text("\n".join(overrides) + "\n")
    run_id = tracker.start(run.tracking.run_name or run_name(run, overrides), params, tags, run_id=resume_id)
    if run_id:
        log.info("MLflow run %s in %s", run_id, tracker.uri)
    local_artifacts = tracker.local_artifact_dir(run_id) if run_id else None
    state_file = resume.state_path(local_artifacts, out)
    upload = run_id is not None and local_artifacts is None  # a remote artifact store gets a copy

    def on_checkpoint(training_state):
        tracker.flush()  # the metrics up to this state are in the store before the state is
        resume.save(state_file, training_state, run_id, params)
        if upload:
            tracker.log_artifact(state_file, "state")

    stop = StopRequest()
    phase = state["phase"] if state else None
    loop = {"checkpoint_every": run.trainer.checkpoint_every, "on_checkpoint": on_checkpoint, "stop": stop}
    progress = Progress(run.trainer.progress, run.trainer.max_epochs)

    def callback(event, metrics, step):
        tracker(event, metrics, step)
        progress(event, metrics, step)

    with stop_on_signals(stop):
        try:
            tracker.log_artifact(out / "config.yaml")
            tracker.log_artifact(out / "overrides.txt")
            log.info("training %s on %s (%d/%d/%d examples) on %s", run.model.name, run.dataset.name,
                     len(data.train.y), len(data.valid.y), len(data.test.y), device)
            final = {}
            if hasattr(model, "pretrain_layers") and phase != "finetune":
                if not pretrained_from:
                    final.update(pretrain(run, model, data, out, tracker, callback, **loop,
                                          state=state if phase == "pretrain" else None))
                save_checkpoint(out / PRETRAINED, run, data, model, {})
                tracker.log_artifact(out / PRETRAINED, "checkpoint")
                if run.tracking.filters_image:
                    save_images(out, data, model, run, tracker, prefix="pretrained_" if model.supervised else "")
            if getattr(model, "supervised", True):
                final.update(finetune(run, model, data, callback, **loop,
                                      state=state if phase == "finetune" else None))
                save_checkpoint(out / CHECKPOINT, run, data, model,
                                {"best_valid_error": final["best_valid_error"], "test_error": final["final_test_error"]})
                tracker.log_artifact(out / CHECKPOINT, "checkpoint")
                if run.tracking.filters_image:
                    save_images(out, data, model, run, tracker)
            progress.close()
            tracker.log_metrics(final, final.get("iterations", 0))
        except KeyboardInterrupt:
            progress.close()
            tracker.end("KILLED")
            if run_id and state_file.exists():
                log.warning("run %s KILLED; continue it with: dlexp %s trainer.resume=%s", run_id,
                            " ".join(o for o in overrides if not o.startswith("trainer.resume=")), run_id)
            raise
        except Diverged as e:
            progress.close()
            message = f"{e} (model={run.model.name})"
            if math.isfinite(e.best_valid_error):  # the best model before the divergence is kept
                save_checkpoint(out / CHECKPOINT, run, data, model,
                                {"best_valid_error": e.best_valid_error, "test_error": e.test_error})
                tracker.log_artifact(out / CHECKPOINT, "checkpoint")
            if run_id:
                tracker.set_tags({"dlexp.error": f"Diverged: {message}"})
            tracker.end("FAILED")
            raise Diverged(message) from None
        except BaseException as e:
            progress.close()
            if run_id:
                tracker.set_tags({"dlexp.error": f"{type(e).__name__}: {e}"})
            tracker.end("FAILED")
            raise
        tracker.end("FINISHED")
        state_file.unlink(missing_ok=True)  # finished: nothing to resume
    if run_id:
        log.info("outputs in %s; view with: mlflow ui --backend-store-uri %s", out, tracker.uri)
    return {**final, "run_id": run_id, "output_dir": str(out)}
