"""Everything checked before a run exists: device, tracking server, data, model fit, batch sizes.

A mistake found here ends the command with one line and leaves no MLflow run
behind. On success the run's ingredients are ready: the seed is set, the data
is on the device, the model is built (and its pretrained layers loaded).
"""
import importlib.util
import os
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..config import ConfigError
from ..data import load_dataset
from ..data.device import resolve_device, to_device
from ..models import build_model, check_model
from ..models.base import PretrainConfig
from ..tracking import registry
from ..tracking.artifacts import load_pretrained
from ..tracking.provenance import check_tags
from ..tracking.store import check_reachable
from .params import ignored, model_class


@dataclass
class Prepared:
    """A run's ingredients: where it trains, the data (host and device) and the model."""

    device: torch.device
    dataset: object          # dlexp.data.Dataset: checksum and source for the run's tags
    data: object             # dlexp.data.device.DeviceData
    model: torch.nn.Module   # a dlexp.models.base.Model
    pretrained_path: Optional[str] = None


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def check_batch_sizes(run, n_train: int) -> None:
    sizes = {"optimizer.batch_size": run.optimizer.batch_size}
    if isinstance(run.model, PretrainConfig):
        sizes["model.pretrain_batch_size"] = run.model.pretrain_batch_size
    model_cls = model_class(run.model.name)
    for key, b in sizes.items():
        if b > n_train and ignored(model_cls, key) is None:  # (a dA has no optimizer.batch_size)
            raise ConfigError(f"{key}={b} is not allowed: at most the {n_train} training examples "
                              f"of dataset={run.dataset.name}")


def check_tracking(cfg) -> None:
    """``tracking.register_as``, ``tags`` and ``system_metrics``: usable, or one ConfigError line."""
    for key in ("register_as", "system_metrics"):
        if getattr(cfg, key) and not cfg.enabled:
            raise ConfigError(f"tracking.{key}={getattr(cfg, key)!r} is not allowed with tracking=none")
    if cfg.register_as is not None:
        registry.check_name(cfg.register_as)
    check_tags(cfg.tags)
    if cfg.system_metrics and importlib.util.find_spec("psutil") is None:  # what MLflow's monitor reads with
        raise ConfigError("tracking.system_metrics=true needs psutil: pip install 'dlexp[system-metrics]'")


def preflight(run) -> Prepared:
    """Check what can be checked, then seed, move the data and build the model."""
    check_tracking(run.tracking)
    if run.trainer.threads:
        torch.set_num_threads(run.trainer.threads)
    device = resolve_device(run.trainer.device)
    if run.tracking.enabled:  # a tracking server that does not answer: fail now, not after training
        check_reachable(run.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI", ""))
    dataset = load_dataset(run.dataset)
    check_model(run.model, dataset.image_shape)
    check_batch_sizes(run, len(dataset.train.y))
    seed_everything(run.trainer.seed, run.trainer.deterministic)
    data = to_device(dataset, device, run.dataset.device_chunk)
    model = build_model(run.model, data.image_shape, data.n_classes).to(device)
    source = run.model.pretrained_from if isinstance(run.model, PretrainConfig) else None
    pretrained = load_pretrained(model, source, run.tracking.uri) if source else None
    return Prepared(device, dataset, data, model, pretrained)
