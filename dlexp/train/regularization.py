"""L1 / L2 weight penalties, as in the tutorials' mlp.py:

    cost = NLL + l1 * L1 + l2 * L2_sqr,   L1 = sum_W sum |W|,   L2_sqr = sum_W sum W^2

over weight matrices only (biases are not penalised). The trainer does not
differentiate the penalty through autograd: its update adds the penalty's
gradient, l1 * sign(W) + 2 * l2 * W, to the NLL's (``dlexp.train.step.sgd_update``).
This value is what the run logs as ``penalty``.
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

