"""Minibatch stochastic gradient descent (MSGD), the tutorials' training loop.

Each step takes minibatch ``i`` of the device-resident training split (an
index slice: no host copies; see :mod:`dlexp.data.device` for chunked data),
computes the mean NLL, its gradient, adds the L1/L2 penalty gradient and
updates W <- W - lr * grad (with momentum if set). The training NLL is summed
on the device and read only at validation time, so the loop never waits on
the device between steps. Validation and the test error of each new best
model follow the early-stopping rule.

The step itself is :class:`dlexp.train.step.SGDStep`. Every
``checkpoint_every`` iterations the loop hands its whole state (parameters,
momentum, schedule, early-stopping rule, position, random generators) to
``on_checkpoint``; given such a state it continues where it stopped, with
the same result as an uninterrupted run. NaN/Inf in the loss or parameters
is caught at validation time and raises :class:`Diverged`.
"""
import math
import time

import torch
import torch.nn.functional as F

from .early_stopping import build_stopper
from .metrics import zero_one
from .regularization import penalty
from .result import Diverged, FitResult
from .schedules import build_schedule
from .state import epoch_permutation, polling, rng_state, set_rng_state, to_torch
from .step import SGDStep, autocast_dtype, conv_layout


def _nll(model):
    return lambda xb, yb: F.cross_entropy(model(xb), yb)


def _split(data):
    """The training split as a DeviceSplit (any object with x, y and, optionally, batches())."""
    split = data.train
    if hasattr(split, "batches"):
        return split
    from ..data.device import DeviceSplit

    return DeviceSplit(split.x, split.y)


def all_finite(tensors) -> bool:
    """One host sync for all ``tensors``."""
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all().item())


def fit_sgd(model, data, optimizer, regularization, early_stopping, max_epochs: int,
            shuffle: bool = False, eval_batch_size: int = 10000, callback=None, generator=None, *,
            compile: bool = False, precision: str = "fp32", cuda_graphs=None,
            checkpoint_every: int = 0, on_checkpoint=None, state=None, stop=None) -> FitResult:
    """Train ``model`` on ``data`` (a DeviceData); ``callback(event, metrics, step)`` sees progress.

    ``compile``: compile the training step with ``torch.compile``. ``precision``:
    ``fp32`` or ``bf16`` (autocast of the forward pass). ``cuda_graphs``: capture
    the step as a CUDA graph (None: on CUDA for batches of at most 256 rows).
    ``on_checkpoint(state)`` receives the whole training state every
    ``checkpoint_every`` iterations (and when ``stop.requested`` is set by a
    signal, before raising KeyboardInterrupt); ``state`` is such a state to
    continue from: the run then ends exactly as if it had never stopped.
    Raises :class:`Diverged` (with the best model loaded) on NaN/Inf.
    """
    callback = callback or (lambda event, metrics, step: None)
    split = _split(data)
    device = next(model.parameters()).device
    b = optimizer.batch_size
    n_batches = len(split) // b
    stopper = build_stopper(early_stopping, n_batches)
    schedule = build_schedule(optimizer)
    weights = model.weights()
    l1, l2 = regularization.l1, regularization.l2
    amp = autocast_dtype(precision, device)
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda" and b <= 256 and not compile
    with conv_layout(model, device), polling(stop):
        step = SGDStep(model, _nll(model), list(model.parameters()), weights,
                       lr=schedule.lr, momentum=optimizer.momentum, l1=l1, l2=l2, compile=compile, autocast=amp,
                       cuda_graph=cuda_graphs, functional=True)
        pos = {"it": -1, "epoch": 0, "batch": 0, "since_validation": 0, "test_error": float("nan"), "seconds": 0.0}
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if state is not None:
            model.load_state_dict(to_torch(state["model"], device))
            best_state = to_torch(state["best"], device)
            step.load_state_dict(to_torch(state["step"], device))
            stopper.load_state_dict(state["stopper"])
            schedule.load_state_dict(state["schedule"])
            pos.update(state["position"])
            set_rng_state(state["rng"])

        def snapshot(epoch_generator):
            if not all_finite(list(model.parameters())):
                model.load_state_dict(best_state)
                raise Diverged(f"training diverged at iteration {pos['it'] + 1} (lr={schedule.lr:g}): "
                               "parameters are NaN/Inf", stopper.best, pos["test_error"])
            return {"phase": "finetune", "position": dict(pos), "model": model.state_dict(), "best": best_state,
                    "step": step.state_dict(), "stopper": stopper.state_dict(), "schedule": schedule.state_dict(),
                    "rng": {**rng_state(), "generator": epoch_generator}}

        start = time.perf_counter() - pos["seconds"]
        done = False
        while (pos["epoch"] < max_epochs or pos["batch"] > 0) and not done:
            if pos["batch"] == 0:
                pos["epoch"] += 1
            epoch = pos["epoch"]
            t_epoch = time.perf_counter()
            perm, epoch_generator = epoch_permutation(len(split), shuffle, generator,
                                                      state and state["rng"].get("generator"), split.x.device)
            state = None
            model.train()
            i = -1
            for i, (xb, yb) in enumerate(split.batches(b, perm, n_batches)):
                if i < pos["batch"]:
                    continue  # resumed in the middle of this epoch
                pos["it"] += 1
                pos["batch"] = i + 1
                it = pos["it"]
                step(xb, yb)
                pos["since_validation"] += 1
                if stopper.due(it):
                    model.eval()
                    train_nll = step.read_loss() / pos["since_validation"]
                    if not math.isfinite(train_nll) or not all_finite(list(model.parameters())):
                        model.load_state_dict(best_state)
                        what = (f"train NLL {train_nll}" if not math.isfinite(train_nll)
                                else "parameters are NaN/Inf")
                        raise Diverged(f"training diverged at iteration {it + 1} (epoch {epoch}, "
                                       f"lr={schedule.lr:g}): {what}", stopper.best, pos["test_error"])
                    valid_error = zero_one(model, data.valid.x, data.valid.y, eval_batch_size, amp).item()
                    improved = stopper.update(it, valid_error)
                    if improved:
                        pos["test_error"] = zero_one(model, data.test.x, data.test.y, eval_batch_size, amp).item()
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    metrics = {"train_nll": train_nll, "valid_error": valid_error, "best_valid_error": stopper.best,
                               "test_error": pos["test_error"], "lr": schedule.lr, "epoch": epoch}
                    if l1 or l2:
                        metrics["penalty"] = penalty(weights, l1, l2).item()
                    callback("validation", metrics, it + 1)
                    step.set_lr(schedule.on_validation(improved))
                    pos["since_validation"] = 0
                    model.train()
                if stopper.stop(it):
                    done = True
                    break
                interrupted = stop is not None and stop.requested
                if on_checkpoint is not None and ((checkpoint_every and (it + 1) % checkpoint_every == 0)
                                                  or interrupted):
                    pos["seconds"] = time.perf_counter() - start
                    on_checkpoint(snapshot(epoch_generator))
                if interrupted:
                    raise KeyboardInterrupt(f"stopped at iteration {it + 1}, state saved")
            pos["batch"] = 0
            step.set_lr(schedule.on_epoch_end(epoch))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t_epoch
            callback("epoch", {"epoch_seconds": seconds, "examples_per_s": (i + 1) * b / seconds}, epoch)
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_valid_error=stopper.best, test_error=pos["test_error"], best_iter=stopper.best_iter + 1,
                     epochs=pos["epoch"], iterations=pos["it"] + 1, train_seconds=time.perf_counter() - start)
