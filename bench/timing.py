"""Timing that notices other processes: best of several repetitions, each tagged with foreign CPU load.

The machine this runs on may be shared. For every repetition we read the
system-wide busy CPU time (/proc/stat) and this process's own CPU time
(/proc/self/stat, all threads); what the machine spent beyond our own use,
as a fraction of (wall time x CPUs), is the *foreign load* during the
repetition. A repetition with foreign load above ``max_foreign`` is
discarded (up to a retry budget), so the figures come from quiet moments.
"""
import os
import time

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _system_busy():
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except OSError:
        return None
    return sum(v) - v[3] - v[4]  # all but idle and iowait, in ticks


def _own_cpu():
    try:
        with open("/proc/self/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])  # utime + stime, ticks, all threads
    except (OSError, IndexError, ValueError):
        return None


def n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def idle_fraction(seconds: float = 0.5) -> float:
    """Fraction of the machine's CPU time that was idle over ``seconds`` (1.0 where /proc is missing)."""
    a = _system_busy()
    time.sleep(seconds)
    b = _system_busy()
    if a is None or b is None:
        return 1.0
    return max(0.0, 1.0 - (b - a) / (seconds * _TICK * n_cpus()))


def wait_quiet(min_idle: float = 0.85, timeout: float = 30.0) -> float:
    """Wait (up to ``timeout`` s) until the machine is mostly idle; returns the idle fraction seen last."""
    deadline = time.monotonic() + timeout
    idle = idle_fraction()
    while idle < min_idle and time.monotonic() < deadline:
        idle = idle_fraction()
    return idle


class Sample:
    __slots__ = ("seconds", "foreign")

    def __init__(self, seconds, foreign):
        self.seconds, self.foreign = seconds, foreign


def measure(fn, reps: int = 3, max_foreign: float = 0.10, max_tries: int = 8, sync=None) -> Sample:
    """Run ``fn()`` ``reps`` times (more if others load the CPU); the fastest quiet repetition.

    Returns a Sample with seconds (one call of fn) and the foreign load seen during it.
    """
    quiet, noisy = [], []
    tries = 0
    while len(quiet) < reps and tries < max_tries:
        tries += 1
        b0, c0 = _system_busy(), _own_cpu()
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        dt = time.perf_counter() - t0
        b1, c1 = _system_busy(), _own_cpu()
        if None in (b0, b1, c0, c1):
            foreign = 0.0
        else:
            foreign = max(0.0, ((b1 - b0) - (c1 - c0)) / (_TICK * n_cpus() * max(dt, 1e-9)))
        (quiet if foreign <= max_foreign else noisy).append(Sample(dt, foreign))
    pool = quiet or noisy
    return min(pool, key=lambda s: s.seconds)


def json_result(cmd, prefix: str, timeout: float, **kw) -> dict:
    """Run ``cmd``; the JSON after ``prefix`` on its last such stdout line, or {'error': ...}."""
    import json
    import subprocess

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(prefix):
            return json.loads(line[len(prefix):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}
