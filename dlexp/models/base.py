"""What a model is to a run: its config schema and the interface the run calls.

A model file ``dlexp/models/<name>.py`` holds a config dataclass (a
:class:`ModelConfig` whose ``name`` default is the model's name) and a
:class:`Model` subclass with ``Config`` set to it and a ``build`` classmethod;
``conf/model/<name>.yaml`` selects the schema. Nothing else names the model.

A supervised model returns logits from ``forward(x)``, x flattened (N, C*H*W);
the trainer's loss is the mean negative log-likelihood of softmax(logits). A
layer to pretrain (``pretrain_layers()``) offers ``pretrain_loss(x) -> (loss,
monitors)`` and ``encode(x)``, the input of the next layer (dlexp.train.pretrain).

A model may also offer the gradient of one of these objectives in closed form
(:meth:`Model.closed_form`): the trainer's step then skips autograd and adds
the gradient straight into the parameters (dlexp.train.fused); it must give
the same losses and parameters as autograd on the same minibatches (and the
same random draws), to float rounding. It serves only the class that defines it
and subclasses that keep that class's objective (:meth:`Model.closed_form_for`).
"""
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..checks import check, positive

Picture = Tuple[np.ndarray, Tuple[int, int]]  # rows of pixels in [0, 1], (tile rows, tile cols)


PRETRAINING_ONLY = {  # Model.ignores of a model that trains only by pretraining (no labels: da, ca, rbm)
    "optimizer.lr": "model.pretrain_lr", "optimizer.batch_size": "model.pretrain_batch_size",
    "trainer.max_epochs": "model.pretrain_epochs", "optimizer": "", "early_stopping": "", "regularization": "",
}


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


class Outer(NamedTuple):
    """The gradient ``alpha * a^T b`` of a (p, q) weight, a: (n, p), b: (n, q): a sum over the minibatch of
    outer products, left unformed so that the step adds it into the weight in one ``addmm_``."""

    a: Tensor
    b: Tensor
    alpha: float = 1.0


class Sum(NamedTuple):
    """The gradient ``alpha * sum_n a_n`` of a (p,) bias, a: (n, p), left for the step to reduce into the
    bias in one kernel (no reduction at all for one row)."""

    a: Tensor
    alpha: float = 1.0


# A parameter's gradient in closed form: a tensor shaped like it, an Outer, a Sum, or a list of them (their sum).
Grad = Union[Tensor, Outer, Sum, Sequence[Union[Tensor, Outer, Sum]]]
# fn(x, y) -> (monitors, [(parameter, gradient)]): see Model.closed_form.
OBJECTIVE_METHODS = {"nll": "forward", "pretrain": "pretrain_loss"}  # the method each objective is computed by
ClosedForm = Callable[[Tensor, Optional[Tensor]], Tuple[Dict[str, Tensor], List[Tuple[nn.Parameter, Grad]]]]


def nll_and_delta(h: Tensor, W: Tensor, b_col: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    """The softmax-NLL output layer and its error, in closed form:

        z = h W^T + b,   loss = -mean_n log softmax(z_n)[y_n],   delta = softmax(z) - onehot(y) = n dloss/dz

    so dloss/dW = delta^T h / n, dloss/db = sum_n delta_n / n, dloss/dh = delta W / n. The logits are
    computed transposed, z^T = W h^T + b (one GEMM whose long side is the minibatch: with a few classes
    about twice as fast as h W^T on a CPU; ``b_col`` is the bias as a column, ``b.unsqueeze(1)``);
    ``delta`` is returned as the (n, classes) view of that layout.
    """
    zt = torch.addmm(b_col, W, h.t())
    lp = torch.log_softmax(zt, 0)
    yi = y.unsqueeze(0)
    minus_ones, minus_mean = _constants(len(y), lp)
    loss = lp.gather(0, yi).sum().mul_(minus_mean)
    delta = lp.exp_()
    delta.scatter_add_(0, yi, minus_ones)
    return loss, delta.t()


_CONSTANTS = {}


def _constants(n: int, like: Tensor) -> Tuple[Tensor, Tensor]:
    """(-1 of shape (1, n), -1/n as a 0-d tensor) on ``like``'s device: made once, not every step (a Python
    scalar is made into a tensor at every call)."""
    key = (n, like.dtype, like.device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = (torch.full((1, n), -1.0, dtype=like.dtype, device=like.device),
                           torch.tensor(-1.0 / n, dtype=like.dtype, device=like.device))
    return _CONSTANTS[key]


def rows(x: Tensor) -> Tensor:
    """``x`` as (N, C*H*W) rows: itself when it is already 2-D (the closed-form steps' minibatches are), so a
    step pays no ``flatten`` dispatch."""
    return x if x.dim() == 2 else x.flatten(1)


def n_inputs(image_shape) -> int:
    """C * H * W: the length of a flattened input."""
    return math.prod(image_shape)


class Model(nn.Module):
    """The interface a run uses; every model subclasses it.

    ``supervised``: a supervised training (or fine-tuning) phase exists. ``ignores``: the config keys it
    never reads, and what to set instead.
    """

    Config: ClassVar[type]
    supervised: ClassVar[bool] = True
    # The config keys this model never reads (a group, or group.key) -> the key that does that job for it
    # ("" if none does): such an override is refused before any run starts, and they are not logged as the
    # run's params (dlexp.run.params). A model that trains only by pretraining sets PRETRAINING_ONLY.
    ignores: ClassVar[Dict[str, str]] = {}

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

    def closed_form(self, objective: str) -> Optional[ClosedForm]:
        """The gradient of a training objective in closed form, or None (the step then uses autograd).

        ``objective``: ``"nll"``, the supervised loss ``-mean log softmax(forward(x))[y]``, or
        ``"pretrain"``, this layer's ``pretrain_loss(x)``. The function returned, ``fn(x, y)`` (y None
        for "pretrain"), runs under ``torch.no_grad`` and returns ``(monitors, grads)``: the values the
        step sums (``{"loss": nll}`` for "nll"; the monitors of ``pretrain_loss``) and, for every
        parameter the objective depends on, ``(parameter, gradient)`` (a :data:`Grad`, computed from the
        parameters as they were on entry), always in the same order. It draws random numbers exactly as
        the autograd objective does, so both give the same training. The docstring states the equations.
        """
        return None

    def closed_form_for(self, objective: str) -> Optional[ClosedForm]:
        """:meth:`closed_form`, if the objective it differentiates is still the one this model computes.

        A closed form is written for the objective of the class that defines it (``MLP.closed_form`` is the
        gradient of ``MLP.forward``'s NLL); a subclass that overrides that objective's method below it
        (``forward`` for "nll", ``pretrain_loss`` for "pretrain": a ``DropoutMLP(MLP)`` with its own
        ``forward``) does not inherit it, and trains by autograd, unless it defines ``closed_form`` itself.
        """
        owner = next(c for c in type(self).__mro__ if "closed_form" in vars(c))
        method = OBJECTIVE_METHODS.get(objective)
        if method is None or getattr(type(self), method, None) is not getattr(owner, method, None):
            return None
        return self.closed_form(objective)

    def objective(self) -> Tuple[str, str]:
        """How a sweep ranks this model's runs: (metric, "min" or "max")."""
        from ..metric_names import BEST_VALID, FINAL_COST

        return (BEST_VALID, "min") if self.supervised else (FINAL_COST, "min")
