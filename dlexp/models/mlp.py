"""Multilayer perceptron (the tutorial's mlp.py).

    h_1 = s(W_1 x + b_1), ..., h_L = s(W_L h_{L-1} + b_L)
    p(y | x) = softmax(W_out h_L + b_out)

Hidden weights are drawn from U[-a, a] with a = sqrt(6 / (fan_in + fan_out))
(Glorot & Bengio 2010), times 4 for the sigmoid; biases and the output layer
start at zero, as in the tutorial.
"""
import math

import torch
from torch import nn

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


def glorot_uniform_(weight: torch.Tensor, fan_in: int, fan_out: int, gain: float = 1.0, generator=None):
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-a, a, generator=generator)


class MLP(nn.Module):
    def __init__(self, n_in: int, n_out: int, hidden_sizes=(500,), activation: str = "tanh"):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        sizes = [n_in, *hidden_sizes]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        gain = 4.0 if activation == "sigmoid" else 1.0
        for layer in self.hidden:
            glorot_uniform_(layer.weight, layer.in_features, layer.out_features, gain)
            nn.init.zeros_(layer.bias)
        self.out = nn.Linear(sizes[-1], n_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.hidden:
            h = self.activation(layer(h))
        return self.out(h)

    def weights(self):
        return [layer.weight for layer in self.hidden] + [self.out.weight]

    def filters(self):
        return self.hidden[0].weight
