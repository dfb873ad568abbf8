"""Restricted Boltzmann machine with binary units (the tutorial's rbm.py).

Energy and free energy, with visible bias b, hidden bias c and weights W
stored as (n_hidden, n_visible) like ``nn.Linear`` (row j is hidden unit j's
filter; the tutorial's W is ``self.W.T``):

    E(v, h) = -b^T v - c^T h - h^T W v
    F(v)    = -log sum_h exp(-E(v, h)) = -b^T v - sum_j log(1 + exp(c_j + W_j v))

Conditionals, one Gibbs step v -> h -> v':

    p(h_j = 1 | v) = sigmoid(c_j + W_j v),   p(v_i = 1 | h) = sigmoid(b_i + W_{:,i}^T h)

Contrastive divergence (CD-k) approximates the log-likelihood gradient with
the chain end v_k after k Gibbs steps (from h ~ p(h | v0) for CD, from the
persistent chain for PCD, Tieleman 2008):

    -d log p(v0) / d theta ~= dF(v0)/d theta - dF(v_k)/d theta

so SGD on ``loss = mean F(v0) - mean F(v_k)`` (v_k a constant) moves
W += lr * (mean[p(h|v0) v0^T] - mean[p(h|v_k) v_k^T]),
b += lr * mean(v0 - v_k), c += lr * mean(p(h|v0) - p(h|v_k)).

:meth:`RBM.closed_form` is that update without autograd (the step's fast path):
p(h|v_k) is the chain's last hidden mean, so no free energy is differentiated,
and the chain draws exactly the samples ``pretrain_loss`` draws.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check
from .base import PRETRAINING_ONLY, Model, Outer, PretrainConfig, Sum, n_inputs
from .init import glorot_uniform_
from .registry import register


@dataclass
class RBMConfig(PretrainConfig):
    """Binary RBM (rbm.py): PCD-15, lr 0.1, batch 20, 15 epochs; samples from ``n_chains`` Gibbs chains,
    ``n_samples`` rows, one every ``plot_every`` steps."""

    name: str = "rbm"
    n_hidden: int = 500
    k: int = 15
    persistent: bool = True
    n_chains: int = 20
    n_samples: int = 10
    plot_every: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_hidden >= 1, "model.n_hidden", self.n_hidden, "must be >= 1")
        check(self.k >= 1, "model.k", self.k, "must be >= 1")
        check(self.n_chains >= 1, "model.n_chains", self.n_chains, "must be >= 1")
        check(self.n_samples >= 1, "model.n_samples", self.n_samples, "must be >= 1")
        check(self.plot_every >= 1, "model.plot_every", self.plot_every, "must be >= 1")


def bernoulli(p):
    """h ~ Bernoulli(p), the very samples ``torch.bernoulli(p)`` draws: on a CPU ``rand_like(p) < p``
    (torch's CPU Bernoulli kernel compares one uniform draw per element, in the same order, with the
    same generator, so the two agree bit for bit and advance the generator alike; the uniform kernel
    is about 4x faster), elsewhere torch.bernoulli itself."""
    if p.device.type == "cpu":
        return torch.rand_like(p).lt_(p)  # 1.0 where u < p, else 0.0, in the draws' own tensor
    return torch.bernoulli(p)


@register
class RBM(Model):
    Config = RBMConfig
    supervised = False
    ignores = PRETRAINING_ONLY

    def __init__(self, n_visible: int, n_hidden: int, k: int = 15, persistent: bool = True, batch_size: int = 20,
                 W: nn.Parameter = None, hbias: nn.Parameter = None, *, n_chains: int = 20, n_samples: int = 10,
                 plot_every: int = 1000):
        super().__init__()
        self.n_visible, self.n_hidden, self.k, self.persistent = n_visible, n_hidden, k, persistent
        self.n_chains, self.n_samples, self.plot_every = n_chains, n_samples, plot_every  # for pictures()
        if W is None:  # U[-4 sqrt(6 / (n_hidden + n_visible)), +4 sqrt(...)], as the tutorial
            W = nn.Parameter(glorot_uniform_(torch.empty(n_hidden, n_visible), n_visible, n_hidden, gain=4.0))
        if hbias is None:
            hbias = nn.Parameter(torch.zeros(n_hidden))
        if tuple(W.shape) != (n_hidden, n_visible) or tuple(hbias.shape) != (n_hidden,):
            raise ValueError(f"W must be (n_hidden, n_visible) = ({n_hidden}, {n_visible}) and hbias ({n_hidden},), "
                             f"got {tuple(W.shape)} and {tuple(hbias.shape)}")
        self.W, self.hbias = W, hbias  # may be shared with a DBN's sigmoid layer
        self.vbias = nn.Parameter(torch.zeros(n_visible))
        # PCD: the hidden samples of `batch_size` chains, started at zero as the tutorial.
        self.register_buffer("persistent_chain", torch.zeros(batch_size, n_hidden) if persistent else None)
        # the visible unit the pseudo-likelihood flips next: a buffer, so it is saved with the state and
        # advances on the device without a host sync
        self.register_buffer("bit_i", torch.zeros(1, dtype=torch.long))

    @classmethod
    def build(cls, cfg, image_shape, n_classes):
        return cls(n_inputs(image_shape), cfg.n_hidden, cfg.k, cfg.persistent, cfg.pretrain_batch_size,
                   n_chains=cfg.n_chains, n_samples=cfg.n_samples, plot_every=cfg.plot_every)

    # ------------------------------------------------------------ energies
    def free_energy(self, v):
        """F(v) = -b^T v - sum_j softplus(c_j + W_j v), one value per row of v."""
        return -(v @ self.vbias) - F.softplus(F.linear(v, self.W, self.hbias)).sum(1)

    # ------------------------------------------------------------ Gibbs sampling
    def propup(self, v):
        """p(h = 1 | v) = sigmoid(v W^T + c): the mean hidden activation."""
        return torch.sigmoid(F.linear(v, self.W, self.hbias))

    def sample_h_given_v(self, v):
        """(pre-sigmoid, p(h | v), h ~ Bernoulli(p(h | v)))."""
        pre = F.linear(v, self.W, self.hbias)
        mean = torch.sigmoid(pre)
        return pre, mean, torch.bernoulli(mean)

    def sample_v_given_h(self, h):
        """(pre-sigmoid, p(v | h), v ~ Bernoulli(p(v | h)))."""
        pre = h @ self.W + self.vbias
        mean = torch.sigmoid(pre)
        return pre, mean, torch.bernoulli(mean)

    def gibbs_hvh(self, h):
        """h -> v -> h': (v_pre, v_mean, v, h_pre, h_mean, h')."""
        v_pre, v_mean, v = self.sample_v_given_h(h)
        return (v_pre, v_mean, v, *self.sample_h_given_v(v))

    def gibbs_vhv(self, v):
        """v -> h -> v': (h_pre, h_mean, h, v_pre, v_mean, v')."""
        h_pre, h_mean, h = self.sample_h_given_v(v)
        return (h_pre, h_mean, h, *self.sample_v_given_h(h))

    def encode(self, v):
        """The representation the next layer of a stack trains on: p(h | v)."""
        return self.propup(v.flatten(1))

    # ------------------------------------------------------------ training
    def pretrain_loss(self, v0):
        """CD-k / PCD-k surrogate ``mean F(v0) - mean F(v_k)`` and the tutorial's monitoring cost."""
        v0 = v0.flatten(1)
        n = len(v0)
        with torch.no_grad():
            if self.persistent:
                if n > len(self.persistent_chain):
                    raise ValueError(f"minibatch of {n} rows but only {len(self.persistent_chain)} persistent "
                                     "chains: build the RBM with batch_size >= the minibatch size")
                h = self.persistent_chain[:n]  # a smaller (last) minibatch advances the first n chains only
            else:
                h = self.sample_h_given_v(v0)[2]
            for _ in range(self.k):
                v_pre, _, v_k, _, _, h = self.gibbs_hvh(h)
            if self.persistent:
                self.persistent_chain[:n] = h
            cost = self.pseudo_likelihood_cost(v0) if self.persistent else self.reconstruction_cost(v0, v_pre)
        loss = self.free_energy(v0).mean() - self.free_energy(v_k).mean()
        return loss, {"cost": cost}

    def closed_form(self, objective):
        return self.cd_grads() if objective == "pretrain" else None

    def cd_grads(self):
        """fn(v0, y=None): ``pretrain_loss(v0)``'s chain, monitors and the gradient of its surrogate,
        without autograd:

            dloss/dW = (p(h|v_k)^T v_k - p(h|v0)^T v0) / n,   dloss/db = mean(v_k - v0),
            dloss/dc = mean(p(h|v_k) - p(h|v0))

        (the same arithmetic as ``gibbs_hvh``, sample for sample)."""
        W, c, b = self.W, self.hbias, self.vbias

        def grads(v0, y=None):
            k, persistent = self.k, self.persistent
            v0 = v0.flatten(1)
            n = len(v0)
            Wt = W.t()
            ph0 = torch.addmm(c, v0, Wt).sigmoid_()
            if persistent:
                chain = self.persistent_chain
                if n > len(chain):
                    raise ValueError(f"minibatch of {n} rows but only {len(chain)} persistent "
                                     "chains: build the RBM with batch_size >= the minibatch size")
                h = chain[:n]
            else:
                h = bernoulli(ph0)
            for _ in range(k):
                v_pre = torch.mm(h, W).add_(b)                  # h @ W + b, as sample_v_given_h
                v_k = bernoulli(torch.sigmoid(v_pre))
                ph_k = torch.addmm(c, v_k, Wt).sigmoid_()       # F.linear(v, W, c), as sample_h_given_v
                h = bernoulli(ph_k)
            if persistent:
                chain[:n] = h
            cost = self.pseudo_likelihood_cost(v0) if persistent else self.reconstruction_cost(v0, v_pre)
            return {"cost": cost}, [(W, [Outer(ph0, v0, -1.0 / n), Outer(ph_k, v_k, 1.0 / n)]),
                                    (c, Sum(ph_k - ph0, 1.0 / n)), (b, Sum(v_k - v0, 1.0 / n))]

        return grads

    @torch.no_grad()
    def pseudo_likelihood_cost(self, v):
        """Stochastic pseudo-likelihood: n_visible * mean log sigmoid(F(x with bit i flipped) - F(x)).

        x = round(v); bit i cycles over the visible units, one per call.
        """
        x = torch.round(v)
        x_flip = x.index_copy(1, self.bit_i, 1 - x.index_select(1, self.bit_i))
        self.bit_i.add_(1).remainder_(self.n_visible)
        return self.n_visible * F.logsigmoid(self.free_energy(x_flip) - self.free_energy(x)).mean()

    @staticmethod
    def reconstruction_cost(v, v_pre):
        """Cross-entropy mean_n -sum_i [v log sigmoid(a) + (1 - v) log(1 - sigmoid(a))], a = v_pre (stable)."""
        return F.binary_cross_entropy_with_logits(v_pre, v, reduction="none").sum(1).mean()

    # ------------------------------------------------------------ sampling, views
    @torch.no_grad()
    def sample(self, v_init, n_samples: int, plot_every: int):
        """Run len(v_init) chains from v_init; keep p(v | h) every `plot_every` Gibbs steps.

        Returns (n_samples, n_chains, n_visible) mean visible activations; the
        chain itself carries on from the binary samples, as the tutorial.
        """
        v = v_init.flatten(1)
        kept = []
        for _ in range(n_samples):
            for _ in range(plot_every):
                _, _, _, _, v_mean, v = self.gibbs_vhv(v)
            kept.append(v_mean)
        return torch.stack(kept)

    def filters(self):
        """One row per hidden unit, in visible space: (n_hidden, n_visible)."""
        return self.W

    def weights(self):
        return [self.W]

    def pretrain_layers(self):
        return [self]

    @torch.no_grad()
    def pictures(self, x):
        """``n_samples`` rows of ``n_chains`` samples; the chains start at consecutive inputs from a random one."""
        start = int(torch.randint(0, max(1, len(x) - self.n_chains), ()).item())
        samples = self.sample(x[start:start + self.n_chains], self.n_samples, self.plot_every)
        return {"samples": (samples.reshape(-1, samples.shape[-1]).cpu().numpy(), (self.n_samples, self.n_chains))}

    def objective(self):
        """PCD's cost is the log pseudo-likelihood: higher is better."""
        from ..metric_names import FINAL_COST

        return (FINAL_COST, "max") if self.persistent else super().objective()

