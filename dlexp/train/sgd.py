"""Minibatch stochastic gradient descent (MSGD), the tutorials' training loop.

Each step takes minibatch ``i`` as an index slice of the device-resident
training split (no host copies), computes the mean NLL, back-propagates, adds
the L1/L2 penalty gradient and updates W <- W - lr * grad (with momentum if
set). The training NLL is summed on the device and read only at validation
time, so the loop never waits on the device between steps. Validation and
the test error of each new best model follow the early-stopping rule.
"""
import time

import torch
import torch.nn.functional as F

from .early_stopping import build_stopper
from .metrics import zero_one
from .regularization import add_penalty_grad, penalty
from .result import FitResult
from .schedules import build_schedule


def fit_sgd(model, data, optimizer, regularization, early_stopping, max_epochs: int,
            shuffle: bool = False, eval_batch_size: int = 10000, callback=None, generator=None) -> FitResult:
    """Train ``model`` on ``data`` (a DeviceData); ``callback(event, metrics, step)`` sees progress."""
    callback = callback or (lambda event, metrics, step: None)
    x, y = data.train.x, data.train.y
    b = optimizer.batch_size
    n_batches = len(x) // b
    stopper = build_stopper(early_stopping, n_batches)
    schedule = build_schedule(optimizer)
    opt = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=optimizer.momentum, foreach=True)
    weights = model.weights()
    l1, l2 = regularization.l1, regularization.l2
    test_error = float("nan")
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_sum = torch.zeros((), device=x.device)
    since_validation = 0
    it = -1
    start = time.perf_counter()
    done = False
    epoch = 0
    while epoch < max_epochs and not done:
        epoch += 1
        t_epoch = time.perf_counter()
        if shuffle:
            perm = torch.randperm(len(x), device=x.device, generator=generator)
            xs, ys = x[perm], y[perm]
        else:
            xs, ys = x, y
        model.train()
        for i in range(n_batches):
            it += 1
            loss = F.cross_entropy(model(xs[i * b:(i + 1) * b]), ys[i * b:(i + 1) * b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if l1 or l2:
                add_penalty_grad(weights, l1, l2)
            opt.step()
            train_sum += loss.detach()
            since_validation += 1
            if stopper.due(it):
                model.eval()
                valid_error = zero_one(model, data.valid.x, data.valid.y, eval_batch_size).item()
                improved = stopper.update(it, valid_error)
                if improved:
                    test_error = zero_one(model, data.test.x, data.test.y, eval_batch_size).item()
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                metrics = {
                    "train_nll": train_sum.item() / since_validation,
                    "valid_error": valid_error,
                    "best_valid_error": stopper.best,
                    "test_error": test_error,
                    "lr": schedule.lr,
                    "epoch": epoch,
                }
                if l1 or l2:
                    metrics["penalty"] = penalty(weights, l1, l2).item()
                callback("validation", metrics, it + 1)
                for group in opt.param_groups:
                    group["lr"] = schedule.on_validation(improved)
                train_sum.zero_()
                since_validation = 0
                model.train()
            if stopper.stop(it):
                done = True
                break
        for group in opt.param_groups:
            group["lr"] = schedule.on_epoch_end(epoch)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        seconds = time.perf_counter() - t_epoch
        callback("epoch", {"epoch_seconds": seconds, "examples_per_s": (i + 1) * b / seconds}, epoch)
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_valid_error=stopper.best, test_error=test_error, best_iter=stopper.best_iter + 1,
                     epochs=epoch, iterations=it + 1, train_seconds=time.perf_counter() - start)
