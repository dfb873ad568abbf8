"""Structured configs: the schema of every config group, with value checks.

A model's schema lives beside the model (``dlexp/models/<name>.py``, listed in
``dlexp.models.CONFIGS``); the other groups' are here. The YAML files under
``conf/`` select a schema and state deviations from its defaults; the dataclasses give
them types (Hydra rejects ``optimizer.lr=abc`` while composing) and ranges
(``__post_init__`` rejects ``optimizer.lr=-1`` when :func:`validate` turns the
composed config into objects), so a bad value fails with one line naming the
key, the value and what is allowed, before any data is read or any run made.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .checks import ConfigError, check, non_negative, one_of, positive
from .models import CONFIGS, ModelConfig, config_class


# ------------------------------------------------------------------- datasets
@dataclass
class DatasetConfig:
    """Where the data comes from and how much of it to use.

    Lookup order for file datasets: ``path``, ``$DLEXP_DATA``, ``cache_dir``,
    known system paths, then a verified download (if ``download``).
    """

    name: str = "mnist"
    path: Optional[str] = None
    cache_dir: Optional[str] = None
    download: bool = True
    mirrors: List[str] = field(default_factory=list)
    max_train: Optional[int] = None
    max_valid: Optional[int] = None
    max_test: Optional[int] = None
    device_chunk: Optional[int] = None  # examples kept on the device at once (null: the whole split)

    def __post_init__(self) -> None:
        one_of("dataset.name", self.name, ("mnist", "fashion_mnist", "digits"))
        check(self.path is None or self.name != "digits", "dataset.path", self.path,
              "null with dataset=digits (scikit-learn's own copy is read)")
        check(self.device_chunk is None or self.device_chunk >= 1, "dataset.device_chunk", self.device_chunk,
               "null or >= 1")
        for key in ("max_train", "max_valid", "max_test"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"dataset.{key}", value, "null or >= 1")


# ------------------------------------------------------------------ optimizer
@dataclass
class OptimizerConfig:
    """Minibatch SGD (``sgd``) or full-batch conjugate gradient (``cg``).

    Schedules: ``constant``; ``inverse`` lr_t = lr / (1 + decay * epoch);
    ``plateau`` halves lr when validation error has not improved for
    ``plateau_patience`` validations, never below lr * ``min_lr_factor``.
    """

    name: str = "sgd"
    lr: float = 0.13
    batch_size: int = 600
    momentum: float = 0.0
    schedule: str = "constant"
    decay: float = 0.0
    plateau_patience: int = 1
    min_lr_factor: float = 1.0 / 1024

    def __post_init__(self) -> None:
        one_of("optimizer.name", self.name, ("sgd", "cg"))
        positive("optimizer.lr", self.lr)
        check(self.batch_size >= 1, "optimizer.batch_size", self.batch_size, "must be >= 1")
        check(0 <= self.momentum < 1, "optimizer.momentum", self.momentum, "must be in [0, 1)")
        one_of("optimizer.schedule", self.schedule, ("constant", "inverse", "plateau"))
        non_negative("optimizer.decay", self.decay)
        check(self.plateau_patience >= 1, "optimizer.plateau_patience", self.plateau_patience, "must be >= 1")
        check(0 < self.min_lr_factor <= 1, "optimizer.min_lr_factor", self.min_lr_factor, "must be in (0, 1]")


@dataclass
class RegularizationConfig:
    """loss = NLL + l1 * sum|W| + l2 * sum W^2, over weights only (no biases)."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        non_negative("regularization.l1", self.l1)
        non_negative("regularization.l2", self.l2)


@dataclass
class EarlyStoppingConfig:
    """When to stop: the tutorials' ``patience`` rule, ``none``, or ``no_improvement``.

    ``patience`` counts minibatch iterations; an improvement by more than
    ``1 - improvement_threshold`` (relative) extends it to
    ``iter * patience_increase``. Validation runs every ``validation_frequency``
    iterations (null: min(n_train_batches, patience // 2), as the tutorials).
    ``no_improvement`` stops after ``epochs`` epochs with no new best.
    """

    name: str = "patience"
    patience: int = 5000
    patience_increase: float = 2.0
    improvement_threshold: float = 0.995
    validation_frequency: Optional[int] = None
    epochs: int = 10

    def __post_init__(self) -> None:
        one_of("early_stopping.name", self.name, ("patience", "none", "no_improvement"))
        check(self.patience >= 1, "early_stopping.patience", self.patience, "must be >= 1")
        check(self.patience_increase >= 1, "early_stopping.patience_increase", self.patience_increase, "must be >= 1")
        check(0 < self.improvement_threshold <= 1, "early_stopping.improvement_threshold",
               self.improvement_threshold, "must be in (0, 1]")
        check(self.validation_frequency is None or self.validation_frequency >= 1,
               "early_stopping.validation_frequency", self.validation_frequency, "null or >= 1")
        check(self.epochs >= 1, "early_stopping.epochs", self.epochs, "must be >= 1")


@dataclass
class TrainerConfig:
    """How to run: device, epochs, seed, evaluation batch, progress display, speed options.

    ``compile`` wraps the training step in ``torch.compile``; ``precision=bf16``
    runs forward passes under bf16 autocast (on a GPU). ``checkpoint_every``
    iterations the whole training state is saved to the run's artifacts
    (``state/train_state.pkl``); ``resume`` continues a stopped run from it.
    """

    device: str = "auto"
    max_epochs: int = 1000
    seed: int = 1234
    shuffle: bool = False
    eval_batch_size: int = 10000
    progress: str = "auto"
    deterministic: bool = False
    threads: Optional[int] = None
    compile: bool = False
    precision: str = "fp32"
    checkpoint_every: int = 5000    # iterations between training-state checkpoints (0: none)
    resume: Optional[str] = None    # a run id, a train_state.pkl path, or auto
    skip_finished: bool = False     # a run whose exact config already FINISHED in the store is not trained again

    def __post_init__(self) -> None:
        import re

        check(bool(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device)), "trainer.device", self.device,
               "auto, cpu, cuda, cuda:N or mps")
        check(self.max_epochs >= 1, "trainer.max_epochs", self.max_epochs, "must be >= 1")
        check(self.eval_batch_size >= 1, "trainer.eval_batch_size", self.eval_batch_size, "must be >= 1")
        one_of("trainer.progress", self.progress, ("auto", "bar", "log", "none"))
        check(self.threads is None or self.threads >= 1, "trainer.threads", self.threads, "null or >= 1")
        one_of("trainer.precision", self.precision, ("fp32", "bf16"))
        check(self.checkpoint_every >= 0, "trainer.checkpoint_every", self.checkpoint_every,
               "iterations between checkpoints, >= 0 (0: none)")
        check(self.resume is None or self.resume == "auto" or bool(re.fullmatch(r"[0-9a-f]{32}", self.resume))
               or self.resume.endswith(".pkl"), "trainer.resume", self.resume,
               "an MLflow run id (32 hex digits), a path to a train_state.pkl, or auto")


MAX_EXPERIMENT_NAME = 500  # MLflow's limit (mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH)


@dataclass
class TrackingConfig:
    """MLflow: ``uri`` null means $MLFLOW_TRACKING_URI, else sqlite under outputs/.

    ``log_model``: log the run's MLflow model beside its checkpoint (false: the
    checkpoint only, ~0.1 s less a sweep job; dlexp-predict still reads it);
    ``register_as``: register the run's model (a sweep's best child) under this name;
    ``tags`` and ``description`` are set on the run; ``system_metrics`` turns on
    MLflow's CPU / memory / GPU monitor.
    """

    enabled: bool = True
    uri: Optional[str] = None
    experiment: str = "dlexp"
    run_name: Optional[str] = None
    step: str = "epoch"             # what a curve's step counts: epoch, examples or iteration (dlexp.run.curves)
    filters_image: bool = True
    log_model: bool = True
    register_as: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    description: Optional[str] = None
    system_metrics: bool = False

    def __post_init__(self) -> None:
        check(bool(self.experiment.strip()), "tracking.experiment", self.experiment, "a non-empty name")
        check(len(self.experiment) <= MAX_EXPERIMENT_NAME, "tracking.experiment",
              self.experiment[:40] + f"... ({len(self.experiment)} characters)",
              f"a name of at most {MAX_EXPERIMENT_NAME} characters (MLflow's limit)")
        one_of("tracking.step", self.step, ("epoch", "examples", "iteration"))
        check(self.log_model or not self.register_as, "tracking.register_as", self.register_as,
              "registers the run's MLflow model: needs tracking.log_model=true")


@dataclass
class RunConfig:
    """A whole run, as :func:`validate` returns it."""

    model: ModelConfig
    dataset: DatasetConfig
    optimizer: OptimizerConfig
    regularization: RegularizationConfig
    early_stopping: EarlyStoppingConfig
    trainer: TrainerConfig
    tracking: TrackingConfig


GROUPS = {
    "dataset": DatasetConfig,
    "optimizer": OptimizerConfig,
    "regularization": RegularizationConfig,
    "early_stopping": EarlyStoppingConfig,
    "trainer": TrainerConfig,
    "tracking": TrackingConfig,
}


def register_configs() -> None:
    """Store each schema as ``<group>/_schema_<name>`` for the YAML defaults lists."""
    cs = ConfigStore.instance()
    for name, node in CONFIGS.items():
        cs.store(group="model", name=f"_schema_{name}", node=node)
    for group, node in GROUPS.items():
        schema = OmegaConf.structured(node)
        if group == "tracking":  # tracking.tags={team: vision} adds keys to a dict of the user's own
            OmegaConf.set_struct(schema.tags, False)
        cs.store(group=group, name="_schema", node=schema)


@functools.lru_cache(maxsize=None)
def _defaults(schema):
    """The schema's defaults as a config, made once (~0.7 ms a group, twice a sweep's job); merge copies it."""
    return OmegaConf.structured(schema)


def validate(cfg: DictConfig) -> RunConfig:
    """Turn a composed config into dataclasses, raising ConfigError on a bad value."""
    missing = [g for g in ("model", *GROUPS) if g not in cfg]
    if missing:
        raise ConfigError(f"config groups missing: {', '.join(missing)}")
    extra = [k for k in cfg if k not in ("model", "hydra", *GROUPS)]  # (a config composed with its hydra node)
    if extra:
        raise ConfigError(f"{extra[0]} is not a config key: the groups are model, {', '.join(GROUPS)}")
    model_schema = config_class(cfg.model.get("name"))

    def build(schema, node, key):
        known = {f.name for f in fields(schema)}
        unknown = [k for k in node if k not in known]
        if unknown:  # e.g. +optimizer.foo=1: Hydra adds it, nothing would read it
            raise ConfigError(f"{key}.{unknown[0]} is not a key of {key}"
                              f"{'=' + str(node.get('name')) if key == 'model' else ''}: "
                              f"one of {', '.join(sorted(known))}")
        merged = OmegaConf.merge(_defaults(schema), node)
        try:
            return OmegaConf.to_object(merged)
        except ConfigError:
            raise
        except Exception as e:  # OmegaConf type errors: keep one line
            raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None

    run = RunConfig(
        model=build(model_schema, cfg.model, "model"),
        **{g: build(schema, cfg[g], g) for g, schema in GROUPS.items()},
    )
    if not run.tracking.enabled:  # both look runs up in the store: with no store they would do nothing
        by_store = not str(run.trainer.resume or ".pkl").endswith(".pkl")  # auto or a run id
        for key, value in (("skip_finished", run.trainer.skip_finished), ("resume", by_store)):
            check(not value, f"trainer.{key}", getattr(run.trainer, key), "needs a store to look runs up in: "
                  "not with tracking=none (trainer.resume=<path to train_state.pkl> works without one)")
    if run.optimizer.name == "cg" and run.optimizer.momentum:
        raise ConfigError(f"optimizer.momentum={run.optimizer.momentum!r} is not allowed with optimizer=cg: must be 0")
    return run
