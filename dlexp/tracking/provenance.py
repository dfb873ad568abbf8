"""Where a run comes from: the code's git commit, the library versions, and what an MLflow run id looks like.

One place for what every run and every sweep's parent run records about its provenance
(``dlexp.git_commit``, ``dlexp.versions``, and MLflow's own ``mlflow.user``, ``mlflow.source.*``
tags that the UI shows), and for telling an MLflow run id (32 hex digits) from a path, a sweep id
or a name wherever a command accepts either.

The commit of an installed copy (``pip install .``, not editable) is recorded when it is built:
``setup.py`` writes ``dlexp/_version.py`` into the built package; a source checkout (or an
editable install) has none and asks git.
"""
import functools
import getpass
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

RUN_ID = re.compile(r"[0-9a-f]{32}")
TAG_KEY = re.compile(r"[\w\-. /:]+")  # what MLflow accepts in a tag key
RESERVED_TAG_PREFIXES = ("mlflow.", "dlexp.")  # MLflow's own tags (mlflow.runName, ...) and dlexp's
MAX_KEY = 250  # MLflow's longest param or tag key (mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH)
TAGS_PARAM = "tracking.tags."  # a tag is also one of the run's params, under this prefix

PACKAGES = ("dlexp", "torch", "numpy", "mlflow", "hydra-core", "omegaconf", "scipy")


def is_run_id(text) -> bool:
    """Whether ``text`` is an MLflow run id (32 lowercase hex digits), as opposed to a path or a name."""
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit dlexp was built from (``dlexp/_version.py``), else that of its source checkout
    (``git rev-parse HEAD``), else "unknown"."""
    try:
        from .._version import commit

        if commit:
            return commit
    except ImportError:
        pass
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_tags(tags) -> None:
    """``tracking.tags``: keys MLflow accepts, values that are not containers; else one ConfigError line."""
    from ..checks import ConfigError

    for key, value in (tags or {}).items():
        if not TAG_KEY.fullmatch(str(key)) or str(key).startswith("/") or ".." in str(key).split("/"):
            raise ConfigError(f"tracking.tags: key {str(key)!r} is not allowed: letters, digits, _ - . space : "
                              "and / only")
        if str(key).startswith(RESERVED_TAG_PREFIXES):
            raise ConfigError(f"tracking.tags: key {str(key)!r} is not allowed: keys starting with "
                              f"{' or '.join(RESERVED_TAG_PREFIXES)} are MLflow's and dlexp's own (the run's name "
                              "is tracking.run_name, its description tracking.description)")
        if len(TAGS_PARAM + str(key)) > MAX_KEY:
            raise ConfigError(f"tracking.tags: key {str(key)[:40]!r}... ({len(str(key))} characters) is not "
                              f"allowed: at most {MAX_KEY - len(TAGS_PARAM)} characters (MLflow keeps keys of at "
                              f"most {MAX_KEY}, and the run logs it as the param {TAGS_PARAM}<key>)")
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise ConfigError(f"tracking.tags.{key}={value!r} is not allowed: a string (or a number)")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment nor in the password database
        return "unknown"


def source_tags() -> dict:
    """MLflow's standard provenance tags, as ``mlflow.start_run`` would set them for a local script,
    with dlexp's commit: the UI shows the user, the source (the command) and its git commit."""
    from mlflow.entities import SourceType
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

    tags = {MLFLOW_USER: _user(), MLFLOW_SOURCE_NAME: sys.argv[0] or "dlexp",
            MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL)}
    if git_commit() != "unknown":
        tags[MLFLOW_GIT_COMMIT] = git_commit()
    return tags


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Python's version and the installed versions of the packages a run depends on (read once a
    process: ~3 ms, paid by every job of a sweep otherwise). Do not change the dict returned."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
