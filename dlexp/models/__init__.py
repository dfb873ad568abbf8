"""Model zoo: every module of this package is imported, and each model in it registers itself.

Adding a model is its file ``dlexp/models/<name>.py`` (a config dataclass and
a ``@register``-ed :class:`~dlexp.models.base.Model`) plus
``conf/model/<name>.yaml``. The interface a run uses is in ``base.py``.
"""
import importlib
import pkgutil

from ..checks import ConfigError
from .base import Model, ModelConfig, PretrainConfig, StackConfig
from .registry import CONFIGS, REGISTRY, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def config_class(name) -> type:
    """The config dataclass of model ``name``; ConfigError if there is no such model."""
    if name not in CONFIGS:
        raise ConfigError(f"model.name={name!r} is not allowed: one of {', '.join(sorted(CONFIGS))}")
    return CONFIGS[name]


def build_model(cfg, image_shape, n_classes: int) -> Model:
    """The model of config ``cfg`` for inputs of ``image_shape`` (C, H, W) and ``n_classes`` labels."""
    config_class(cfg.name)
    return REGISTRY[cfg.name].build(cfg, tuple(image_shape), n_classes)


def check_model(cfg, image_shape) -> None:
    """Raise ConfigError before any work if the model cannot take this input shape."""
    config_class(cfg.name)
    REGISTRY[cfg.name].check(cfg, tuple(image_shape))


__all__ = ["CONFIGS", "REGISTRY", "Model", "ModelConfig", "PretrainConfig", "StackConfig", "build_model",
           "check_model", "config_class", "register"]
