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
from dataclasses import dataclass

from torch import nn

from ..checks import check
from .base import StackConfig, n_inputs
from .mlp import MLP
from .rbm import RBM
from .registry import register


@dataclass
class DBNConfig(StackConfig):
    """Deep belief network (DBN.py): RBMs pretrained with CD-k, then fine-tuned as an MLP; pretraining as
    the tutorial: CD-1, lr 0.01, batch 10, 100 epochs a layer."""

    name: str = "dbn"
    pretrain_lr: float = 0.01
    pretrain_epochs: int = 100
    pretrain_batch_size: int = 10
    k: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.k >= 1, "model.k", self.k, "must be >= 1")


@register
class DeepBeliefNetwork(MLP):
    Config = DBNConfig

    def __init__(self, n_in: int, n_out: int, hidden_layers_sizes=(1000, 1000, 1000), k: int = 1,
                 batch_size: int = 10):
        super().__init__(n_in, n_out, hidden_layers_sizes, "sigmoid")
        self.rbms = nn.ModuleList(RBM(layer.in_features, layer.out_features, k=k, persistent=False,
                                      batch_size=batch_size, W=layer.weight, hbias=layer.bias)
                                  for layer in self.hidden)
        self.out = self._modules.pop("out")  # the output layer last in parameters(), as always (CG's flat vector)

    @classmethod
    def build(cls, cfg, image_shape, n_classes):
        return cls(n_inputs(image_shape), n_classes, tuple(cfg.hidden_layers_sizes), cfg.k, cfg.pretrain_batch_size)

    def pretrain_layers(self):
        """The RBMs, bottom first; RBM i's ``encode`` is hidden layer i's output."""
        return list(self.rbms)
