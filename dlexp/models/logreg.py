"""Multiclass logistic regression (the tutorial's logistic_sgd.py).

    p(y = i | x) = softmax_i(W x + b),   y_pred = argmax_i p(y = i | x)

W and b start at zero, as in the tutorial. The model returns the logits
``W x + b``; the trainer's loss is the mean negative log-likelihood
``-mean(log softmax(W x + b)[y])``.
"""
from torch import nn


class LogisticRegression(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x):
        return self.linear(x.flatten(1))

    def weights(self):
        """Tensors the L1/L2 penalties apply to (weights, not biases)."""
        return [self.linear.weight]

    def filters(self):
        """First-layer filters, one row per unit, in input space."""
        return self.linear.weight
