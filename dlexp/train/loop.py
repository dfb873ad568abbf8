"""The resumable minibatch loop shared by fine-tuning (sgd.py) and pretraining (pretrain.py).

    loop = Loop(split, batch_size, epochs, options, snapshot, state)
    for epoch in loop.epochs():          # 1 .. epochs; a resumed loop starts where it stopped
        for xb, yb in loop.batches():    # the epoch's minibatches (shuffled if asked), minus those done
            step(xb, yb)                 # after each body: the checkpoint-and-stop check

The loop owns the position (iteration, epoch, minibatch in the epoch, seconds),
the epoch's row order and the generator state it was drawn from, and the
checkpoint: every ``checkpoint_every`` iterations, and when a signal asked the
run to stop, it hands ``on_checkpoint`` the owner's ``snapshot()`` plus its own
position and every random generator; after a stop request it then raises
KeyboardInterrupt. Given such a state it continues bit for bit.
"""
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..interrupt import Stop
from .state import StopRequest, epoch_permutation, rng_state, set_rng_state


@dataclass
class LoopOptions:
    """How a loop runs, not what it computes (the trainer group and the run's hooks).

    ``shuffle``: a new row order every epoch, from a generator seeded with
    ``seed`` (None: torch's global generator). ``on_checkpoint(state)`` every
    ``checkpoint_every`` iterations (0: only on a stop request). ``stop``: the
    signal flag polled after each step. ``compile``, ``precision``,
    ``cuda_graphs`` (None: automatic) choose the step; ``eval_batch_size`` the
    validation batches.
    """

    shuffle: bool = False
    seed: Optional[int] = None
    checkpoint_every: int = 0
    on_checkpoint: Optional[Callable[[dict], None]] = None
    stop: Optional[StopRequest] = None
    compile: bool = False
    precision: str = "fp32"
    cuda_graphs: Optional[bool] = None
    eval_batch_size: int = 10000


class Loop:
    """Position, epoch order, resume, checkpoint and stop for minibatches of ``split``."""

    def __init__(self, split, batch_size: int, epochs: int, options: LoopOptions, snapshot: Callable[[], dict],
                 state: Optional[dict] = None):
        self.split, self.batch_size, self.n_epochs = split, batch_size, epochs
        self.n_batches = max(1, len(split) // batch_size)
        self.options, self.snapshot = options, snapshot
        self.pos = {"it": -1, "epoch": 0, "batch": 0, "seconds": 0.0, "epoch_start": 0.0}
        self.generator = None
        if options.shuffle and options.seed is not None:
            self.generator = torch.Generator(device=split.x.device).manual_seed(options.seed)
        self._resumed_generator = self.perm = self.epoch_generator = None
        if state is not None:
            self.pos.update(state["position"])
            set_rng_state(state["rng"])
            self._resumed_generator = state["rng"].get("generator")
        self._start = time.perf_counter() - self.pos["seconds"]

    def seconds(self) -> float:
        """Training seconds so far, across a resume."""
        return time.perf_counter() - self._start

    def epoch_seconds(self) -> float:
        return self.seconds() - self.pos["epoch_start"]

    def where(self) -> dict:
        """The position as a curve's step may count it: epoch (from 1), iterations and examples done."""
        done = self.pos["it"] + 1
        return {"epoch": self.pos["epoch"], "iteration": done, "examples": done * self.batch_size}

    def epochs(self):
        """Epoch numbers, the epoch's row order drawn before each; a resumed epoch gets its own order again."""
        while self.pos["epoch"] < self.n_epochs or self.pos["batch"] > 0:
            if self.pos["batch"] == 0:
                self.pos["epoch"] += 1
                self.pos["epoch_start"] = self.seconds()
            self.perm, self.epoch_generator = epoch_permutation(
                len(self.split), self.options.shuffle, self.generator, self._resumed_generator, self.split.x.device)
            self._resumed_generator = None
            yield self.pos["epoch"]
            self.pos["batch"] = 0

    def batches(self):
        """The epoch's minibatches not done yet; after each, checkpoint and stop as asked."""
        pos, stop = self.pos, self.options.stop
        every = self.options.checkpoint_every if self.options.on_checkpoint is not None else 0
        for i, (xb, yb) in enumerate(self.split.batches(self.batch_size, self.perm, self.n_batches)):
            if i < pos["batch"]:
                continue  # resumed in the middle of this epoch
            pos["it"] += 1
            pos["batch"] = i + 1
            yield xb, yb
            interrupted = stop is not None and stop.requested
            if interrupted or (every and (pos["it"] + 1) % every == 0):
                self._checkpoint_and_stop(interrupted)

    def _checkpoint_and_stop(self, interrupted: bool) -> None:
        """The checkpoint due (every ``checkpoint_every`` iterations, or at a stop request), then the stop."""
        if self.options.on_checkpoint is not None:
            self.options.on_checkpoint(self.state())
        if interrupted:
            raise Stop(f"stopped at iteration {self.pos['it'] + 1} (epoch {self.pos['epoch']}), "
                                    "state saved")

    def state(self) -> dict:
        """The owner's snapshot, the position and every random generator (the epoch's as it was drawn)."""
        self.pos["seconds"] = self.seconds()
        return {**self.snapshot(), "position": dict(self.pos),
                "rng": {**rng_state(), "generator": self.epoch_generator}}
