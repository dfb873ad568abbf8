"""Ctrl-C and SIGTERM at any moment, for ``python -m bench.faults`` (issue 22, "Nothing lost, third round").

* a single run SIGTERMed in its start-up, before its run exists (as soon as it catches SIGTERM);
* a basic sweep SIGTERMed between two jobs;
* a joblib sweep stopped mid-training by Ctrl-C (SIGINT to the whole process group) and by SIGTERM (to the
  command alone);
* a submitit (local) sweep and an Optuna sweep SIGTERMed mid-training.

Each must end with one line ``dlexp: stopped (...)`` and exit 130, leave no run RUNNING, its sweep's parent
KILLED with ``k of n jobs finished``, no process of it alive; then the same command with
``trainer.skip_finished=true trainer.resume=auto`` must finish every job. Each records one row.
"""
import os
import signal
import subprocess
import sys
import time

import psutil

RUN = ["dataset=digits", "trainer.progress=log", "trainer.threads=1", "model=mlp", "model.hidden_sizes=[32]",
       "optimizer.batch_size=20", "early_stopping=none"]
AGAIN = ["trainer.skip_finished=true", "trainer.resume=auto"]
FAST = {**os.environ, "DLEXP_TRACKING_FLUSH_SECONDS": "0.05"}


def _runs(db):
    from mlflow.tracking import MlflowClient

    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=1000)]


def _child_states(db):
    import sqlite3

    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("select r.status, (select count(*) from metrics m where m.run_uuid = r.run_uuid and "
                               "m.key = 'valid/error') from runs r join tags t on t.run_uuid = r.run_uuid "
                               "where t.key = 'mlflow.parentRunId'").fetchall()
    except sqlite3.Error:
        return []


def _stop(f, target, args, sig, ready, group=False):
    """Start ``dlexp args`` in its own group, send ``sig`` once ``ready(cwd, pid)``; one row."""
    cwd = f.tmp / f"stop-{len(f.cases)}"
    cwd.mkdir()
    db = cwd / "mlflow.db"
    cmd = [sys.executable, "-m", "dlexp.cli", *args, f"tracking.uri=sqlite:///{db}"]
    proc = subprocess.Popen(cmd, cwd=cwd, env=FAST, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not ready(cwd, proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    err = proc.communicate(timeout=300)[1]
    _, alive = psutil.wait_procs(workers, timeout=10)
    runs = _runs(db)
    lines = [line for line in err.splitlines() if line.startswith("dlexp: ")]
    parents = [r for r in runs if "dlexp.sweep_id" in r.data.tags]
    wrong = [w for w, bad in [
        (f"exit {proc.returncode}", proc.returncode != 130),
        (f"{len(lines)} lines", len(lines) != 1 or not lines[0].startswith("dlexp: stopped (")),
        ("a traceback", "Traceback" in err),
        ("a run left RUNNING", any(r.info.status == "RUNNING" for r in runs)),
        ("the parent not KILLED with its count", any(r.info.status != "KILLED" or "jobs finished"
                                                     not in r.data.tags.get("dlexp.stopped", "") for r in parents)),
        (f"{len(alive)} processes left", [p for p in alive if p.status() != psutil.STATUS_ZOMBIE])] if bad]
    if "-m" in args and not wrong:
        again = subprocess.run(cmd + AGAIN, cwd=cwd, capture_output=True, text=True, timeout=600)
        last = [r for r in _runs(db) if "dlexp.sweep_id" in r.data.tags]
        last = max(last, key=lambda r: r.info.start_time)
        children = [r for r in _runs(db) if r.data.tags.get("mlflow.parentRunId") == last.info.run_id]
        if again.returncode != 0 or last.info.status != "FINISHED" or any(
                c.info.status != "FINISHED" for c in children):
            wrong.append(f"the re-run with {' '.join(AGAIN)}: exit {again.returncode}, parent {last.info.status}")
    line = lines[0] if lines else (err.strip().splitlines() or ["(nothing on stderr)"])[-1]
    f.record("stopped", target, not wrong, f"{line}{f' [{wrong}]' if wrong else ''}")


def _catches_sigterm(cwd, pid) -> bool:
    """Whether process ``pid`` has a SIGTERM handler yet (the first line of ``dlexp``'s main)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    except (OSError, StopIteration):
        return False
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def _training(cwd, pid=None) -> bool:
    return any(status == "RUNNING" and n >= 5 for status, n in _child_states(cwd / "mlflow.db"))


def single_run_at_start_up(f):
    _stop(f, "run, start-up", [*RUN, "trainer.max_epochs=2"], signal.SIGTERM, _catches_sigterm)


def basic_sweep_between_jobs(f):
    _stop(f, "basic, between jobs", ["-m", *RUN, "trainer.max_epochs=2", "optimizer.lr=0.1,0.2,0.3"],
          signal.SIGTERM, lambda cwd, pid: any(cwd.glob("outputs/multirun/*/*/.dlexp_jobs/0.json")))


def joblib_sweep_ctrl_c(f):
    _stop(f, "joblib, Ctrl-C", ["-m", *RUN, "trainer.max_epochs=150", "optimizer.lr=0.1,0.2,0.3",
                                "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], signal.SIGINT, _training,
          group=True)


def joblib_sweep_sigterm(f):
    _stop(f, "joblib, SIGTERM", ["-m", *RUN, "trainer.max_epochs=150", "optimizer.lr=0.1,0.2,0.3",
                                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], signal.SIGTERM, _training)


def submitit_sweep_sigterm(f):
    _stop(f, "submitit, SIGTERM", ["-m", *RUN, "trainer.max_epochs=150", "optimizer.lr=0.1,0.2",
                                   "hydra/launcher=slurm_local"], signal.SIGTERM, _training)


def optuna_sweep_sigterm(f):
    _stop(f, "Optuna, SIGTERM", ["-m", *RUN, "trainer.max_epochs=150", "hparams_search=optuna",
                                 "optimizer.lr=choice(0.1,0.05)", "hydra.sweeper.n_trials=2"], signal.SIGTERM,
          _training)


def run_all(f):
    for fault in (single_run_at_start_up, basic_sweep_between_jobs, joblib_sweep_ctrl_c, joblib_sweep_sigterm,
                  submitit_sweep_sigterm, optuna_sweep_sigterm):
        fault(f)
