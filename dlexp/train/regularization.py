"""L1 / L2 weight penalties, as in the tutorials' mlp.py:

    cost = NLL + l1 * L1 + l2 * L2_sqr,   L1 = sum_W sum |W|,   L2_sqr = sum_W sum W^2

over weight matrices only (biases are not penalised). For speed the trainer
does not differentiate the penalty through autograd: after ``backward()`` on
the NLL it adds the penalty's gradient, l1 * sign(W) + 2 * l2 * W, in place.
"""
import torch


def penalty(weights, l1: float, l2: float) -> torch.Tensor:
    """l1 * sum|W| + l2 * sum W^2 over ``weights``."""
    total = torch.zeros((), device=weights[0].device)
    for w in weights:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + l2 * w.pow(2).sum()
    return total


@torch.no_grad()
def add_penalty_grad(weights, l1: float, l2: float) -> None:
    """w.grad += d penalty / dw, for every weight with a gradient."""
    for w in weights:
        if l2:
            w.grad.add_(w, alpha=2.0 * l2)
        if l1:
            w.grad.add_(torch.sign(w), alpha=l1)
