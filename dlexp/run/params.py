"""What a run logs as MLflow params, and which overrides its model would ignore.

A run's params are the config keys that say what it computes: not ``None`` values, not ``tracking.*``,
not where data lives or how the run is shown and resumed (:data:`NOT_LOGGED`), and not the keys its
model never reads (:attr:`dlexp.models.base.Model.ignores`: a dA has no ``optimizer.lr``). Such an
override is refused before any run or sweep starts (:func:`check_overrides`), naming the key that does
that job for the model.
"""
from dataclasses import asdict

NOT_LOGGED = ("tracking.", "dataset.path", "dataset.cache_dir", "dataset.mirrors", "dataset.download",
              "trainer.progress", "trainer.resume", "trainer.skip_finished", "trainer.checkpoint_every")


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def model_class(name: str):
    from ..models import REGISTRY

    return REGISTRY.get(name)


def ignored(model_cls, key: str):
    """The entry of ``model_cls.ignores`` that covers ``key`` (itself or its group), or None."""
    ignores = getattr(model_cls, "ignores", {})
    for candidate in (key, key.split(".", 1)[0]):
        if candidate in ignores:
            return candidate
    return None


def logged_params(run, model_cls=None) -> dict:
    """The params of ``run`` (a RunConfig) worth logging: see the module doc."""
    model_cls = model_cls or model_class(run.model.name)
    return {k: v for k, v in flatten(asdict(run)).items()
            if v is not None and not k.startswith(NOT_LOGGED) and ignored(model_cls, k) is None}


def check_overrides(model_name: str, overrides) -> None:
    """Raise ConfigError for the first override of a key that model ``model_name`` never reads:
    ``optimizer.lr is ignored by model=da (it trains only by pretraining): use model.pretrain_lr``."""
    from ..config import ConfigError

    model_cls = model_class(model_name)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        match = ignored(model_cls, key) if "." in key or key in getattr(model_cls, "ignores", {}) else None
        if match is None:
            continue
        why = " (it trains only by pretraining)" if not getattr(model_cls, "supervised", True) else ""
        instead = model_cls.ignores[match]
        hint = f"use {instead}" if instead else "its training is set by " + ", ".join(
            dict.fromkeys(v for v in model_cls.ignores.values() if v))
        raise ConfigError(f"{key} is ignored by model={model_name}{why}: {hint}")
