"""A real SLURM cluster: a 4-job sweep through ``hydra/launcher=slurm``, one job preempted mid-training.

The test starts a single-node cluster itself: Debian's ``slurm-wlm`` and ``munge`` (installed with apt-get
when the test runs as root and they are missing; skipped with the reason elsewhere), a munge key made
by the test, ``munged``, ``slurmctld`` and ``slurmd`` on 127.0.0.1 with a generated ``slurm.conf`` (one
node, one partition, no accounting, state and spool in a temporary directory), all stopped at the end,
whatever happens (then any process left with the cluster's SLURM_CONF is killed). The sweep's job 0 gets
``scancel --signal=USR2`` (what SLURM sends before a preemption) while it trains: it saves its state,
submitit requeues it, and it ends FINISHED with the same metrics, point for point, as the same config
never stopped. Without accounting every submitit poll of ``sacct``
would fail with two lines of noise: there are none (:mod:`dlexp.sweep.sacct`). A sweep SIGTERMed
mid-training cancels its jobs, leaves no run RUNNING and ends KILLED.
"""
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import sweep_procs

COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scancel", "squeue", "sinfo", "scontrol")
CONFIG = ("model=mlp", "model.hidden_sizes=[32]", "optimizer.batch_size=20", "early_stopping=none",
          "trainer.max_epochs=200")
FLUSH = {"DLEXP_TRACKING_FLUSH_SECONDS": "0.05"}  # the test sees the training's progress as it goes


def _installed() -> bool:
    return all(shutil.which(c) for c in COMMANDS)


def _install_or_skip() -> None:
    """Debian's slurm-wlm and munge, installed when missing and the test may (root, apt-get); else a skip."""
    if _installed():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed (apt-get install slurm-wlm munge, as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge"]):
        r = subprocess.run(step, capture_output=True, text=True, timeout=900, env=env)
        if r.returncode != 0:
            pytest.skip(f"could not install SLURM ({' '.join(step)}: {r.stderr.strip()[-300:]})")
    if not _installed():
        pytest.skip(f"slurm-wlm and munge installed, yet one of {', '.join(COMMANDS)} is missing")


def _free_ports(n: int) -> list:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _slurm_conf(root: Path) -> str:
    host = socket.gethostname().split(".")[0]
    ctld, slurmd = _free_ports(2)
    return "\n".join([
        "ClusterName=dlexptest", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={ctld}", f"SlurmdPort={slurmd}",
        "AuthType=auth/munge", f"AuthInfo=socket={root}/munge.socket", "CredType=cred/munge",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
        "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "SlurmdParameters=config_overrides", "ReturnToService=2",  # 4 CPUs whatever this machine has
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory=4000 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


def _wait_until(check, timeout: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            shown = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
            raise AssertionError(f"{what} within {timeout} s\n{shown}")
        time.sleep(0.3)


def _idle(env) -> bool:
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env, timeout=10)
    return r.returncode == 0 and r.stdout.strip() == "idle"


def _queue(env) -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, env=env,
                          timeout=30).stdout.strip()


def _stop(procs, env) -> None:
    """Every job cancelled and gone, the daemons (slurmd, slurmctld, munged) stopped, killed if they linger,
    then any process still holding the cluster's SLURM_CONF (a job step, its srun) killed."""
    subprocess.run(["scancel", "--user=root"], capture_output=True, env=env, timeout=30, check=False)
    with contextlib.suppress(Exception):
        _wait_until(lambda: _queue(env) == "", 60, "jobs still in the queue")
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    _kill_leftovers(env["SLURM_CONF"])


def _kill_leftovers(conf: str) -> None:
    import psutil

    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and p.environ().get("SLURM_CONF") == conf:
                p.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """SLURM_CONF and the environment of a running single-node cluster; stopped at the end."""
    _install_or_skip()
    root = tmp_path_factory.mktemp("slurm")
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs = []
    try:
        procs.append(subprocess.Popen(["munged", "-F", "--force", f"--key-file={key}", f"--socket={root}/munge.socket",
                                       f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
                                       f"--seed-file={root}/munge.seed"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        _wait_until((root / "munge.socket").exists, 30, "munged did not start", [root / "munged.log"])
        for daemon in ("slurmctld", "slurmd"):
            procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        _wait_until(lambda: _idle(env), 60, "the SLURM node is not idle",
                    [root / "slurmctld.log", root / "slurmd.log"])
        yield env
    finally:
        _stop(procs[::-1], env)


def _job_of(sweep_dir: Path, num: int):
    """The SLURM job id of the sweep's job ``num`` (an array task: ``<sweep dir>/.submitit/<array>_<num>``)."""
    found = [p.name for p in (sweep_dir / ".submitit").glob(f"*_{num}")]
    return found[0] if found else None


def _preempt_job_0_mid_training(tmp_path, proc, env) -> str:
    """``scancel --signal=USR2`` to job 0 once its run has logged some of its validations; its job id."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        for sweep_dir in (tmp_path / "outputs" / "multirun").glob("*/*"):
            job = _job_of(sweep_dir, 0)
            output_dir = str((sweep_dir / "0").resolve())
            if job and any(status == "RUNNING" and 5 <= n <= 120 and out == output_dir
                           for _, status, n, out in sweep_procs.child_states(tmp_path / "mlflow.db")):
                subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True, timeout=30)
                return job
        time.sleep(0.05)
    raise AssertionError("job 0 never trained long enough to be preempted:\n"
                         + (tmp_path / "sweep.log").read_text()[-3000:])


def test_a_preempted_slurm_job_is_requeued_and_ends_as_if_never_stopped(cluster, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reference = subprocess.Popen(sweep_procs.command(store, *CONFIG, "optimizer.lr=0.1",
                                                     "tracking.experiment=reference", multirun=False),
                                 cwd=tmp_path, env=sweep_procs.env(FLUSH), stdout=subprocess.DEVNULL,
                                 stderr=open(tmp_path / "reference.log", "w"))
    proc = sweep_procs.start(tmp_path, store, "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                             "hydra.launcher.mem_gb=1", *CONFIG, "optimizer.lr=0.1,0.05,0.02,0.01",
                             extra_env={**FLUSH, "SLURM_CONF": cluster["SLURM_CONF"]})
    try:
        job = _preempt_job_0_mid_training(tmp_path, proc, cluster)
        assert proc.wait(240) == 0, (tmp_path / "sweep.log").read_text()[-4000:]
        assert reference.wait(120) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        for p in (proc, reference):
            if p.poll() is None:
                p.kill()
    out = (tmp_path / "sweep.log").read_text()
    for noise in ("Bypassing sacct error", "accounting storage is disabled", "Traceback"):
        assert noise not in out, out[-3000:]

    client = MlflowClient(store)
    (parent,) = sweep_procs.parents(store)
    children = sweep_procs.children(store, parent)
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert all(c.info.status == "FINISHED" for c in children)
    (child,) = [c for c in children if c.data.params["optimizer.lr"] == "0.1"]
    assert child.data.tags["dlexp.resumed_from"].startswith("finetune iteration ")
    job_dir = Path(child.data.tags["dlexp.output_dir"])
    logs = "".join(p.read_text() for p in job_dir.parent.glob(f".submitit/{job}/*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs, logs[-3000:]

    (ref,) = client.search_runs([client.get_experiment_by_name("reference").experiment_id])
    sweep_procs.assert_same_training(client, child, ref)  # every validation, once, the same values


def test_a_slurm_sweep_stopped_cancels_its_jobs_and_leaves_no_run_running(cluster, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = ("hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", *CONFIG,
                 "optimizer.lr=0.1,0.05")
    env = {**FLUSH, "SLURM_CONF": cluster["SLURM_CONF"]}
    proc = sweep_procs.start(tmp_path, store, *overrides, extra_env=env)
    try:
        deadline = time.monotonic() + 180
        while not any(status == "RUNNING" and n >= 5 for _, status, n, _ in sweep_procs.child_states(tmp_path / "mlflow.db")):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.log").read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 130, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in (tmp_path / "sweep.log").read_text().splitlines() if line.startswith("dlexp: ")]
    assert len(lines) == 1 and re.fullmatch(r"dlexp: stopped \(signal SIGTERM; [01] of 2 jobs finished\)", lines[0])
    _wait_until(lambda: _queue(cluster) == "", 60, "the stopped sweep's jobs are still in the queue")
    (parent,) = sweep_procs.parents(store)
    children = sweep_procs.children(store, parent)
    assert parent.info.status == "KILLED" and re.match(r"[01] of 2 jobs finished", parent.data.tags["dlexp.stopped"])
    statuses = sorted(c.info.status for c in children)
    assert "KILLED" in statuses and set(statuses) <= {"KILLED", "FINISHED"}, statuses
