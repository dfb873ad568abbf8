"""Greedy layer-wise unsupervised training (the SdA and DBN tutorials' pretraining).

Every layer to pretrain offers ``pretrain_loss(x) -> (loss, monitors)``: SGD
descends ``loss`` (for an RBM, a surrogate whose gradient is the CD-k update)
and ``monitors`` holds 0-d tensors to report (reconstruction cost,
pseudo-likelihood, ...). Layer ``i`` trains on the clean, deterministic
output ``encode()`` of the layers below it, computed once on the device.
Monitors are summed on the device and read once an epoch.
"""
import time

import torch


@torch.no_grad()
def encode(layer, x, batch_size: int = 10000):
    return torch.cat([layer.encode(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def fit_layer(layer, x, lr: float, batch_size: int, epochs: int, prefix: str = "pretrain", callback=None,
              on_epoch=None) -> list:
    """Train one layer by minibatch SGD; returns the mean of each monitor per epoch."""
    callback = callback or (lambda event, metrics, step: None)
    opt = torch.optim.SGD(layer.parameters(), lr=lr, foreach=True)
    n_batches = max(1, len(x) // batch_size)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        sums = None
        for i in range(n_batches):
            loss, monitors = layer.pretrain_loss(x[i * batch_size:(i + 1) * batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sums is None:
                sums = {k: torch.zeros((), device=x.device) for k in monitors}
            for k, v in monitors.items():
                sums[k] += v.detach()
        means = {k: v.item() / n_batches for k, v in sums.items()}
        seconds = time.perf_counter() - start
        history.append(means)
        callback("pretrain", {**{f"{prefix}/{k}": v for k, v in means.items()},
                              f"{prefix}/epoch_seconds": seconds}, epoch)
        if on_epoch is not None:
            on_epoch(epoch)
    return history


def pretrain_stack(model, x, lr: float, batch_size: int, epochs: int, callback=None, on_epoch=None) -> list:
    """Pretrain ``model.pretrain_layers()`` bottom-up; metrics ``pretrain/layer_<i>/<monitor>``."""
    histories = []
    layers = model.pretrain_layers()
    h = x
    for i, layer in enumerate(layers):
        prefix = f"pretrain/layer_{i}" if len(layers) > 1 else "pretrain"
        histories.append(fit_layer(layer, h, lr, batch_size, epochs, prefix, callback,
                                   (lambda epoch, i=i: on_epoch(i, epoch)) if on_epoch else None))
        if i + 1 < len(layers):
            h = encode(layer, h)
    return histories
