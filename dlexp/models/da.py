"""Denoising autoencoder with tied weights (the tutorial's dA.py).

The input x in [0, 1]^d is corrupted by masking noise, x~ = x * m with
m_k ~ Bernoulli(1 - corruption_level), then encoded and decoded:

    y = s(W x~ + b)              (hidden code, s = sigmoid)
    z = s(W' y + b'),  W' = W^T  (reconstruction, tied weights)
    L_H(x, z) = -sum_k [x_k log z_k + (1 - x_k) log(1 - z_k)]

and SGD minimises the mean of L_H over a minibatch. The reconstruction is
compared with the clean x, so the code must undo the corruption. W is drawn
from U[-a, a], a = 4 sqrt(6 / (n_visible + n_hidden)); b and b' start at zero.

W is stored as (n_hidden, n_visible), like ``nn.Linear.weight``, so that a
stacked model can hand its sigmoid layer's ``weight`` and ``bias`` to the dA
(the same Parameter objects: pretraining the dA trains the layer).

The gradient of the mean L_H, by hand (:meth:`DenoisingAutoencoder.closed_form`, the
step's fast path), with a = W x~ + b and z = s(W^T y + b'):

    dz = z - x,   da = (dz W^T) * y (1 - y)                       (n times dL/d logits)
    dL/dW = (da^T x~ + y^T dz) / n,   dL/db = mean da,   dL/db' = mean dz
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check
from .base import PRETRAINING_ONLY, Model, Outer, PretrainConfig, Sum, n_inputs, rows
from .init import glorot_uniform_
from .registry import register


def check_corruption(key: str, value: float) -> None:
    check(0 <= value < 1, key, value, "must be in [0, 1)")


def cross_entropy_of_logits(logits, x):
    """sum -[x log s(a) + (1 - x) log(1 - s(a))] = sum (softplus(a) - x a) (the value of
    ``binary_cross_entropy_with_logits(a, x, reduction="sum")``, in three kernels instead of about ten)."""
    return torch.addcmul(F.softplus(logits), x, logits, value=-1.0).sum()


@dataclass
class DAConfig(PretrainConfig):
    """Denoising autoencoder with tied weights (dA.py): lr 0.1, batch 20, 15 epochs (PretrainConfig's)."""

    name: str = "da"
    n_hidden: int = 500
    corruption_level: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_hidden >= 1, "model.n_hidden", self.n_hidden, "must be >= 1")
        check_corruption("model.corruption_level", self.corruption_level)


def tied_autoencoder_params(module: nn.Module, n_visible: int, n_hidden: int, W=None, bhid=None) -> None:
    """Register W (n_hidden, n_visible), b (n_hidden) and b_prime (n_visible) on ``module``."""
    if W is None:
        W = nn.Parameter(torch.empty(n_hidden, n_visible))
        glorot_uniform_(W, n_visible, n_hidden, gain=4.0)
    if bhid is None:
        bhid = nn.Parameter(torch.zeros(n_hidden))
    if tuple(W.shape) != (n_hidden, n_visible) or tuple(bhid.shape) != (n_hidden,):
        raise ValueError(f"W must be ({n_hidden}, {n_visible}) and bhid ({n_hidden},), "
                         f"got {tuple(W.shape)} and {tuple(bhid.shape)}")
    module.n_visible, module.n_hidden = n_visible, n_hidden
    module.W = W if isinstance(W, nn.Parameter) else nn.Parameter(W)
    module.b = bhid if isinstance(bhid, nn.Parameter) else nn.Parameter(bhid)
    module.b_prime = nn.Parameter(torch.zeros(n_visible, device=module.W.device, dtype=module.W.dtype))


@register
class DenoisingAutoencoder(Model):
    Config = DAConfig
    supervised = False
    ignores = PRETRAINING_ONLY

    def __init__(self, n_visible: int, n_hidden: int, corruption_level: float = 0.0, W=None, bhid=None):
        super().__init__()
        if not 0 <= corruption_level < 1:
            raise ValueError(f"corruption_level={corruption_level!r} must be in [0, 1)")
        self.corruption_level = corruption_level
        tied_autoencoder_params(self, n_visible, n_hidden, W, bhid)

    @classmethod
    def build(cls, cfg, image_shape, n_classes):
        return cls(n_inputs(image_shape), cfg.n_hidden, cfg.corruption_level)

    def corrupt(self, x):
        """Masking noise: keep each x_k with probability 1 - corruption_level, else set it to 0."""
        if self.corruption_level == 0:
            return x
        return x * (torch.rand_like(x) >= self.corruption_level).to(x.dtype)

    def encode(self, x):
        """y = s(W x + b): the clean, deterministic code."""
        return torch.sigmoid(F.linear(x.flatten(1), self.W, self.b))

    def decode_logits(self, h):
        return F.linear(h, self.W.t(), self.b_prime)

    def decode(self, h):
        """z = s(W^T y + b')."""
        return torch.sigmoid(self.decode_logits(h))

    def pretrain_loss(self, x):
        """mean over the batch of L_H(x, z), z reconstructed from x~; from the logits for stability."""
        x = x.flatten(1)
        logits = self.decode_logits(self.encode(self.corrupt(x)))
        loss = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
        return loss, {"cost": loss.detach()}

    def closed_form(self, objective):
        return self.pretrain_grads() if objective == "pretrain" else None

    def pretrain_grads(self):
        """fn(x, y=None): ``pretrain_loss(x)`` (the same corruption draws) and its gradient (the equations
        above)."""
        W, b, b_prime = self.W, self.b, self.b_prime

        def grads(x, y=None):
            x = rows(x)
            level = self.corruption_level
            # corrupt(x) in place: the same draw, mask and products, in three kernels instead of four
            xc = torch.rand_like(x).ge_(level).mul_(x) if level else x
            Wt = W.t()
            h = torch.addmm(b, xc, Wt).sigmoid_()
            logits = torch.addmm(b_prime, h, W)
            s = 1.0 / len(x)
            loss = cross_entropy_of_logits(logits, x).mul_(s)
            dz = logits.sigmoid_().sub_(x)
            da = torch.ops.aten.sigmoid_backward.default(torch.mm(dz, Wt), h)
            return {"cost": loss}, [(W, [Outer(da, xc, s), Outer(h, dz, s)]), (b, Sum(da, s)), (b_prime, Sum(dz, s))]

        return grads

    def pretrain_layers(self):
        return [self]

    def weights(self):
        return [self.W]

    def filters(self):
        """One row per hidden unit, in input space: (n_hidden, n_visible)."""
        return self.W

    @torch.no_grad()
    def pictures(self, x):
        """The first 10 inputs x, their corruption x~ and its reconstruction z, one row of 10 each."""
        inputs = x[:10]
        noisy = self.corrupt(inputs)
        tiles = torch.cat([inputs, noisy, self.decode(self.encode(noisy))]).cpu().numpy()
        return {"reconstructions": (tiles, (3, 10))}
