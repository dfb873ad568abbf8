"""What a model is to a run: its config schema and the interface the run calls.

A model file ``dlexp/models/<name>.py`` holds a config dataclass (a
:class:`ModelConfig` whose ``name`` default is the model's name) and a
:class:`Model` subclass with ``Config`` set to it and a ``build`` classmethod;
``conf/model/<name>.yaml`` selects the schema. Nothing else names the model.

A supervised model returns logits from ``forward(x)``, x flattened (N, C*H*W);
the trainer's loss is the mean negative log-likelihood of softmax(logits). A
layer to pretrain (``pretrain_layers()``) offers ``pretrain_loss(x) -> (loss,
monitors)`` and ``encode(x)``, the input of the next layer (dlexp.train.pretrain).
"""
import math
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Tuple

import numpy as np
from torch import Tensor, nn

from ..checks import check, positive

Picture = Tuple[np.ndarray, Tuple[int, int]]  # rows of pixels in [0, 1], (tile rows, tile cols)


@dataclass
class ModelConfig:
    name: str


@dataclass
class PretrainConfig(ModelConfig):
    """Layer-wise unsupervised training: SGD at ``pretrain_lr`` for ``pretrain_epochs``.

    ``image_every`` also logs the filter images every that many epochs (null: at
    the end only); ``pretrained_from`` (a checkpoint path or an MLflow run id)
    loads pretrained parameters instead of pretraining.
    """

    pretrain_lr: float = 0.1
    pretrain_epochs: int = 15
    pretrain_batch_size: int = 20
    image_every: Optional[int] = None
    pretrained_from: Optional[str] = None

    def __post_init__(self) -> None:
        positive("model.pretrain_lr", self.pretrain_lr)
        check(self.pretrain_epochs >= 0, "model.pretrain_epochs", self.pretrain_epochs, "must be >= 0")
        check(self.pretrain_batch_size >= 1, "model.pretrain_batch_size", self.pretrain_batch_size, "must be >= 1")
        check(self.image_every is None or self.image_every >= 1, "model.image_every", self.image_every,
              "null or >= 1")


@dataclass
class StackConfig(PretrainConfig):
    """A deep stack pretrained layer by layer, then fine-tuned with the optimizer group."""

    hidden_layers_sizes: List[int] = field(default_factory=lambda: [1000, 1000, 1000])

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.hidden_layers_sizes) > 0, "model.hidden_layers_sizes", self.hidden_layers_sizes,
              "at least one layer")
        for n in self.hidden_layers_sizes:
            check(n >= 1, "model.hidden_layers_sizes", self.hidden_layers_sizes, "every size >= 1")


def n_inputs(image_shape) -> int:
    """C * H * W: the length of a flattened input."""
    return math.prod(image_shape)


class Model(nn.Module):
    """The interface a run uses; every model subclasses it.

    ``supervised``: a supervised training (or fine-tuning) phase exists.
    """

    Config: ClassVar[type]
    supervised: ClassVar[bool] = True

    @classmethod
    def build(cls, cfg, image_shape, n_classes: int) -> "Model":
        """The model of config ``cfg`` for inputs of ``image_shape`` (C, H, W) and ``n_classes`` labels."""
        raise NotImplementedError

    @classmethod
    def check(cls, cfg, image_shape) -> None:
        """Raise ConfigError, before any work, if the model cannot take this input shape."""

    def weights(self) -> List[Tensor]:
        """The tensors the L1/L2 penalties apply to (weights, not biases)."""
        raise NotImplementedError

    def filters(self) -> Tensor:
        """First-layer filters, one row per unit, in input space."""
        raise NotImplementedError

    def pretrain_layers(self) -> list:
        """The layers to pretrain without labels, bottom first."""
        return []

    def pictures(self, x: Tensor) -> Dict[str, Picture]:
        """Images the model makes from test inputs ``x`` (rows in [0, 1], flattened): name -> (rows, grid)."""
        return {}

    def objective(self) -> Tuple[str, str]:
        """How a sweep ranks this model's runs: (metric, "min" or "max")."""
        return ("best_valid_error", "min") if self.supervised else ("final_cost", "min")
