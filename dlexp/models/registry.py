"""The model registry: name -> Model class, filled by ``@register`` as the model files are imported."""
from typing import Dict, Type

from .base import Model

REGISTRY: Dict[str, Type[Model]] = {}
CONFIGS: Dict[str, type] = {}  # name -> config dataclass


def register(cls: Type[Model]) -> Type[Model]:
    """Class decorator: make ``cls`` the model named ``cls.Config.name`` (its dataclass default)."""
    name = cls.Config.name
    if REGISTRY.get(name, cls) is not cls:
        raise ValueError(f"model name {name!r} is taken by {REGISTRY[name].__qualname__}")
    REGISTRY[name], CONFIGS[name] = cls, cls.Config
    return cls
