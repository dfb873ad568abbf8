"""Sweeps as a user runs them, for the tests of dlexp/sweep: ``python -m dlexp.cli -m ...`` in a subprocess
on the working tree (PYTHONPATH is the repository), in its own directory and store; and the sweep read back."""
import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
BASE = ("dataset=digits", "trainer.progress=log", "trainer.threads=1")


def env(extra=None) -> dict:
    out = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           **(extra or {})}
    out.pop("MLFLOW_TRACKING_URI", None)
    return out


def command(store: str, *overrides, multirun=True) -> list:
    return [sys.executable, "-m", "dlexp.cli", *(["-m"] if multirun else []), *BASE, *overrides,
            f"tracking.uri={store}"]


def run(cwd: Path, store: str, *overrides, multirun=True, check=True, timeout=600, extra_env=None):
    """Run dlexp; the finished process, its output kept; fails the test on a non-zero exit if ``check``."""
    args = command(store, *overrides, multirun=multirun)
    r = subprocess.run(args, cwd=cwd, env=env(extra_env), capture_output=True, text=True, timeout=timeout)
    assert not check or r.returncode == 0, f"{' '.join(args)}\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


def start(cwd: Path, store: str, *overrides, log_name="sweep.log", extra_env=None) -> subprocess.Popen:
    """Start a sweep in the background, its output in ``cwd/log_name``."""
    log = open(cwd / log_name, "w")
    return subprocess.Popen(command(store, *overrides), cwd=cwd, env=env(extra_env), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def parents(store: str, experiment: str = "dlexp") -> list:
    """The sweeps' parent runs of the experiment, oldest first."""
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`dlexp.sweep_id` != ''",
                              order_by=["attributes.start_time ASC"], max_results=100)
    return runs


def children(store: str, parent) -> list:
    client = MlflowClient(store)
    return client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              max_results=1000)


def child_states(db: Path) -> list:
    """(run id, status, validations logged, output dir) of every sweep child in the sqlite store ``db``, read directly
    (read-only: a test watching a sweep never creates or migrates the store the sweep is building)."""
    import sqlite3

    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(
                "select r.run_uuid, r.status, (select count(*) from metrics m where m.run_uuid = r.run_uuid "
                "and m.key = 'valid/error'), (select value from tags o where o.run_uuid = r.run_uuid and "
                "o.key = 'dlexp.output_dir') from runs r join tags t on t.run_uuid = r.run_uuid "
                "where t.key = 'mlflow.parentRunId'").fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # not built yet, or locked for a moment
        return []


def assert_same_training(client, run, ref) -> None:
    """``run`` (stopped and resumed) ended as ``ref`` (never stopped): the same summary values and the same
    histories of every validation, once each."""
    for key in ("best/valid_error", "best/test_error", "best/iteration", "final/epochs", "final/iterations"):
        assert run.data.metrics[key] == ref.data.metrics[key], key
    for key in ("valid/error", "test/error", "train/nll"):
        ours = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        theirs = sorted((m.step, m.value) for m in client.get_metric_history(ref.info.run_id, key))
        assert ours == theirs, key
