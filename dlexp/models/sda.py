"""Stacked denoising autoencoders (the tutorial's SdA.py).

An MLP with sigmoid hidden layers and a logistic regression output layer,

    h_0 = x,   h_i = s(W_i h_{i-1} + b_i),   p(y | x) = softmax(W_out h_L + b_out)

whose hidden layer i is first pretrained, bottom-up, as a denoising
autoencoder on the clean codes h_{i-1} of the layers below (corruption level
c_i). Each dA shares W_i and b_i with its sigmoid layer (the same Parameter
objects) and adds its own visible bias b'_i, used only in pretraining. The
whole network is then fine-tuned on the labels. Hidden weights are drawn from
U[-a, a], a = 4 sqrt(6 / (fan_in + fan_out)); biases and the output layer
start at zero.

``state_dict()`` lists each shared tensor twice (``hidden.i.weight`` and
``das.i.W``), both names for one storage; ``load_state_dict`` round-trips.
"""
from dataclasses import dataclass, field
from typing import List

from torch import nn

from ..checks import check
from .base import StackConfig, n_inputs
from .da import DenoisingAutoencoder, check_corruption
from .mlp import MLP
from .registry import register


@dataclass
class SdAConfig(StackConfig):
    """Stacked denoising autoencoders (SdA.py), one corruption level per layer; pretraining as the
    tutorial: lr 0.001, batch 1, 15 epochs a layer."""

    name: str = "sda"
    pretrain_lr: float = 0.001
    pretrain_batch_size: int = 1
    corruption_levels: List[float] = field(default_factory=lambda: [0.1, 0.2, 0.3])

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.corruption_levels) == len(self.hidden_layers_sizes), "model.corruption_levels",
              self.corruption_levels, f"one level per hidden layer ({len(self.hidden_layers_sizes)})")
        for c in self.corruption_levels:
            check_corruption("model.corruption_levels", c)


@register
class StackedDenoisingAutoencoder(MLP):
    Config = SdAConfig

    def __init__(self, n_in: int, n_out: int, hidden_layers_sizes=(1000, 1000, 1000),
                 corruption_levels=(0.1, 0.2, 0.3)):
        if len(hidden_layers_sizes) == 0 or len(corruption_levels) != len(hidden_layers_sizes):
            raise ValueError(f"need one corruption level per hidden layer, got {list(corruption_levels)} "
                             f"for {list(hidden_layers_sizes)}")
        super().__init__(n_in, n_out, hidden_layers_sizes, "sigmoid")
        self.das = nn.ModuleList(
            DenoisingAutoencoder(layer.in_features, layer.out_features, c, W=layer.weight, bhid=layer.bias)
            for layer, c in zip(self.hidden, corruption_levels))
        self.out = self._modules.pop("out")  # the output layer last in parameters(), as always (CG's flat vector)

    @classmethod
    def build(cls, cfg, image_shape, n_classes):
        return cls(n_inputs(image_shape), n_classes, tuple(cfg.hidden_layers_sizes), tuple(cfg.corruption_levels))

    def pretrain_layers(self):
        return list(self.das)
