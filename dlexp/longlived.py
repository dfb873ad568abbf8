"""What a dlexp process keeps until it exits, moved out of the garbage collector's sight.

A sweep's process imports torch, MLflow, SQLAlchemy, Hydra, PIL and matplotlib: ~0.5 million objects
(modules, classes, functions, caches) that live until it exits. Python's full collection walks every
one of them (0.3-0.4 s each on a 2-core machine) and ran about once every three jobs of a serial
sweep, ~0.1 s a job. ``gc.freeze()`` moves every object alive into the permanent generation, which
collections skip; objects made later are collected as before.

:func:`freeze_long_lived` is called by the ``dlexp`` command once Hydra and torch are imported, once
a sweep's parent run is open (MLflow and the store) and at the start of every job, and freezes at
its first four calls: a single run freezes twice (at its start and at its job's), a sweep four
times (the last, at the second job's start: what the first job imported on the way -- MLflow's
model code, PIL's plugins -- and the pictures' imports). Later jobs import nothing new that stays
(MLflow loads the model's code as a new module each time; that is not frozen), so from then on the
garbage of every job is collected as usual. What is frozen is never collected: at most the cyclic
garbage alive at those moments (~2,000 small objects in a sweep of digits runs). Measured
(bench/SWEEPS.md): a sweep's overhead a job 0.31 -> 0.17 s, one run's wall 6.2 -> 5.7 s.
"""
import gc

FREEZES = 4
_calls = 0


def freeze_long_lived() -> bool:
    """Freeze every object alive at the first ``FREEZES`` calls of this process; whether it froze."""
    global _calls
    _calls += 1
    if _calls > FREEZES:
        return False
    gc.freeze()
    return True
