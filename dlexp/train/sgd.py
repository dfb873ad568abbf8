"""Minibatch stochastic gradient descent (MSGD), the tutorials' training loop.

Each step takes minibatch ``i`` of the device-resident training split (an
index slice: no host copies; see :mod:`dlexp.data.device` for chunked data),
computes the mean NLL ``-mean(log p(y | x))`` and its gradient, and updates
``W <- W - lr * (g + l1 sign(W) + 2 l2 W)`` (with momentum if set; see
:func:`dlexp.train.step.sgd_update`). The training NLL is summed on the device
and read only at validation time, so the loop never waits on the device
between steps. Validation and the test error of each new best model follow
the early-stopping rule. Position, shuffling, checkpoints and stop requests
are :class:`dlexp.train.loop.Loop`'s; NaN/Inf in the loss or parameters is
caught at validation (and checkpoint) time and raises :class:`Diverged`.
"""
import math

import torch
import torch.nn.functional as F

from ..data.device import DeviceSplit
from .accel import conv_layout
from .early_stopping import build_stopper
from .loop import Loop, LoopOptions
from .metrics import zero_one
from .regularization import penalty
from .result import Diverged, FitResult
from .schedules import build_schedule
from .state import polling, to_torch
from .step import SGDStep, autocast_dtype


def _split(data):
    """The training split as a DeviceSplit (any object with x and y)."""
    split = data.train
    return split if isinstance(split, DeviceSplit) else DeviceSplit(split.x, split.y)


def all_finite(tensors) -> bool:
    """One host sync for all ``tensors``."""
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all().item())


class _Fit:
    """The state of one MSGD fit: model, step, stopping rule, schedule, best model, loop."""

    def __init__(self, model, data, optimizer, regularization, early_stopping, max_epochs, options, state):
        device = next(model.parameters()).device
        self.model, self.data, self.options, self.reg = model, data, options, regularization
        split = _split(data)
        self.stopper = build_stopper(early_stopping, len(split) // optimizer.batch_size)
        self.schedule = build_schedule(optimizer)
        self.amp = autocast_dtype(options.precision, device)
        cuda_graphs = options.cuda_graphs
        if cuda_graphs is None:
            cuda_graphs = device.type == "cuda" and optimizer.batch_size <= 256 and not options.compile
        self.step = SGDStep(model, lambda xb, yb: F.cross_entropy(model(xb), yb), list(model.parameters()),
                            model.weights(), lr=self.schedule.lr, momentum=optimizer.momentum,
                            l1=regularization.l1, l2=regularization.l2, compile=options.compile, autocast=self.amp,
                            cuda_graph=cuda_graphs, functional=True, objective="nll")
        self.best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.test_error, self.since_validation = float("nan"), 0
        if state is not None:
            model.load_state_dict(to_torch(state["model"], device))
            self.best = to_torch(state["best"], device)
            self.step.load_state_dict(to_torch(state["step"], device))
            self.stopper.load_state_dict(state["stopper"])
            self.schedule.load_state_dict(state["schedule"])
            self.test_error = state["position"]["test_error"]
            self.since_validation = state["position"]["since_validation"]
        self.loop = Loop(split, optimizer.batch_size, max_epochs, options, self.snapshot, state)

    def diverged(self, it, what, epoch=None):
        self.model.load_state_dict(self.best)
        where = f"iteration {it + 1} (" + (f"epoch {epoch}, " if epoch else "") + f"lr={self.schedule.lr:g})"
        return Diverged(f"training diverged at {where}: {what}", self.stopper.best, self.test_error)

    def snapshot(self) -> dict:
        if not all_finite(list(self.model.parameters())):
            raise self.diverged(self.loop.pos["it"], "parameters are NaN/Inf")
        self.loop.pos.update(test_error=self.test_error, since_validation=self.since_validation)
        return {"phase": "finetune", "model": self.model.state_dict(), "best": self.best,
                "step": self.step.state_dict(), "stopper": self.stopper.state_dict(),
                "schedule": self.schedule.state_dict()}

    def validate(self, it, epoch, callback) -> None:
        model, data, b = self.model, self.data, self.options.eval_batch_size
        model.eval()
        train_nll = self.step.read_loss() / self.since_validation
        if not math.isfinite(train_nll) or not all_finite(list(model.parameters())):
            what = f"train NLL {train_nll}" if not math.isfinite(train_nll) else "parameters are NaN/Inf"
            raise self.diverged(it, what, epoch)
        valid_error = zero_one(model, data.valid.x, data.valid.y, b, self.amp).item()
        improved = self.stopper.update(it, valid_error)
        if improved:
            self.test_error = zero_one(model, data.test.x, data.test.y, b, self.amp).item()
            self.best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        metrics = {"train_nll": train_nll, "valid_error": valid_error, "best_valid_error": self.stopper.best,
                   "test_error": self.test_error, "lr": self.schedule.lr, **self.loop.where()}
        if self.reg.l1 or self.reg.l2:
            metrics["penalty"] = penalty(model.weights(), self.reg.l1, self.reg.l2).item()
        callback("validation", metrics, it + 1)
        self.step.set_lr(self.schedule.on_validation(improved))
        self.since_validation = 0
        model.train()


def fit_sgd(model, data, optimizer, regularization, early_stopping, max_epochs: int,
            options: LoopOptions = None, callback=None, state=None) -> FitResult:
    """Train ``model`` on ``data`` (a DeviceData); ``callback(event, metrics, step)`` sees progress.

    ``options`` (:class:`LoopOptions`): shuffling, checkpoints, stop requests,
    compile / precision / CUDA graphs. ``state``: a state handed to
    ``options.on_checkpoint`` earlier, to continue from: the run then ends
    exactly as if it had never stopped. Raises :class:`Diverged` (with the
    best model loaded) on NaN/Inf.
    """
    callback = callback or (lambda event, metrics, step: None)
    options = options or LoopOptions()
    device = next(model.parameters()).device
    with conv_layout(model, device), polling(options.stop):
        fit = _Fit(model, data, optimizer, regularization, early_stopping, max_epochs, options, state)
        loop, stopper, b = fit.loop, fit.stopper, optimizer.batch_size
        for epoch in loop.epochs():
            model.train()
            for xb, yb in loop.batches():
                it = loop.pos["it"]
                fit.step(xb, yb)
                fit.since_validation += 1
                if stopper.due(it):
                    fit.validate(it, epoch, callback)
                if stopper.stop(it):
                    break
            done_in_epoch = loop.pos["batch"]
            fit.step.set_lr(fit.schedule.on_epoch_end(epoch))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = loop.epoch_seconds()
            callback("epoch", {"epoch_seconds": seconds, "examples_per_s": done_in_epoch * b / seconds,
                               **loop.where()}, epoch)
            if stopper.stop(loop.pos["it"]):
                break
    model.load_state_dict(fit.best)
    model.eval()
    return FitResult(best_valid_error=stopper.best, test_error=fit.test_error, best_iter=stopper.best_iter + 1,
                     epochs=loop.pos["epoch"], iterations=loop.pos["it"] + 1, train_seconds=loop.seconds())
