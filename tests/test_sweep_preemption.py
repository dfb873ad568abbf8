"""A SLURM job preempted (or at its time limit) saves its training state, is requeued by submitit, and
continues to the result of a job that was never stopped.

The sweep runs through submitit's local executor (``hydra/launcher=slurm_local``: the SLURM preset's
resources, each job its own process under a local controller that requeues it as SLURM would); the
test sends the job the signal SLURM sends (SIGUSR2, what submitit asks for) in the middle of training.
A reference run with the same config, never stopped, trains beside it in another experiment.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

import sweep_procs
from dlexp import safe_pickle as checkpoint

CONFIG = ("model=mlp", "model.hidden_sizes=[32]", "optimizer.batch_size=20", "early_stopping=none",
          "trainer.max_epochs=300", "optimizer.lr=0.1")
FLUSH = {"DLEXP_TRACKING_FLUSH_SECONDS": "0.05"}  # the test sees the training's progress as it goes (on a quiet
# machine 300 epochs take ~1.5 s: points written every 0.3 s left the window below in view for one poll at most)


def _tasks(sweep_dir: Path) -> list:
    """The pids of the submitit tasks running the sweep's jobs (children of each job's local controller,
    whose pid is the job id: <sweep dir>/.submitit/<job id>/)."""
    pids = []
    for folder in (sweep_dir / ".submitit").glob("*"):
        children = Path(f"/proc/{folder.name}/task/{folder.name}/children")
        if folder.name.isdigit() and children.exists():
            pids += [int(p) for p in children.read_text().split()]
    return pids


def _params(run) -> dict:
    path = Path(run.data.tags["dlexp.output_dir"]) / "best_params.pkl"
    return checkpoint.load(path)["params"]


def test_preempted_job_is_requeued_and_ends_as_if_never_stopped(tmp_path):
    store_file = tmp_path / "mlflow.db"
    store = f"sqlite:///{store_file}"
    reference = subprocess.Popen(sweep_procs.command(store, *CONFIG, "tracking.experiment=reference", multirun=False),
                                 cwd=tmp_path, env=sweep_procs.env(FLUSH), stdout=subprocess.DEVNULL,
                                 stderr=open(tmp_path / "reference.log", "w"))
    proc = sweep_procs.start(tmp_path, store, "hydra/launcher=slurm_local", *CONFIG, extra_env=FLUSH)
    deadline, signalled = time.monotonic() + 300, []
    while time.monotonic() < deadline and proc.poll() is None and not signalled:
        # in the middle of training: some validations (one an epoch) logged, most to come
        if any(status == "RUNNING" and 5 <= n <= 150 for _, status, n, _ in sweep_procs.child_states(store_file)):
            for sweep_dir in (tmp_path / "outputs" / "multirun").glob("*/*"):
                for pid in _tasks(sweep_dir):
                    os.kill(pid, signal.SIGUSR2)  # what SLURM sends before a preemption or the time limit
                    signalled.append(pid)
        time.sleep(0.05)
    assert signalled, "the job never trained long enough to be preempted"
    assert proc.wait(300) == 0, (tmp_path / "sweep.log").read_text()[-4000:]
    assert reference.wait(300) == 0, (tmp_path / "reference.log").read_text()[-3000:]

    client = MlflowClient(store)
    (parent,) = sweep_procs.parents(store)
    (child,) = sweep_procs.children(store, parent)  # one run: the stopped one, continued
    assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert child.data.tags["dlexp.resumed_from"].startswith("finetune iteration ")
    assert "trainer.resume=auto" in child.data.tags["dlexp.overrides"]
    job_dir = Path(child.data.tags["dlexp.output_dir"])
    logs = "".join(p.read_text() for p in job_dir.parent.glob(".submitit/*/*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs
    job_log = "".join(p.read_text() for p in job_dir.glob("*.log"))
    assert "saving its state, then requeueing it" in job_log and "resuming run" in job_log

    exp = client.get_experiment_by_name("reference")
    (ref,) = client.search_runs([exp.experiment_id])
    sweep_procs.assert_same_training(client, child, ref)  # every validation, once, the same values
    mine, other = _params(child), _params(ref)
    assert mine.keys() == other.keys()
    for name in mine:
        np.testing.assert_array_equal(mine[name], other[name])


def test_the_slurm_preset_requeues_jobs_that_time_out():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dlexp.cli import CONFIG_PATH

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            cfg = compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    # submitit's default for the hydra plugin is 0: a job at its time limit would not be requeued
    assert cfg.hydra.launcher.max_num_timeout == 3 and cfg.hydra.launcher.signal_delay_s == 120
