"""A run directory of its own for every run, whatever the clock says.

Hydra names a run's directory after the second it started
(``outputs/runs/<date>/<HH-MM-SS>``), so runs started in the same second
shared one: one run's ``best_params.pkl``, ``config.yaml`` and images
overwritten by the other's, their log file interleaved. ``conf/config.yaml``
therefore names ``hydra.run.dir`` (and a multirun's ``hydra.sweep.dir``)
``${dlexp.unique:<the timestamped path>}``: the path with a short random
suffix, ``<HH-MM-SS>-<6 hex>``, the directory created at once with an
exclusive ``os.mkdir`` (another suffix if that name is taken), so no two
processes ever get the same one. The time stays first, so listings stay
sorted. The resolver is cached (``use_cache``) in the config it resolves in:
the value is stable for the whole run, and Hydra copies the cache into every
job of a sweep, so all jobs (in this process or a launcher's workers) share
the sweep's directory.
"""
import os
import secrets
import shutil
from pathlib import Path

from omegaconf import OmegaConf

RESOLVER = "dlexp.unique"
ATTEMPTS = 100


CREATED = {}  # run directory made by this process (absolute) -> the topmost directory made with it
STARTUP_FILES = {".hydra", "dlexp.log", "config.yaml", "overrides.txt"}  # what a run dir holds before a run


def unique_dir(base: str) -> str:
    """``<base>-<6 hex>``, created now and by this call alone (exclusive ``os.mkdir``)."""
    try:
        parent = Path(base).absolute().parent
        missing = [p for p in (parent, *parent.parents) if not p.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        for _ in range(ATTEMPTS):
            path = f"{base}-{secrets.token_hex(3)}"
            try:
                os.mkdir(path)
                CREATED[os.path.abspath(path)] = missing[-1] if missing else Path(path).absolute()
                return path
            except FileExistsError:
                continue
    except OSError as e:  # a read-only working directory or outputs/, a full disk
        raise OSError(f"cannot create the run directory under {Path(base).parent} ({e.strerror}); run dlexp "
                      "from a writable directory or give hydra.run.dir=<a writable path>") from None
    raise FileExistsError(f"no free run directory name {base}-<suffix> after {ATTEMPTS} tries")


def remove_unused(path) -> None:
    """Remove a run directory this process made for a command that was refused before its run started
    (it holds only Hydra's ``.hydra/``, the log and the config), and the parents made with it, when empty.
    A directory holding anything else, or not made here, is left as it is."""
    path = Path(os.path.abspath(path))
    top = CREATED.pop(str(path), None)
    try:
        if top is None or not {p.name for p in path.iterdir()} <= STARTUP_FILES:
            return
        shutil.rmtree(path)
        for parent in path.parents:
            if parent != top and top not in parent.parents:
                break
            parent.rmdir()  # OSError when not empty: stop there
    except OSError:
        return


def register_resolvers() -> None:
    """Register ``${dlexp.unique:...}`` (idempotent); the CLI calls it before Hydra composes the config."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, unique_dir, use_cache=True)
