"""Running what the store lacks of a selection: one ``dlexp`` subprocess a (protocol, seed), one at a time,
a stop passed on to it so it saves its state."""
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .protocols import Protocol
from .store import REPO, command, finished, identity, run_name, stored_runs, work_dir


@dataclass
class Job:
    """One run to make: a protocol's seed (or its timing run, seed None), its identity and run name."""

    protocol: Protocol
    seed: Optional[int]
    ident: list
    name: str


def plan(protocols: list, seeds, dataset: str, quick: bool, timing_only: bool = False) -> list:
    """Every (protocol, seed) job of the selection, timing runs first (they are short)."""
    jobs = []
    for p in protocols:
        if p.estimate:
            jobs.append(Job(p, None, identity(p, None, dataset, quick, estimate=True), run_name(p, None, quick)))
        for seed in [] if timing_only else seeds or (p.seeds[:1] if quick else p.seeds):
            jobs.append(Job(p, seed, identity(p, seed, dataset, quick), run_name(p, seed, quick)))
    return jobs


def wait_forwarding(proc) -> int:
    """Wait for the run, passing it Ctrl-C / SIGTERM once each time one comes (it saves its state and ends
    KILLED); KeyboardInterrupt after it has stopped, so no further run starts."""
    stopped = []

    def forward(signum, frame):
        stopped.append(signum)
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        raise KeyboardInterrupt
    return rc


def run_job(job: Job, store: str, threads, logs: Path) -> bool:
    """One dlexp subprocess (its own session: a signal reaches it once, through us), its output to a log
    file; True if it exited 0."""
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / (job.name.replace("/", "_") + ".log")
    cmd = command(job.ident, job.name, store, threads)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    with open(log_file, "a") as out:
        out.write(f"\n$ python {' '.join(cmd[1:])}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=work_dir(store), stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        rc = wait_forwarding(proc)
    seconds = time.perf_counter() - start
    if rc != 0:
        tail = [line for line in log_file.read_text().splitlines() if line.strip()][-3:]
        what = "STOPPED from outside (the same command continues it)" if rc == 130 else "FAILED"
        print(f"    {what} (exit {rc}, {seconds:.0f} s), log {log_file}:\n      " + "\n      ".join(tail))
        return False
    print(f"    done in {seconds:.0f} s", flush=True)
    return True


def run_all(jobs: list, store: str, threads, dry_run: bool) -> int:
    """Run the jobs without a FINISHED run in the store, one at a time; the number that did not finish."""
    runs = stored_runs(store)
    todo = [j for j in jobs if finished(runs, j.name, j.ident) is None]
    print(f"{len(jobs)} runs selected, {len(jobs) - len(todo)} already FINISHED in {store}, {len(todo)} to run")
    failed = 0
    for i, job in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {job.name}: {' '.join(job.ident)}", flush=True)
        if dry_run:
            print("    python " + " ".join(command(job.ident, job.name, store, threads)[1:]))
            continue
        work_dir(store).mkdir(parents=True, exist_ok=True)
        failed += not run_job(job, store, threads, work_dir(store) / "logs")
    return failed
