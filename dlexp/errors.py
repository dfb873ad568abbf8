"""Which exit status an error ends the command with: 2 for a mistake, 1 for a run that failed.

A mistake (a bad config value, a missing or malformed file, an unusable device
or tracking store, a registered model, version or run that is not there) is
found before a run exists; a failure happens during one (divergence, a full
disk, a store that stopped answering) and leaves the run FAILED. Anything else is a fault of dlexp itself, also ended with one line
(status 1) unless ``HYDRA_FULL_ERROR=1`` asks for the trace.
"""
from .config import ConfigError
from .data.device import DeviceError
from .data.formats import DataError
from .safe_pickle import CheckpointError
from .tracking.registry import RegistryError
from .tracking.store import TrackingError
from .train.result import Diverged

MISTAKES = (ConfigError, DataError, DeviceError, CheckpointError, TrackingError, RegistryError)
FAILURES = (Diverged, OSError)


def exit_code(e: BaseException) -> int:
    """2 for a mistake, 1 for anything else."""
    return 2 if isinstance(e, MISTAKES) else 1


def message(e: BaseException) -> str:
    """The one line to print: dlexp's own errors as they are, others with their type."""
    return str(e) if isinstance(e, MISTAKES + FAILURES) else f"{type(e).__name__}: {e}"
