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
import torch
from torch import nn

from .da import DenoisingAutoencoder
from .mlp import glorot_uniform_


class StackedDenoisingAutoencoder(nn.Module):
    supervised = True

    def __init__(self, n_in: int, n_out: int, hidden_layers_sizes=(1000, 1000, 1000),
                 corruption_levels=(0.1, 0.2, 0.3)):
        super().__init__()
        if len(hidden_layers_sizes) == 0 or len(corruption_levels) != len(hidden_layers_sizes):
            raise ValueError(f"need one corruption level per hidden layer, got {list(corruption_levels)} "
                             f"for {list(hidden_layers_sizes)}")
        sizes = [n_in, *hidden_layers_sizes]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer in self.hidden:
            glorot_uniform_(layer.weight, layer.in_features, layer.out_features, gain=4.0)
            nn.init.zeros_(layer.bias)
        self.das = nn.ModuleList(
            DenoisingAutoencoder(layer.in_features, layer.out_features, c, W=layer.weight, bhid=layer.bias)
            for layer, c in zip(self.hidden, corruption_levels))
        self.out = nn.Linear(sizes[-1], n_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def features(self, x):
        """h_L, the input of the logistic regression layer."""
        h = x.flatten(1)
        for layer in self.hidden:
            h = torch.sigmoid(layer(h))
        return h

    def forward(self, x):
        return self.out(self.features(x))

    def pretrain_layers(self):
        return list(self.das)

    def weights(self):
        return [layer.weight for layer in self.hidden] + [self.out.weight]

    def filters(self):
        return self.hidden[0].weight
