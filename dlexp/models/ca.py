"""Contractive autoencoder with tied weights (the tutorial's cA.py).

No corruption; the code is made insensitive to the input by penalising the
Frobenius norm of the encoder's Jacobian J(x) = dh / dx:

    h = s(W x + b),   z = s(W^T h + b')
    L_H(x, z) = -sum_k [x_k log z_k + (1 - x_k) log(1 - z_k)]
    ||J(x)||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2      (sigmoid encoder)
    cost = mean_x L_H(x, z) + contraction_level * mean_x ||J(x)||_F^2

W (n_hidden, n_visible) is drawn from U[-a, a], a = 4 sqrt(6 / (n_visible +
n_hidden)); b and b' start at zero.

The gradient by hand (:meth:`ContractiveAutoencoder.closed_form`, the step's fast path), with
q = (h (1 - h))^2 and r_j = sum_i W_ji^2 (so ||J(x)||_F^2 = q . r), dz = z - x, c = contraction_level:

    da = (dz W^T) * h (1 - h) + 2 c r q (1 - 2 h)                 (n times dcost/da, a = W x + b)
    dcost/dW = (da^T x + h^T dz) / n + 2 c diag(mean_n q) W,   dcost/db = mean da,   dcost/db' = mean dz
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checks import check, non_negative
from .base import Outer, PretrainConfig, Sum, n_inputs
from .da import DenoisingAutoencoder, cross_entropy_of_logits
from .registry import register


@dataclass
class CAConfig(PretrainConfig):
    """Contractive autoencoder (cA.py): reconstruction + contraction_level * ||J||_F^2."""

    name: str = "ca"
    pretrain_lr: float = 0.01
    pretrain_epochs: int = 20
    pretrain_batch_size: int = 10
    n_hidden: int = 500
    contraction_level: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_hidden >= 1, "model.n_hidden", self.n_hidden, "must be >= 1")
        non_negative("model.contraction_level", self.contraction_level)


@register
class ContractiveAutoencoder(DenoisingAutoencoder):
    """A dA without corruption whose cost adds the contraction penalty."""

    Config = CAConfig

    def __init__(self, n_visible: int, n_hidden: int, contraction_level: float = 0.1, W=None, bhid=None):
        super().__init__(n_visible, n_hidden, 0.0, W, bhid)
        if contraction_level < 0:
            raise ValueError(f"contraction_level={contraction_level!r} must be >= 0")
        self.contraction_level = contraction_level

    @classmethod
    def build(cls, cfg, image_shape, n_classes):
        return cls(n_inputs(image_shape), cfg.n_hidden, cfg.contraction_level)

    def jacobian_norm2(self, h):
        """||J(x)||_F^2 per example from its code h: sum_j (h_j (1 - h_j))^2 ||W_j.||^2."""
        return (h * (1 - h)).square() @ self.W.square().sum(1)

    def pretrain_loss(self, x):
        x = x.flatten(1)
        h = self.encode(x)
        rec = F.binary_cross_entropy_with_logits(self.decode_logits(h), x, reduction="sum") / len(x)
        contraction = self.jacobian_norm2(h).mean()
        loss = rec + self.contraction_level * contraction
        return loss, {"cost": loss.detach(), "reconstruction": rec.detach(), "contraction": contraction.detach()}

    def closed_form(self, objective):
        """Its own: the cA's cost is not the dA's (a closed form serves the class that defines it)."""
        return self.pretrain_grads() if objective == "pretrain" else None

    def pretrain_grads(self):
        """fn(x, y=None): ``pretrain_loss(x)``'s monitors and the cost's gradient (the equations above)."""
        W, b, b_prime = self.W, self.b, self.b_prime

        def grads(x, y=None):
            c = self.contraction_level
            x = x.flatten(1)
            n = len(x)
            h = torch.addmm(b, x, W.t()).sigmoid_()
            logits = torch.addmm(b_prime, h, W)
            rec = cross_entropy_of_logits(logits, x).div_(n)
            s = h * (1 - h)
            q = s.square()
            r = W.square().sum(1)
            contraction = (q @ r).mean()
            loss = rec + c * contraction
            dz = logits.sigmoid_().sub_(x)
            da = torch.mm(dz, W.t()).mul_(s)
            w_terms = [Outer(da, x, 1.0 / n), Outer(h, dz, 1.0 / n)]
            if c:
                w_terms.append(W * q.mean(0).mul_(2 * c).unsqueeze(1))
                da.add_(q.mul_(r).mul_(1 - 2 * h), alpha=2 * c)  # q is not needed any more
            return ({"cost": loss, "reconstruction": rec, "contraction": contraction},
                    [(W, w_terms), (b, Sum(da, 1.0 / n)), (b_prime, Sum(dz, 1.0 / n))])

        return grads
