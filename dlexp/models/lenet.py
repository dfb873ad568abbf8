"""LeNet-5 style convolutional network (the tutorial's convolutional_mlp.py).

Each LeNetConvPoolLayer computes

    h = tanh(maxpool_{p x p}(W * x) + b)

with a 'valid' convolution, non-overlapping max-pooling and the bias added
after pooling. Filters are drawn from U[-a, a] with
a = sqrt(6 / (fan_in + fan_out)), fan_in = C k^2, fan_out = K k^2 / p^2.
A tanh hidden layer (Glorot init) and a zero-initialised logistic layer follow.
Feature-map sizes are derived from the input: s -> (s - k + 1) // p per layer.

``model.init_seed`` draws every weight as convolutional_mlp.py does (it seeds 23455): numpy's
``RandomState``, the filter banks first (fan_out = K k^2 // p^2, integer division as there), then the hidden
layer; Theano's ``conv2d`` flips its filters (a true convolution) where torch's correlates, so the drawn
banks are stored flipped: the same network, the original's starting point.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import ConfigError, check
from .base import Model, ModelConfig
from .init import glorot_uniform_, hidden_stack, tutorial_stack_, tutorial_uniform, zero_linear
from .registry import register


@dataclass
class LeNetConfig(ModelConfig):
    """Conv + max-pool + tanh layers, a tanh hidden layer, a logistic layer."""

    name: str = "lenet"
    nkerns: List[int] = field(default_factory=lambda: [20, 50])
    filter_size: int = 5
    pool_size: int = 2
    hidden_size: int = 500
    # numpy RandomState seed: weights drawn as convolutional_mlp.py draws them (it uses 23455); null: torch's
    init_seed: Optional[int] = None

    def __post_init__(self) -> None:
        check(len(self.nkerns) > 0, "model.nkerns", self.nkerns, "at least one conv layer")
        for n in self.nkerns:
            check(n >= 1, "model.nkerns", self.nkerns, "every count >= 1")
        check(self.filter_size >= 1, "model.filter_size", self.filter_size, "must be >= 1")
        check(self.pool_size >= 1, "model.pool_size", self.pool_size, "must be >= 1")
        check(self.hidden_size >= 1, "model.hidden_size", self.hidden_size, "must be >= 1")


def feature_sizes(image_shape, nkerns, filter_size, pool_size):
    """Spatial sizes after each conv-pool layer; ConfigError if one reaches 0."""
    _, h, w = image_shape
    sizes = []
    for i, _ in enumerate(nkerns):
        h, w = (h - filter_size + 1) // pool_size, (w - filter_size + 1) // pool_size
        if h < 1 or w < 1:
            raise ConfigError(
                f"lenet: a {image_shape[1]}x{image_shape[2]} input is too small for {len(nkerns)} conv layers "
                f"of {filter_size}x{filter_size} filters and {pool_size}x{pool_size} pooling (layer {i + 1} output "
                f"would be {h}x{w}); use smaller model.filter_size / model.pool_size or fewer model.nkerns, "
                f"e.g. model.filter_size=3 model.pool_size=1 for 8x8 digits")
        sizes.append((h, w))
    return sizes


class LeNetConvPool(nn.Module):
    def __init__(self, n_in: int, n_out: int, filter_size: int, pool_size: int):
        super().__init__()
        self.pool_size = pool_size
        self.conv = nn.Conv2d(n_in, n_out, filter_size, bias=False)
        self.b = nn.Parameter(torch.zeros(n_out))
        fan_in = n_in * filter_size ** 2
        fan_out = n_out * filter_size ** 2 / pool_size ** 2
        glorot_uniform_(self.conv.weight, fan_in, fan_out)

    def tutorial_init_(self, rng: np.random.RandomState) -> None:
        """The bank as convolutional_mlp.py draws it (numpy, integer fan_out), flipped for torch's correlation."""
        k_out, k_in, k, _ = self.conv.weight.shape
        w = tutorial_uniform(rng, (k_out, k_in, k, k), k_in * k * k, k_out * k * k // self.pool_size ** 2)
        with torch.no_grad():
            self.conv.weight.copy_(w.flip(-2, -1))

    def forward(self, x):
        h = self.conv(x)
        if self.pool_size > 1:
            h = F.max_pool2d(h, self.pool_size)
        return torch.tanh(h + self.b.view(1, -1, 1, 1))


@register
class LeNet(Model):
    Config = LeNetConfig

    def __init__(self, image_shape, n_out: int, nkerns=(20, 50), filter_size=5, pool_size=2, hidden_size=500,
                 init_seed=None):
        super().__init__()
        self.image_shape = tuple(image_shape)
        h, w = feature_sizes(image_shape, nkerns, filter_size, pool_size)[-1]
        chans = [image_shape[0], *nkerns]
        self.convs = nn.ModuleList(LeNetConvPool(a, b, filter_size, pool_size) for a, b in zip(chans[:-1], chans[1:]))
        self.hidden = hidden_stack([nkerns[-1] * h * w, hidden_size], gain=1.0)[0]
        self.out = zero_linear(hidden_size, n_out)
        if init_seed is not None:
            rng = np.random.RandomState(init_seed)
            for layer in self.convs:
                layer.tutorial_init_(rng)
            tutorial_stack_([self.hidden], rng, 1.0)

    @classmethod
    def build(cls, cfg, image_shape, n_classes):
        return cls(image_shape, n_classes, tuple(cfg.nkerns), cfg.filter_size, cfg.pool_size, cfg.hidden_size,
                   cfg.init_seed)

    @classmethod
    def check(cls, cfg, image_shape):
        feature_sizes(image_shape, cfg.nkerns, cfg.filter_size, cfg.pool_size)

    def forward(self, x):
        h = x.view(-1, *self.image_shape)
        for layer in self.convs:
            h = layer(h)
        return self.out(torch.tanh(self.hidden(h.flatten(1))))

    def weights(self):
        return [c.conv.weight for c in self.convs] + [self.hidden.weight, self.out.weight]

    def filters(self):
        """First-layer kernels as rows: (K, C * k * k); shown for the first channel."""
        w = self.convs[0].conv.weight
        return w[:, 0].flatten(1)
