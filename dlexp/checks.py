"""Value checks for configs: a bad value fails with one line naming the key, the value and what is allowed."""
import math
from typing import Any


class ConfigError(ValueError):
    """A config value outside what dlexp allows; the message is one line."""


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def positive(key: str, value: float) -> None:
    """A finite number > 0 (a learning rate: inf and nan are refused)."""
    check(value > 0, key, value, "must be > 0")
    check(math.isfinite(value), key, value, "must be a finite number > 0")


def non_negative(key: str, value: float) -> None:
    check(value >= 0, key, value, "must be >= 0")


def one_of(key: str, value: str, choices: tuple) -> None:
    check(value in choices, key, value, "one of " + ", ".join(choices))
