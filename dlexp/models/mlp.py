"""Multilayer perceptron (the tutorial's mlp.py).

    h_1 = s(W_1 x + b_1), ..., h_L = s(W_L h_{L-1} + b_L)
    p(y | x) = softmax(W_out h_L + b_out)

Hidden weights are drawn from U[-a, a] with a = sqrt(6 / (fan_in + fan_out))
(Glorot & Bengio 2010), times 4 for the sigmoid; biases and the output layer
start at zero, as in the tutorial. The SdA and the DBN are this network with
sigmoid units, pretrained layer by layer.
"""
from dataclasses import dataclass, field
from typing import List

import torch

from ..checks import check, one_of
from .base import Model, ModelConfig, n_inputs
from .init import hidden_stack, zero_linear
from .registry import register

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


@dataclass
class MLPConfig(ModelConfig):
    """Hidden layers h = s(W x + b), then a logistic regression layer."""

    name: str = "mlp"
    hidden_sizes: List[int] = field(default_factory=lambda: [500])
    activation: str = "tanh"

    def __post_init__(self) -> None:
        check(len(self.hidden_sizes) > 0, "model.hidden_sizes", self.hidden_sizes, "at least one layer")
        for n in self.hidden_sizes:
            check(n >= 1, "model.hidden_sizes", self.hidden_sizes, "every size >= 1")
        one_of("model.activation", self.activation, tuple(ACTIVATIONS))


@register
class MLP(Model):
    Config = MLPConfig

    def __init__(self, n_in: int, n_out: int, hidden_sizes=(500,), activation: str = "tanh"):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        sizes = [n_in, *hidden_sizes]
        self.hidden = hidden_stack(sizes, gain=4.0 if activation == "sigmoid" else 1.0)
        self.out = zero_linear(sizes[-1], n_out)

    @classmethod
    def build(cls, cfg, image_shape, n_classes):
        return cls(n_inputs(image_shape), n_classes, tuple(cfg.hidden_sizes), cfg.activation)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.hidden:
            h = self.activation(layer(h))
        return self.out(h)

    def weights(self):
        return [layer.weight for layer in self.hidden] + [self.out.weight]

    def filters(self):
        return self.hidden[0].weight
