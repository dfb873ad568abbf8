"""The SGD update for gradients in closed form (a model's :meth:`~dlexp.models.base.Model.closed_form`).

The rule is :func:`dlexp.train.step.sgd_update`'s, for every parameter p with gradient g
(weights W: the first ``n_weights`` parameters):

    d = g + l1 sign(W) + 2 l2 W,   b <- m b + d, d = b (momentum m),   p <- p - lr d

but a gradient may be an :class:`~dlexp.models.base.Outer` ``alpha a^T b`` or a
:class:`~dlexp.models.base.Sum` ``alpha sum_n a_n`` (or a sum of them and dense tensors), never
formed: each term goes into the parameter (or its momentum buffer) with one in-place GEMM
(``addmm_``; GEMV, ``addmv_``, for a Sum), the decay folded into its ``beta``, and Outer terms of a
few rows (batch 1) stacked into one GEMM, so the weight is read and written once:

    no momentum:   W <- (1 - 2 lr l2) W - lr alpha a^T b - lr l1 sign(W)     (addmm_, beta = 1 - 2 lr l2)
    momentum:      B <- m B + alpha a^T b + 2 l2 W + l1 sign(W);  W <- W - lr B  (addmm_, beta = m)

Dense gradients of unpenalised tensors (biases) take one multi-tensor kernel for all. A learning
rate held in a tensor (a CUDA graph reads it at replay) cannot be a GEMM's alpha: then the
step forms the gradients (:func:`dense`) and applies the plain rule.
"""
import torch

from ..models.base import Outer, Sum

MERGE_ROWS = 10  # Outer terms of at most this many rows are stacked into one GEMM (one pass over the weight)
_ones = {}


def terms(g) -> list:
    """A gradient as the list of its terms (tensors, Outers, Sums)."""
    if type(g) in (Outer, Sum) or isinstance(g, torch.Tensor):
        return [g]
    return g if type(g) is list else list(g)


def dense(g) -> torch.Tensor:
    """A gradient formed as one tensor."""
    total = None
    for t in terms(g):
        if isinstance(t, Outer):
            t = torch.mm(t.a.t(), t.b).mul_(t.alpha)
        elif isinstance(t, Sum):
            t = t.a.sum(0).mul_(t.alpha)
        total = t if total is None else total + t
    return total


def ones(n, like) -> torch.Tensor:
    key = (n, like.dtype, like.device)
    if key not in _ones:
        _ones[key] = torch.ones(n, dtype=like.dtype, device=like.device)
    return _ones[key]


def _merged(ts) -> list:
    """Outer terms of few rows stacked into one: sum_i alpha_i a_i^T b_i = alpha_0 [a_i alpha_i / alpha_0]^T [b_i]."""
    outers = [t for t in ts if isinstance(t, Outer)]
    if len(outers) < 2 or any(t.a.shape[0] > MERGE_ROWS for t in outers):
        return ts
    alpha = outers[0].alpha
    a = torch.cat([t.a if t.alpha == alpha else t.a * (t.alpha / alpha) for t in outers])
    return [Outer(a, torch.cat([t.b for t in outers]), alpha)] + [t for t in ts if not isinstance(t, Outer)]


def _add_into(target, ts, beta: float, scale: float) -> None:
    """target <- beta target + scale * (sum of the terms ts), in place."""
    first = True
    for t in _merged(ts) if len(ts) > 1 else ts:
        b = beta if first else 1.0
        kind = type(t)
        if kind is Outer:
            target.addmm_(t.a.t(), t.b, beta=b, alpha=scale * t.alpha)
        elif kind is Sum:
            if t.a.shape[0] == 1:
                if b != 1.0:
                    target.mul_(b)
                target.add_(t.a[0], alpha=scale * t.alpha)
            else:
                target.addmv_(t.a.t(), ones(t.a.shape[0], t.a), beta=b, alpha=scale * t.alpha)
        else:
            if b != 1.0:
                target.mul_(b)
            target.add_(t, alpha=scale)
        first = False


def update(params, grads, lr, n_weights=0, l1=0.0, l2=0.0, momentum=0.0, bufs=()) -> None:
    """The rule above for ``params`` and their closed-form ``grads`` (same order), under ``torch.no_grad``;
    ``lr`` a float (a tensor learning rate takes :func:`dense` gradients and the plain update)."""
    signs = torch._foreach_sign(params[:n_weights]) if (l1 and n_weights) else None
    if momentum:
        for i, (b, g) in enumerate(zip(bufs, grads)):
            _add_into(b, terms(g), momentum, 1.0)
            if i < n_weights:
                if l2:
                    b.add_(params[i], alpha=2.0 * l2)
                if l1:
                    b.add_(signs[i], alpha=l1)
        torch._foreach_add_(params, bufs, alpha=-lr)
        return
    plain_p, plain_g = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        if i < n_weights:
            _add_into(p, terms(g), 1.0 - 2.0 * lr * l2, -lr)
            if l1:
                p.add_(signs[i], alpha=-lr * l1)
        elif isinstance(g, torch.Tensor):
            plain_p.append(p)
            plain_g.append(g)
        else:
            _add_into(p, terms(g), 1.0, -lr)
    if plain_p:
        torch._foreach_add_(plain_p, plain_g, alpha=-lr)
