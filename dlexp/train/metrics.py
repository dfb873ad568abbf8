"""Zero-one loss and predictions, evaluated in large batches on the device.

    zero_one = mean(argmax_i p(y=i|x) != y)      predict = argmax_i p(y=i|x)

``zero_one`` returns a 0-d tensor on the model's device, so callers choose when to
synchronise with the host (``.item()``) -- once per validation, not per step.
Evaluation runs under ``torch.inference_mode`` (no autograd bookkeeping) in
batches of ``batch_size`` rows (10,000 by default: a whole MNIST split in one
matrix product); rows held elsewhere (a host-resident split) are moved to the
model's device one batch at a time. ``autocast`` (a dtype, e.g. bf16) runs
the forward passes under autocast on that device.
"""
import contextlib

import torch


def _device(model, x):
    for p in model.parameters():
        return p.device
    return x.device


def _context(device, autocast):
    if autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=autocast)


def _batches(model, x, batch_size):
    device = _device(model, x)
    for i in range(0, len(x), batch_size):
        yield i, x[i:i + batch_size].to(device, non_blocking=True)


@torch.inference_mode()
def zero_one(model, x, y, batch_size: int = 10000, autocast=None) -> torch.Tensor:
    device = _device(model, x)
    wrong = torch.zeros((), dtype=torch.long, device=device)
    with _context(device, autocast):
        for i, xb in _batches(model, x, batch_size):
            wrong += (model(xb).argmax(1) != y[i:i + batch_size].to(device, non_blocking=True)).sum()
    return wrong.double() / max(1, len(x))


@torch.inference_mode()
def predict(model, x, batch_size: int = 10000) -> torch.Tensor:
    return torch.cat([model(xb).argmax(1) for _, xb in _batches(model, x, batch_size)])
