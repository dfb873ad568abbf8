"""Sweeps under real use: a failed job is a grid outcome, a bad value stops the sweep before any job.

Every sweep runs ``python -m dlexp.cli -m ...`` in a subprocess (the working tree on PYTHONPATH) in a
temporary directory against its own sqlite store, on the digits with tiny models and epochs.
"""
import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import sweep_procs
from dlexp import sweep

REPO = Path(__file__).resolve().parents[1]
BASE = ("dataset=digits", "trainer.progress=log", "trainer.threads=1")
MLP = ("model=mlp", "model.hidden_sizes=[16]", "optimizer.batch_size=100", "trainer.max_epochs=2")


def multirun(cwd: Path, *overrides, timeout=300):
    """``dlexp -m <overrides>`` in ``cwd``; the finished process, whatever its exit status."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dlexp.cli", "-m", *BASE, *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def store_of(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def error_lines(proc) -> list:
    return [line for line in proc.stderr.splitlines() if line.startswith("dlexp: error:")]


def sweep_runs(store: str):
    """(parent, children) of the only sweep in the store."""
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("dlexp").experiment_id], max_results=1000)
    parents = [r for r in runs if sweep.SWEEP_TAG in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    return parents[0], children


def table_rows(store: str, parent, dest: Path) -> list:
    """The sweep's ranked table as logged to its parent run (CSV)."""
    path = MlflowClient(store).download_artifacts(parent.info.run_id, sweep.TABLE_CSV, str(dest))
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def show(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


# ------------------------------------------------------------------ jobs that fail
def test_a_diverging_job_is_failed_and_the_sweep_goes_on(tmp_path):
    store = store_of(tmp_path)
    r = multirun(tmp_path, *MLP, "optimizer.lr=1e30,0.1", f"tracking.uri={store}")
    assert r.returncode == 0, show(r)
    parent, children = sweep_runs(store)
    by_lr = {c.data.params["optimizer.lr"]: c for c in children}
    assert set(by_lr) == {"1e+30", "0.1"}
    diverged, finished = by_lr["1e+30"], by_lr["0.1"]
    assert diverged.info.status == "FAILED" and "diverged" in diverged.data.tags["dlexp.error"]
    assert finished.info.status == "FINISHED" and finished.data.metrics["final/epochs"] == 2
    assert parent.info.status == "FINISHED" and parent.data.tags["dlexp.best_run_id"] == finished.info.run_id
    # the table lists both, the failed one last with its reason
    rows = table_rows(store, parent, tmp_path / "table")
    assert [(row["overrides"], row["status"]) for row in rows] == [("optimizer.lr=0.1", "FINISHED"),
                                                                  ("optimizer.lr=1e+30", "FAILED")]
    assert "diverged" in rows[1]["error"] and rows[0]["error"] == ""
    assert "FAILED" in r.stdout and "error: Diverged: training diverged" in r.stdout
    # one line for the failed job, then how many failed
    assert error_lines(r) == [line for line in r.stderr.splitlines() if "job 0 (optimizer.lr=1e+30)" in line]
    assert len(error_lines(r)) == 1 and "training diverged" in error_lines(r)[0]
    assert "dlexp: 1 of 2 jobs failed (see the table)" in r.stderr.splitlines()


def test_jobs_failing_before_their_runs_are_failed_children_and_all_failed_exits_1(tmp_path):
    # 9x9 filters do not fit 8x8 digits: each job fails in its pre-flight checks, before its run exists
    store = store_of(tmp_path)
    r = multirun(tmp_path, "model=lenet", "model.pool_size=1", "model.filter_size=9,7", f"tracking.uri={store}")
    assert r.returncode == 1, show(r)
    lines = error_lines(r)
    assert len(lines) == 3 and "too small" in lines[0]
    assert lines[0].startswith("dlexp: error: job 0 (model.filter_size=9)")
    assert lines[1].startswith("dlexp: error: job 1 (model.filter_size=7)")
    assert lines[2] == "dlexp: error: all 2 jobs of the sweep failed"
    parent, children = sweep_runs(store)
    assert parent.info.status == "FAILED" and len(children) == 2
    for child in children:  # made by the sweep for the job, under its parent, with the reason
        assert child.info.status == "FAILED" and child.data.tags["dlexp.error"].startswith("ConfigError: lenet:")
        assert child.data.tags["dlexp.objective"] == "best/valid_error:min"
        assert "model.filter_size=" in child.data.tags["dlexp.overrides"]
        assert child.info.run_name in ("filter_size=9", "filter_size=7")  # named by its swept key
    # no child finished: the table is still headed by the model's objective
    assert "2 runs ranked by best/valid_error" in r.stdout
    rows = table_rows(store, parent, tmp_path / "table")
    assert sorted(row["overrides"] for row in rows) == ["model.filter_size=7", "model.filter_size=9"]
    assert all(row["status"] == "FAILED" and "too small" in row["error"] for row in rows)


def test_parallel_jobs_without_tracking_are_counted(tmp_path):
    # joblib workers: each job's end reaches the launching process through the sweep dir
    r = multirun(tmp_path, *MLP, "tracking=none", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 "optimizer.lr=1e30,1e29")
    assert r.returncode == 1, show(r)
    lines = error_lines(r)
    assert sorted(line.split(":")[2].strip() for line in lines[:2]) == ["job 0 (optimizer.lr=1e+30)",
                                                                         "job 1 (optimizer.lr=1e+29)"]
    assert lines[2:] == ["dlexp: error: all 2 jobs of the sweep failed"]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


# -------------------------------------------------- bad values, before any job
@pytest.mark.parametrize("swept, named", [
    (("optimizer.lr=0.1,-1",), "optimizer.lr=-1 (job 1 of 2): optimizer.lr=-1.0 is not allowed"),
    (("model=mlp,nope",), "model=nope (job 1 of 2): model=nope is not allowed: one of"),
    (("optimizer.batch_size=20,abc",), "optimizer.batch_size=abc (job 1 of 2): "),
    (("hparams_search=optuna", "optimizer.lr=choice(0.1,-2)"),
     "optimizer.lr=-2 (a value of optimizer.lr=choice(0.1,-2)): optimizer.lr=-2.0 is not allowed"),
])
def test_a_bad_value_in_a_sweep_is_refused_before_any_job(tmp_path, swept, named):
    store = store_of(tmp_path)
    r = multirun(tmp_path, *MLP, *swept, f"tracking.uri={store}")
    assert r.returncode == 2, show(r)
    assert len(error_lines(r)) == 1 and r.stderr.strip() == error_lines(r)[0], r.stderr
    assert error_lines(r)[0].startswith(f"dlexp: error: {named}")
    # nothing ran: no store, no parent run, no job's directory, nothing launched
    assert not (tmp_path / "mlflow.db").exists()
    assert not list(tmp_path.rglob("config.yaml")) and "Launching" not in r.stdout


def test_every_job_of_a_preset_grid_is_checked_first(tmp_path):
    # the preset's 4 x 4 grid, its L2 list replaced on the command line: job 3 (lr 0.1, L2 -1) is refused
    r = multirun(tmp_path, "experiment=grid_lr_lambda", "model=mlp", "tracking=none",
                 "regularization.l2=0.01,0.001,0.0001,-1")
    assert r.returncode == 2, show(r)
    assert "Launching" not in r.stdout
    assert error_lines(r) == ["dlexp: error: regularization.l2=-1 (job 3 of 16): regularization.l2=-1.0 is not "
                              "allowed: must be >= 0"]


# ----------------------------------------------------------------------- Optuna
def test_an_optuna_study_goes_on_after_a_failed_trial(tmp_path):
    # the preset's TPE (seed 1234) picks lr=1e30 for its second trial: that trial diverges and FAILs
    store = store_of(tmp_path)
    r = multirun(tmp_path, *MLP, "hparams_search=optuna", "optimizer.lr=choice(1e30,0.1)",
                 "hydra.sweeper.n_trials=3", f"tracking.uri={store}")
    assert r.returncode == 0, show(r)
    parent, children = sweep_runs(store)
    assert len(children) == 3 and parent.info.status == "FINISHED"
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1 and failed[0].data.params["optimizer.lr"] == "1e+30"
    assert "diverged" in failed[0].data.tags["dlexp.error"]
    assert all(c.info.status == "FINISHED" for c in children if c not in failed)
    # the study ran its three trials and recorded its best among the finished ones
    results = (Path(parent.data.tags["dlexp.sweep_dir"]) / "optimization_results.yaml").read_text()
    best = min(c.data.metrics["best/valid_error"] for c in children if c not in failed)
    assert f"best_value: {best}" in results and "optimizer.lr: 0.1" in results
    rows = table_rows(store, parent, tmp_path / "table")
    assert [row["status"] for row in rows] == ["FINISHED", "FINISHED", "FAILED"]
    assert rows[2]["overrides"].startswith("optimizer.lr=1e+30") and "diverged" in rows[2]["error"]
    assert len(error_lines(r)) == 1 and "dlexp: 1 of 3 jobs failed (see the table)" in r.stderr


def test_slurm_launcher_without_a_cluster_is_one_line_before_anything(tmp_path):
    """``hydra/launcher=slurm`` where SLURM's commands are missing: one line naming what is allowed, exit 2,
    and no store, parent run or job made."""
    env_path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                               if not (Path(d) / "sbatch").exists())
    env = {**os.environ, "PATH": env_path,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "-m", *BASE, "hydra/launcher=slurm", *MLP,
                        "optimizer.lr=0.1,0.2", f"tracking.uri={store_of(tmp_path)}"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    [line] = error_lines(r)
    assert "hydra/launcher=slurm needs a SLURM cluster" in line and "slurm_local" in line
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "mlflow.db").exists()


# ------------------------------------------------------------- stopped by the user
# Ctrl-C (SIGINT to the terminal's whole process group) or SIGTERM (to the command alone), at any moment:
# one line, exit 130, no run left RUNNING, the parent KILLED with its count of finished jobs, no worker
# left alive; and the same command with trainer.skip_finished=true trainer.resume=auto completes the sweep.
LONG = ("model=mlp", "model.hidden_sizes=[32]", "optimizer.batch_size=20", "early_stopping=none",
        "trainer.max_epochs=150")
AGAIN = ("trainer.skip_finished=true", "trainer.resume=auto")


def _stopped_cleanly(proc, tmp_path, store: str, total: int):
    """Exit 130 with one line; every run ended; the parent KILLED, tagged ``k of <total> jobs finished``."""
    err = (tmp_path / "sweep.log").read_text()
    assert proc.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("dlexp: ")]
    assert len(lines) == 1, err[-3000:]
    assert re.fullmatch(rf"dlexp: stopped \(.+; \d of {total} jobs finished\)", lines[0]), lines[0]
    assert "Traceback" not in err, err[-3000:]
    (parent,) = sweep_procs.parents(store)
    children = sweep_procs.children(store, parent)
    assert parent.info.status == "KILLED", parent.info.status
    assert re.fullmatch(rf"\d of {total} jobs finished \(.+\)", parent.data.tags["dlexp.stopped"])
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children), [c.info.status for c in children]
    return parent, children


def _completed_again(tmp_path, store: str, overrides, total: int) -> list:
    """The same sweep again with skip_finished and resume=auto: every job FINISHED, the stopped ones continued."""
    r = sweep_procs.run(tmp_path, store, *overrides, *AGAIN)
    parent = sweep_procs.parents(store)[-1]
    children = sweep_procs.children(store, parent)
    assert parent.info.status == "FINISHED" and len(children) == total, r.stderr[-3000:]
    assert all(c.info.status == "FINISHED" for c in children)
    return children


def _wait_for(check, proc, timeout=300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be stopped"
        time.sleep(0.05)


def test_a_basic_sweep_stopped_between_jobs(tmp_path):
    store = store_of(tmp_path)
    overrides = (*MLP, "optimizer.lr=0.1,0.2,0.3")
    proc = sweep_procs.start(tmp_path, store, *overrides)
    _wait_for(lambda: list(tmp_path.glob("outputs/multirun/*/*/.dlexp_jobs/0.json")), proc)
    proc.send_signal(signal.SIGTERM)  # job 0 has just ended: between two jobs
    proc.wait(120)
    _stopped_cleanly(proc, tmp_path, store, 3)
    _completed_again(tmp_path, store, overrides, 3)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_joblib_sweep_stopped_mid_training_leaves_no_run_or_worker(tmp_path, sig):
    import psutil

    store = store_of(tmp_path)
    overrides = (*LONG, "optimizer.lr=0.1,0.2,0.3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    proc = sweep_procs.start(tmp_path, store, *overrides, extra_env={"DLEXP_TRACKING_FLUSH_SECONDS": "0.05"})
    _wait_for(lambda: any(status == "RUNNING" and n >= 5 for _, status, n, _ in
                          sweep_procs.child_states(tmp_path / "mlflow.db")), proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 2
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the whole group, workers included
    else:
        proc.send_signal(sig)  # kill / a scheduler: the command alone
    proc.wait(120)
    _, children = _stopped_cleanly(proc, tmp_path, store, 3)
    stopped = [c for c in children if c.info.status == "KILLED"]
    assert stopped  # the runs in training saved their state and ended KILLED
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [p.cmdline()[:4] for p in alive]
    again = _completed_again(tmp_path, store, overrides, 3)
    resumed = {c.info.run_id: c.data.tags.get("dlexp.resumed_from") for c in again}
    assert all(resumed.get(c.info.run_id) for c in stopped), resumed  # continued, in the same runs
    assert any(resumed[c.info.run_id].startswith("finetune iteration") for c in stopped), resumed  # from a state
