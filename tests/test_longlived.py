"""The objects a process keeps are frozen out of the garbage collector's walks; a sweep's later
garbage is still collected (dlexp.longlived; the time it saves is bench.sweep_overhead's)."""
import subprocess
import sys

PROBE = """
import gc, weakref
from dlexp.longlived import FREEZES, freeze_long_lived

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

kept = [Node() for _ in range(1000)]
froze = [freeze_long_lived() for _ in range(FREEZES)]
frozen = gc.get_freeze_count()
later = cycle()          # a job's cyclic garbage, made after the freezes
froze.append(freeze_long_lived())
gc.collect()
print(froze == [True] * FREEZES + [False], frozen >= 1000, gc.get_freeze_count() == frozen, later() is None)
"""


def test_the_first_calls_freeze_and_later_garbage_is_collected():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True"] * 4  # froze at the first calls only; kept frozen; nothing more; collected
