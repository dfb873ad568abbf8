"""Where a stopped run continues from: ``trainer.resume=<run id | path | auto>``.

A run saves its whole training state every ``trainer.checkpoint_every``
iterations (and on Ctrl-C / SIGTERM) as ``state/train_state.pkl`` among its
MLflow artifacts, written atomically, so the last complete one survives a
SIGKILL. Resuming reads it back through the restricted unpickler, checks
that it was made by the same config (every key but the ones below may not
change), and continues the same MLflow run. ``auto`` picks the newest
unfinished run of the experiment with the same config, or starts a new one.
"""
import hashlib
import json
import logging
import tempfile
from pathlib import Path

from .. import safe_pickle as checkpoint
from ..config import ConfigError

log = logging.getLogger("dlexp")

STATE = "train_state.pkl"
FORMAT = "dlexp.state/1"
# Keys that may differ between a run and its resumption: how it is run, not what it computes.
FREE = ("trainer.resume", "trainer.progress", "trainer.threads", "trainer.checkpoint_every", "tracking.")


def comparable(params: dict) -> dict:
    return {k: str(v) for k, v in params.items() if not k.startswith(FREE)}


def config_key(params: dict) -> str:
    """A short hash of the config keys that decide the result."""
    return hashlib.sha256(json.dumps(comparable(params), sort_keys=True).encode()).hexdigest()[:16]


def state_path(local_artifacts, out: Path) -> Path:
    """Where a run keeps its state: in its artifact directory when that is local (a path), else in ``out``."""
    return (local_artifacts if local_artifacts is not None else out) / "state" / STATE


def _load(path, source: str, params: dict) -> dict:
    state = checkpoint.load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"trainer.resume={source!r}: {path} is not a dlexp training state ({FORMAT})")
    saved, now = state.get("params", {}), comparable(params)
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise ConfigError(f"trainer.resume={source!r}: the run was trained with {key}={saved.get(key)}, "
                              f"this config has {key}={now.get(key)}; resume with the same config")
    return state


def find(source, tracker, params: dict, out: Path):
    """(run id to continue or None, state dict or None) for ``trainer.resume=source``."""
    if not source:
        return None, None
    if source == "auto":
        run = tracker.latest_unfinished(config_key(params))
        if run is None:
            log.info("trainer.resume=auto: no unfinished run with this config; starting a new run")
            return None, None
    elif source.endswith(".pkl"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"trainer.resume={source!r}: no such file")
        state = _load(path, source, params)
        run_id = state.get("run_id")
        if run_id and tracker.find_run(run_id) is None:
            log.warning("run %s of %s is not in this tracking store; continuing in a new run", run_id, path)
            run_id = None
        return run_id, state
    else:
        run = tracker.find_run(source)
        if run is None:
            raise ConfigError(f"trainer.resume={source!r}: no such run in the tracking store "
                              f"{getattr(tracker, 'uri', None)}")
    source_run = run.info.run_id
    if run.info.status == "FINISHED":
        raise ConfigError(f"trainer.resume={source!r}: run {source_run} is FINISHED; nothing to resume")
    local = tracker.local_artifact_dir(source_run)
    path = state_path(local, out)
    if path.is_file():
        log.info("resuming run %s from %s", source_run, path)
        return source_run, _load(path, source, params)
    if local is not None:  # its artifacts are here: no state (and no download, with its progress bar on stderr)
        log.info("run %s saved no training state before it stopped; training it again from the start", source_run)
        return source_run, None
    with tempfile.TemporaryDirectory(prefix="dlexp-state-") as tmp:  # a remote artifact store: a copy, removed
        try:
            path = tracker.download_artifact(source_run, f"state/{STATE}", tmp)
        except Exception:
            log.info("run %s saved no training state before it stopped; training it again from the start",
                     source_run)
            return source_run, None
        log.info("resuming run %s from its artifact state/%s", source_run, STATE)
        return source_run, _load(path, source, params)


def save(path: Path, state: dict, run_id, params: dict) -> None:
    """The training state (tensors as numpy arrays), atomically: a kill mid-write keeps the previous one.

    ``saved_ms``: when (the metrics up to this state were flushed before): a resumed run's points logged
    after it are the ones its replay logs again (:meth:`dlexp.tracking.tracker.Tracker.start`)."""
    import time

    from ..train.state import to_numpy

    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, {"format": FORMAT, "run_id": run_id, "params": comparable(params),
                           "saved_ms": int(time.time() * 1000), **to_numpy(state)})
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-write (SIGKILL)
        stale.unlink(missing_ok=True)
