"""Multilayer perceptron (the tutorial's mlp.py).

    h_1 = s(W_1 x + b_1), ..., h_L = s(W_L h_{L-1} + b_L)
    p(y | x) = softmax(W_out h_L + b_out)

Hidden weights are drawn from U[-a, a] with a = sqrt(6 / (fan_in + fan_out))
(Glorot & Bengio 2010), times 4 for the sigmoid; biases and the output layer
start at zero, as in the tutorial. The SdA and the DBN are this network with
sigmoid units, pretrained layer by layer.

The mean NLL's gradient, by hand (:meth:`MLP.closed_form`, the step's fast path):
with delta_out = softmax(z) - onehot(y) (see ``nll_and_delta``) and, going down,
delta_l = (delta_{l+1} W_{l+1}) * s'(h_l), s' = 1 - h^2 (tanh), h (1 - h) (sigmoid),
[h > 0] (relu), every layer's dL/dW_l = delta_l^T h_{l-1} / n and dL/db_l = mean_n delta_l.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from ..checks import check, one_of
from .base import Model, ModelConfig, Outer, Sum, n_inputs, nll_and_delta, rows
from .init import hidden_stack, tutorial_stack_, zero_linear
from .registry import register

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}
# the same activations in place, and their backward from the output h: (grad, h) -> grad * s'(h)
ACTIVATIONS_ = {torch.tanh: torch.tanh_, torch.sigmoid: torch.sigmoid_, torch.relu: torch.relu_}
BACKWARD = {torch.tanh: torch.ops.aten.tanh_backward.default,
            torch.sigmoid: torch.ops.aten.sigmoid_backward.default,
            torch.relu: lambda g, h: torch.ops.aten.threshold_backward.default(g, h, 0)}


@dataclass
class MLPConfig(ModelConfig):
    """Hidden layers h = s(W x + b), then a logistic regression layer."""

    name: str = "mlp"
    hidden_sizes: List[int] = field(default_factory=lambda: [500])
    activation: str = "tanh"
    # numpy RandomState seed: the hidden weights drawn as mlp.py draws them (it uses 1234), the original's
    # starting point; null: torch's generator under trainer.seed
    init_seed: Optional[int] = None

    def __post_init__(self) -> None:
        check(len(self.hidden_sizes) > 0, "model.hidden_sizes", self.hidden_sizes, "at least one layer")
        for n in self.hidden_sizes:
            check(n >= 1, "model.hidden_sizes", self.hidden_sizes, "every size >= 1")
        one_of("model.activation", self.activation, tuple(ACTIVATIONS))


@register
class MLP(Model):
    Config = MLPConfig

    def __init__(self, n_in: int, n_out: int, hidden_sizes=(500,), activation: str = "tanh", init_seed=None):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        sizes = [n_in, *hidden_sizes]
        gain = 4.0 if activation == "sigmoid" else 1.0
        self.hidden = hidden_stack(sizes, gain)
        if init_seed is not None:
            tutorial_stack_(self.hidden, np.random.RandomState(init_seed), gain)
        self.out = zero_linear(sizes[-1], n_out)

    @classmethod
    def build(cls, cfg, image_shape, n_classes):
        return cls(n_inputs(image_shape), n_classes, tuple(cfg.hidden_sizes), cfg.activation,
                   getattr(cfg, "init_seed", None))

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.hidden:
            h = self.activation(layer(h))
        return self.out(h)

    def weights(self):
        return [layer.weight for layer in self.hidden] + [self.out.weight]

    def filters(self):
        return self.hidden[0].weight

    def closed_form(self, objective):
        """The mean NLL and its gradient, back-propagated by hand (the equations above)."""
        if objective != "nll":
            return None
        act, backward = ACTIVATIONS_[self.activation], BACKWARD[self.activation]
        layers = [(layer.weight, layer.bias) for layer in self.hidden]
        W_out, b_out = self.out.weight, self.out.bias
        forward = [(W.t(), b) for W, b in layers]  # views: they follow the in-place updates
        b_col = b_out.unsqueeze(1)

        def nll_grads(x, y):
            hs = [rows(x)]
            for Wt, b in forward:
                hs.append(act(torch.addmm(b, hs[-1], Wt)))
            loss, delta = nll_and_delta(hs[-1], W_out, b_col, y)
            s = 1.0 / len(x)
            grads = [(W_out, Outer(delta, hs[-1], s)), (b_out, Sum(delta, s))]
            above = W_out
            for i in range(len(layers) - 1, -1, -1):
                W, b = layers[i]
                delta = backward(torch.mm(delta, above), hs[i + 1])
                grads += [(W, Outer(delta, hs[i], s)), (b, Sum(delta, s))]
                above = W
            return {"loss": loss}, grads

        return nll_grads
