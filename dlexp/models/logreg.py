"""Multiclass logistic regression (the tutorial's logistic_sgd.py).

    p(y = i | x) = softmax_i(W x + b),   y_pred = argmax_i p(y = i | x)

W and b start at zero, as in the tutorial. The model returns the logits
``W x + b``; the trainer's loss is the mean negative log-likelihood
``-mean(log softmax(W x + b)[y])``, whose gradient has the closed form

    delta = softmax(W x + b) - onehot(y),   dL/dW = mean_n delta_n x_n^T,   dL/db = mean_n delta_n

(:meth:`LogisticRegression.closed_form`, the step's fast path).
"""
from dataclasses import dataclass

from .base import Model, ModelConfig, Outer, Sum, n_inputs, nll_and_delta, rows
from .init import zero_linear
from .registry import register


@dataclass
class LogRegConfig(ModelConfig):
    """Multiclass logistic regression, p(y|x) = softmax(W x + b), zero init."""

    name: str = "logreg"


@register
class LogisticRegression(Model):
    Config = LogRegConfig

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = zero_linear(n_in, n_out)

    @classmethod
    def build(cls, cfg, image_shape, n_classes):
        return cls(n_inputs(image_shape), n_classes)

    def forward(self, x):
        return self.linear(x.flatten(1))

    def weights(self):
        return [self.linear.weight]

    def filters(self):
        return self.linear.weight

    def closed_form(self, objective):
        """The mean NLL and its gradient: dL/dW = delta^T x / n, dL/db = mean delta (see nll_and_delta)."""
        if objective != "nll":
            return None
        W, b = self.linear.weight, self.linear.bias
        b_col = b.unsqueeze(1)  # a view: it follows the in-place updates of b

        def nll_grads(x, y):
            x = rows(x)
            loss, delta = nll_and_delta(x, W, b_col, y)
            s = 1.0 / len(x)
            return {"loss": loss}, [(W, Outer(delta, x, s)), (b, Sum(delta, s))]

        return nll_grads
