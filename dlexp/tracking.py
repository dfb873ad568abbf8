"""MLflow tracking: one run per job, metrics batched off the hot path.

The default store is embedded: ``sqlite:///<cwd>/outputs/mlflow.db`` with
artifacts beside it in ``outputs/mlartifacts``. ``tracking.uri`` or
``$MLFLOW_TRACKING_URI`` point elsewhere (another sqlite file, a server).
Metrics are buffered and written with one ``log_batch`` call every
``flush_seconds`` (and at the end), so a run pays a few milliseconds of
tracking per flush, not per minibatch or per validation.
"""
import logging
import os
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

for _name in ("alembic", "mlflow.store.db.utils"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def resolve_uri(uri=None, cwd=None) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite under ./outputs."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    out = Path(cwd or os.getcwd()).resolve() / "outputs"
    out.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{out / 'mlflow.db'}"


def _artifact_root(uri: str):
    """For a sqlite store, artifacts live beside the database file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def get_or_create_experiment(client: MlflowClient, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_root(uri))
    except Exception:  # created meanwhile by a parallel job
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


class Tracker:
    """A thin, buffered wrapper over one MLflow run."""

    def __init__(self, uri: str, experiment: str, flush_seconds: float = 2.0):
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = get_or_create_experiment(self.client, experiment, uri)
        self.flush_seconds = flush_seconds
        self.run_id = None
        self._buffer = []
        self._last_flush = time.monotonic()

    def start(self, run_name: str, params: dict, tags: dict) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name)
        self.run_id = run.info.run_id
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        self.set_tags(tags)
        return self.run_id

    def set_tags(self, tags: dict) -> None:
        items = [RunTag(k, str(v)[:8000]) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i:i + 100])

    def log_metrics(self, metrics: dict, step: int) -> None:
        ts = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def __call__(self, event: str, metrics: dict, step: int) -> None:
        """The trainer's callback: every metric it reports, at its step."""
        self.log_metrics(metrics, step)

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self.client.log_batch(self.run_id, metrics=batch)
        self._last_flush = time.monotonic()

    def log_artifact(self, path, artifact_path=None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status)


class NullTracker:
    """``tracking=none``: the same interface, nothing recorded."""

    uri = None
    run_id = None

    def start(self, run_name, params, tags):
        return None

    def set_tags(self, tags):
        pass

    def log_metrics(self, metrics, step):
        pass

    def __call__(self, event, metrics, step):
        pass

    def flush(self):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def end(self, status="FINISHED"):
        pass


def build_tracker(cfg, cwd=None):
    if not cfg.enabled:
        return NullTracker()
    return Tracker(resolve_uri(cfg.uri, cwd), cfg.experiment)
