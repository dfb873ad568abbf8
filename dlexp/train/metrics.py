"""Zero-one loss and negative log-likelihood, evaluated in large batches on the device.

    zero_one = mean(argmax_i p(y=i|x) != y)      nll = -mean(log p(y|x))

Both return a 0-d tensor on the model's device, so callers choose when to
synchronise with the host (``.item()``) -- once per validation, not per step.
"""
import torch
import torch.nn.functional as F


@torch.no_grad()
def zero_one(model, x, y, batch_size: int = 10000) -> torch.Tensor:
    wrong = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch_size):
        wrong += (model(x[i:i + batch_size]).argmax(1) != y[i:i + batch_size]).sum()
    return wrong.double() / max(1, len(x))


@torch.no_grad()
def nll(model, x, y, batch_size: int = 10000) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        total += F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size], reduction="sum")
    return total / max(1, len(x))


@torch.no_grad()
def predict(model, x, batch_size: int = 10000) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
