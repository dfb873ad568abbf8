"""How torch's CPU threads wait for work: briefly, so a busy machine does not stall them.

torch's CPU kernels (its own and MKL's) run on GNU OpenMP threads in the Linux wheels (elsewhere torch may ship
LLVM's OpenMP, which does not read ``GOMP_SPINCOUNT``: setting it there changes nothing). Between two parallel
regions a thread spins before it sleeps, by default ``GOMP_SPINCOUNT`` = 300,000 turns (~0.1-1 ms). On a machine
whose cores are busy with other processes (another run, a sweep's jobs, a build) the threads of one region wait
at its barrier for a thread that has no core, spinning the time slice away: a minibatch of 20 then costs
scheduler ticks, not microseconds. Measured on 2 cores (``python -m bench.contention`` prints it side by side):
beside one other dlexp run a core, the tutorial's mlp on digits 0.099 -> 0.042 s an epoch and logreg 0.021 ->
0.002 s; beside the two 1-thread DBN runs of bench.fidelity, the mlp 2.7-2.9 -> 0.11 s and an MNIST mlp epoch of
5,000 rows 12.8 -> 0.76 s. On idle cores 3,000 turns is as fast as the default (1,000 was 2-40 % slower there,
``OMP_WAIT_POLICY=PASSIVE`` up to 2-4x slower on the mlps).

:func:`wait_briefly` sets ``GOMP_SPINCOUNT`` = :data:`SPINCOUNT` for this process and the processes it
starts, unless the user set it or ``OMP_WAIT_POLICY``; libgomp reads it when it loads, so the commands call
it before they import torch (where torch is loaded already, e.g. ``dlexp.cli.main`` called from Python, it
sets nothing: it could not apply). It changes no result, only how long an idle thread spins.
"""
import os
import sys

SPINCOUNT = "3000"
USER_KEYS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def wait_briefly() -> None:
    """``GOMP_SPINCOUNT=3000`` unless the user chose how OpenMP threads wait (before torch is imported)."""
    if "torch" not in sys.modules and not any(key in os.environ for key in USER_KEYS):
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT


def describe() -> str:
    """The run's CPU threads for its tags: ``2 (GOMP_SPINCOUNT=3000)``."""
    import torch

    how = ", ".join(f"{k}={os.environ[k]}" for k in USER_KEYS if k in os.environ) or "libgomp's default spin"
    return f"{torch.get_num_threads()} ({how})"
