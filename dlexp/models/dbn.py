"""Deep belief network (the tutorial's DBN.py, Hinton et al. 2006).

An MLP of sigmoid layers h_i = sigmoid(W_i h_{i-1} + c_i) topped by logistic
regression p(y | x) = softmax(W_out h_L + b_out). Layer i shares W_i and c_i
with an RBM over (h_{i-1}, h_i), so greedy layer-wise CD-k training of the
RBMs (each on p(h_{i-1} | ...) of the trained layers below, its ``encode``)
initialises the MLP, which is then fine-tuned with supervised SGD. Each RBM
keeps its own visible bias, unused by the MLP.

Sigmoid weights start at U[-4a, 4a], a = sqrt(6 / (fan_in + fan_out)); biases
and the logistic layer start at zero, as in the tutorial.
"""
import torch
from torch import nn

from .mlp import glorot_uniform_
from .rbm import RBM


class DeepBeliefNetwork(nn.Module):
    supervised = True

    def __init__(self, n_in: int, n_out: int, hidden_layers_sizes=(1000, 1000, 1000), k: int = 1,
                 batch_size: int = 10):
        super().__init__()
        sizes = [n_in, *hidden_layers_sizes]
        self.sigmoid_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer in self.sigmoid_layers:
            glorot_uniform_(layer.weight, layer.in_features, layer.out_features, gain=4.0)
            nn.init.zeros_(layer.bias)
        self.rbms = nn.ModuleList(RBM(layer.in_features, layer.out_features, k=k, persistent=False,
                                      batch_size=batch_size, W=layer.weight, hbias=layer.bias)
                                  for layer in self.sigmoid_layers)
        self.out = nn.Linear(sizes[-1], n_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.sigmoid_layers:
            h = torch.sigmoid(layer(h))
        return self.out(h)

    def pretrain_layers(self):
        """The RBMs, bottom first; RBM i's ``encode`` is sigmoid layer i's output."""
        return list(self.rbms)

    def weights(self):
        return [layer.weight for layer in self.sigmoid_layers] + [self.out.weight]

    def filters(self):
        return self.sigmoid_layers[0].weight
