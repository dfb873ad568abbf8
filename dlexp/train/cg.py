"""Conjugate-gradient training on the full training set (the tutorial's logistic_cg.py).

scipy's nonlinear conjugate gradient minimises

    f(theta) = NLL(theta; train) + l1 * L1 + l2 * L2_sqr

over the flattened parameter vector, with the exact gradient from autograd
computed on the device in batches of ``batch_size``. Each CG iteration counts
as one epoch: the callback measures the validation error, and the test error
of each new best model, as the tutorial does.
"""
import time

import scipy.optimize
import torch
import torch.nn.functional as F

from .metrics import zero_one
from .regularization import penalty
from .result import FitResult


def fit_cg(model, data, optimizer, regularization, max_epochs: int, eval_batch_size: int = 10000,
           callback=None) -> FitResult:
    callback = callback or (lambda event, metrics, step: None)
    params = list(model.parameters())
    x, y, b = data.train.x, data.train.y, optimizer.batch_size
    l1, l2 = regularization.l1, regularization.l2

    def set_flat(theta):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.as_tensor(theta, dtype=params[0].dtype, device=x.device),
                                                params)

    def loss_and_grad(theta):
        set_flat(theta)
        model.zero_grad(set_to_none=True)
        total = torch.zeros((), device=x.device)
        for i in range(0, len(x), b):
            batch = F.cross_entropy(model(x[i:i + b]), y[i:i + b], reduction="sum") / len(x)
            batch.backward()
            total += batch.detach()
        if l1 or l2:
            reg = penalty(model.weights(), l1, l2)
            reg.backward()
            total += reg.detach()
        grad = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros_like(p).flatten()
                          for p in params])
        return total.item(), grad.double().cpu().numpy()

    state = {"best": float("inf"), "best_iter": 0, "test": float("nan"), "it": 0, "theta": None, "t": time.perf_counter()}

    def on_iteration(theta):
        state["it"] += 1
        set_flat(theta)
        valid_error = zero_one(model, data.valid.x, data.valid.y, eval_batch_size).item()
        if valid_error < state["best"]:
            state.update(best=valid_error, best_iter=state["it"], theta=theta.copy(),
                         test=zero_one(model, data.test.x, data.test.y, eval_batch_size).item())
        now = time.perf_counter()
        # one CG iteration is one pass over the training rows
        where = {"epoch": state["it"], "iteration": state["it"], "examples": state["it"] * len(x)}
        callback("validation", {"valid_error": valid_error, "best_valid_error": state["best"],
                                "test_error": state["test"], **where}, state["it"])
        callback("epoch", {"epoch_seconds": now - state["t"], "examples_per_s": len(x) / (now - state["t"]),
                           **where}, state["it"])
        state["t"] = now

    start = time.perf_counter()
    theta0 = torch.nn.utils.parameters_to_vector(params).detach().double().cpu().numpy()
    model.train()
    res = scipy.optimize.minimize(loss_and_grad, theta0, jac=True, method="CG", callback=on_iteration,
                                  options={"maxiter": max_epochs, "gtol": 1e-10})
    set_flat(state["theta"] if state["theta"] is not None else res.x)
    model.eval()
    return FitResult(best_valid_error=state["best"], test_error=state["test"], best_iter=state["best_iter"],
                     epochs=state["it"], iterations=state["it"], train_seconds=time.perf_counter() - start)
