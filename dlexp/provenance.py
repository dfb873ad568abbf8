"""Where a run comes from: the code's git commit, the library versions, and what an MLflow run id looks like.

One place for what every run and every sweep's parent run records about its provenance
(``dlexp.git_commit``, ``dlexp.versions``), and for telling an MLflow run id (32 hex digits) from a
path, a sweep id or a name wherever a command accepts either.
"""
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

RUN_ID = re.compile(r"[0-9a-f]{32}")

PACKAGES = ("dlexp", "torch", "numpy", "mlflow", "hydra-core", "omegaconf", "scipy")


def is_run_id(text) -> bool:
    """Whether ``text`` is an MLflow run id (32 lowercase hex digits), as opposed to a path or a name."""
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None


def git_commit() -> str:
    """The commit of the dlexp source tree (``git rev-parse HEAD``), or "unknown" outside a checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    """Python's version and the installed versions of the packages a run depends on."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
