"""Training state as plain data: everything a killed run needs to continue bit for bit.

A state is a tree of dicts, lists, tuples, numbers, strings and numpy arrays
(tensors converted with :func:`to_numpy`), so it is saved with
``dlexp.safe_pickle.save`` and read back by the restricted unpickler, never by
plain ``pickle.load``. It holds the parameters and buffers (an RBM's
persistent chain included), the optimizer's momentum buffers, the schedule,
the early-stopping rule, the loop counters and every random generator: torch
(CPU and CUDA), numpy, Python's ``random`` and the loop's own shuffling
generator.
"""
import contextlib
import random
import signal
import time

import numpy as np
import torch

from ..interrupt import Stop, remember

SAME_STOP_S = 2.0  # signals this close to the first are the same stop


def to_numpy(tree):
    """Tensors -> numpy arrays, recursively through dicts, lists and tuples."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy().copy()
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_numpy(v) for v in tree)
    return tree


def to_torch(tree, device=None):
    """numpy arrays -> tensors on ``device``, recursively (the inverse of :func:`to_numpy`)."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.array(tree)).to(device) if device is not None else torch.from_numpy(np.array(tree))
    if isinstance(tree, dict):
        return {k: to_torch(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_torch(v, device) for v in tree)
    return tree


def rng_state(generator=None) -> dict:
    state = {
        "torch": torch.get_rng_state().numpy().copy(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": [s.numpy().copy() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state().numpy().copy()
    return state


def set_rng_state(state: dict, generator=None) -> None:
    torch.set_rng_state(torch.from_numpy(np.array(state["torch"])))
    np.random.set_state(tuple(state["numpy"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.from_numpy(np.array(s)) for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.set_state(torch.from_numpy(np.array(state["generator"])))


def epoch_permutation(n: int, shuffle: bool, generator, resumed, device):
    """The epoch's row order (None without ``shuffle``) and the generator state it was drawn from.

    A mid-epoch checkpoint saves that state, and ``resumed`` (the saved state, or
    None) restores it, so a resumed epoch draws the same permutation.
    """
    if not shuffle:
        return None, None
    drawn_from = None
    if generator is not None:
        if resumed is not None:
            generator.set_state(to_torch(resumed))
        drawn_from = generator.get_state()
    perm = torch.randperm(n, generator=generator, device=generator.device if generator is not None else device)
    return perm, drawn_from


class StopRequest:
    """A signal handler (SIGINT, SIGTERM) that lets a training loop stop cleanly.

    While a loop polls (``polling``), a signal only sets ``requested``: the loop
    finishes its step, saves its state and raises KeyboardInterrupt. Anywhere
    else it raises KeyboardInterrupt at once. Signals within :data:`SAME_STOP_S`
    of the first are the same stop sent by several hands (a Ctrl-C reaches every
    process of the terminal's group, and a sweep also passes it on to its
    workers) and are ignored; a later one raises at once.
    """

    def __init__(self):
        self.requested = False
        self.polled = False
        self.first_at = None

    def __call__(self, signum, frame):
        now = time.monotonic()
        if self.first_at is not None and now - self.first_at < SAME_STOP_S:
            return
        first, self.first_at = self.first_at is None, now
        if self.polled and first:
            self.requested = True
            return
        raise remember(Stop(f"signal {signal.Signals(signum).name}"))


@contextlib.contextmanager
def polling(stop):
    """Mark ``stop`` (a StopRequest, or None) as polled by the loop inside the block."""
    if stop is None:
        yield
        return
    stop.polled = True
    try:
        yield
    finally:
        stop.polled = False
