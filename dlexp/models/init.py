"""Initialisation shared by the models, and the hidden stack of the MLP, SdA and DBN.

Glorot & Bengio (2010): W ~ U[-a, a], a = gain * sqrt(6 / (fan_in + fan_out)),
gain 1 for tanh and 4 for the sigmoid, as the tutorials.

:func:`tutorial_uniform` draws the same U[-a, a] as the tutorials' own code does, from a numpy
``RandomState`` (mlp.py seeds 1234, convolutional_mlp.py 23455): numpy's shape (the tutorials' W is
(n_in, n_out), a filter bank (n_out, n_in, k, k)), cast to float32 before the sigmoid's x 4, so a model can
start from exactly the original's weights (``model.init_seed``).
"""
import math

import numpy as np
import torch
from torch import nn


def glorot_uniform_(weight: torch.Tensor, fan_in: int, fan_out: int, gain: float = 1.0, generator=None):
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-a, a, generator=generator)


def tutorial_uniform(rng: np.random.RandomState, shape, fan_in, fan_out, gain: float = 1.0) -> torch.Tensor:
    """``asarray(rng.uniform(-a, a, shape), float32) * gain``, a = sqrt(6 / (fan_in + fan_out)), as the tutorials."""
    a = np.sqrt(6.0 / (fan_in + fan_out))
    w = np.asarray(rng.uniform(low=-a, high=a, size=shape), dtype=np.float32)
    if gain != 1.0:
        w *= np.float32(gain)
    return torch.from_numpy(w)


def tutorial_stack_(layers, rng: np.random.RandomState, gain: float) -> None:
    """Redraw ``layers``' weights (nn.Linear, bottom up) as the tutorials' HiddenLayer does: W (n_in, n_out)."""
    with torch.no_grad():
        for layer in layers:
            w = tutorial_uniform(rng, (layer.in_features, layer.out_features), layer.in_features,
                                 layer.out_features, gain)
            layer.weight.copy_(w.t())


def hidden_stack(sizes, gain: float) -> nn.ModuleList:
    """Layers sizes[i] -> sizes[i + 1]: h_i = s(W_i h_{i-1} + b_i), W_i Glorot-uniform times ``gain``, b_i = 0.

    All layers are made before any is initialised, so the random draws keep the
    order the models have always used (seeded results do not change).
    """
    layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
    for layer in layers:
        glorot_uniform_(layer.weight, layer.in_features, layer.out_features, gain)
        nn.init.zeros_(layer.bias)
    return layers


def zero_linear(n_in: int, n_out: int) -> nn.Linear:
    """A logistic regression layer W x + b with W = 0 and b = 0, as the tutorials start it."""
    layer = nn.Linear(n_in, n_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
