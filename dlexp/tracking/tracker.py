"""MLflow tracking: one run per job, metrics batched off the hot path.

The default store is embedded: ``sqlite:///<cwd>/outputs/mlflow.db`` with
artifacts beside it in ``outputs/mlartifacts``. ``tracking.uri`` or
``$MLFLOW_TRACKING_URI`` point elsewhere (another sqlite file, a server).
Metrics are buffered and written with one ``log_batch`` call every
``flush_seconds`` (and at the end), so a run pays a few milliseconds of
tracking per flush, not per minibatch or per validation.

Several processes may write one sqlite store at once (a parallel sweep):
MLflow's sqlite sessions wait up to 20 s for a lock (``busy_timeout``), but
SQLite still answers some writes with "database is locked" at once (a read
lock that cannot be upgraded) or after the timeout under heavy load. Every
client call is therefore retried with exponential backoff and jitter on that
error, as MLflow's own store does for database deadlocks; a failed write is
rolled back, so a retry never records anything twice.

The store itself (which URIs, a sqlite store built once under a lock) is
:mod:`dlexp.tracking.store`.
"""
import collections
import functools
import logging
import os
import random
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .contract import ERROR_TAG, PRUNED_TAG, runs_with_config_key
from .store import artifact_root, check_existing, check_uri, prepare_store, resolve_uri

log = logging.getLogger("dlexp")

for _name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class _DropLockedErrors(logging.Filter):
    """MLflow logs a traceback for each "database is locked" before raising it; we retry those."""

    def filter(self, record):
        return not _is_locked(record.getMessage())


def _is_locked(message) -> bool:
    message = str(message).lower()
    return "database is locked" in message or "database table is locked" in message or "database is busy" in message


logging.getLogger("mlflow.store.db.utils").addFilter(_DropLockedErrors())

RETRY_SECONDS = float(os.environ.get("DLEXP_TRACKING_RETRY_SECONDS", "120"))


def retry_locked(fn, *args, _deadline_s=None, **kwargs):
    """Call fn, retrying while the store answers "database is locked" (exponential backoff, jitter)."""
    deadline = time.monotonic() + (RETRY_SECONDS if _deadline_s is None else _deadline_s)
    attempt = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # MlflowException(TEMPORARILY_UNAVAILABLE) or a raw sqlalchemy OperationalError
            if not _is_locked(e) or time.monotonic() >= deadline:
                raise
            attempt += 1
            delay = min(2.0, 0.05 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.5)
            log.debug("tracking store locked, retry %d in %.2f s: %s", attempt, delay, fn)
            time.sleep(delay)


class RetryingClient:
    """An MlflowClient whose every method retries on a locked sqlite store; a sqlite store is made
    complete first (:func:`prepare_store`)."""

    def __init__(self, uri: str, create: bool = True):
        if create:
            check_uri(uri)
            prepare_store(uri)
        else:  # a reader: the store must be there already
            check_existing(uri)
        self._client = retry_locked(MlflowClient, tracking_uri=uri)

    def __getattr__(self, name):
        if name.startswith("__") or name == "_client":  # copy/pickle probing an instance without _client
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return functools.partial(retry_locked, attr)


def get_or_create_experiment(client, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        # the MLflow UI opens an experiment of this kind on its training-runs view (not the GenAI one)
        return client.create_experiment(name, artifact_location=artifact_root(uri),
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except Exception:  # created meanwhile by a parallel job
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


class Tracker:
    """A thin, buffered wrapper over one MLflow run."""

    def __init__(self, uri: str, experiment: str, flush_seconds: float = None):
        self.uri = uri
        self.client = RetryingClient(uri)
        self.experiment_id = get_or_create_experiment(self.client, experiment, uri)
        if flush_seconds is None:  # $DLEXP_TRACKING_FLUSH_SECONDS (0: write every metric at once), else 2 s
            flush_seconds = float(os.environ.get("DLEXP_TRACKING_FLUSH_SECONDS", "2"))
        self.flush_seconds = flush_seconds
        self.run_id = None
        self._artifact_uri = None  # of the run this tracker created
        self._buffer = []
        self._stored = collections.Counter()  # a resumed run: (key, step) -> points already in the store
        self._last_flush = time.monotonic()

    def start(self, run_name: str, params: dict, tags: dict, run_id: str = None, since_ms: int = 0) -> str:
        """Create a run, or continue ``run_id``: its params stay, and the points it logged after its saved
        state (timestamps after ``since_ms``), which the resumed run logs again, are not logged twice."""
        if run_id is None:  # the run and its tags in one write, its params in one more (per 100)
            run = self.client.create_run(self.experiment_id, run_name=run_name,
                                         tags={k: str(v)[:8000] for k, v in tags.items()})
            self.run_id = run.info.run_id
            self._artifact_uri = run.info.artifact_uri
            items = [Param(k, str(v)[:6000]) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i:i + 100])
            return self.run_id
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        for key in self.client.get_run(run_id).data.metrics:  # the points logged after the saved state
            self._stored.update((key, m.step) for m in self.client.get_metric_history(run_id, key)
                                if m.timestamp > since_ms)
        self.set_tags(tags)
        return self.run_id

    def find_run(self, run_id: str):
        """The run with this id in this store, or None."""
        try:
            return self.client.get_run(run_id)
        except Exception as e:
            if "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower():
                return None
            raise

    def latest_unfinished(self, config_key: str):
        """The newest run of this experiment with tag dlexp.config_key = config_key not FINISHED, or None."""
        runs = runs_with_config_key(self.client, self.experiment_id, config_key, finished=False)
        return next((r for r in runs if r.info.status != "FINISHED"), None)

    def local_artifact_dir(self, run_id: str = None):
        """The run's artifact directory when it is on this file system (a path), else None."""
        from urllib.parse import unquote, urlparse

        if (run_id or self.run_id) == self.run_id and self._artifact_uri:
            uri = self._artifact_uri
        else:
            uri = self.client.get_run(run_id or self.run_id).info.artifact_uri
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        return None

    def download_artifact(self, run_id: str, path: str, dst) -> Path:
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    def set_tags(self, tags: dict) -> None:
        items = [RunTag(k, str(v)[:8000]) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i:i + 100])

    def log_metrics(self, metrics: dict, step: int) -> None:
        ts = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), ts, step) for k, v in metrics.items() if not self._replayed(k, step))
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _replayed(self, key: str, step: int) -> bool:
        """A resumed run replays, bit for bit, what it did after its saved state: the first points at a
        (key, step) that the store already holds from before the stop are not logged again (the rest,
        e.g. the final metrics logged at the last validation's step, are)."""
        if self._stored[(key, step)] > 0:
            self._stored[(key, step)] -= 1
            return True
        return False

    def __call__(self, event: str, metrics: dict, step: int) -> None:
        """The trainer's callback: every metric it reports, at its step."""
        self.log_metrics(metrics, step)

    def link_model(self, model_id: str, step: int) -> None:
        """The buffered points at ``step`` are also the metrics of the model ``model_id``, just logged at that
        step (MLflow linked those already written when it logged it): linked in the write that logs them
        (the next flush; one write a run's end, not three: points, MLflow's history reads, its copy)."""
        self._buffer = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id) if m.step == step else m
                        for m in self._buffer]

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self.client.log_batch(self.run_id, metrics=batch)
        self._last_flush = time.monotonic()

    def log_artifact(self, path, artifact_path=None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED", reason: str = None) -> None:
        """The run ends ``status``; ``reason``: why it FAILED (``dlexp.error``), or why a FINISHED run was
        stopped early by its sweep's pruner (``dlexp.pruned``)."""
        try:
            if reason:
                self.set_tags({PRUNED_TAG if status == "FINISHED" else ERROR_TAG: reason})
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status)


def _nothing(*args, **kwargs):
    return None


class NullTracker:
    """``tracking=none``: every :class:`Tracker` method exists and does nothing (returns None)."""

    uri = run_id = client = experiment_id = None

    def __getattr__(self, name):
        # Tracker's public methods, whatever they are; anything else (a typo, copy/pickle probing) is missing
        if name.startswith("_") or not callable(getattr(Tracker, name, None)):
            raise AttributeError(name)
        return _nothing

    def __call__(self, event, metrics, step):  # looked up on the class, never through __getattr__
        return None


def build_tracker(cfg, cwd=None):
    """The run's tracker: an MLflow :class:`Tracker`, or a :class:`NullTracker` for ``tracking=none``."""
    if not cfg.enabled:
        return NullTracker()
    return Tracker(resolve_uri(cfg.uri, cwd), cfg.experiment)
