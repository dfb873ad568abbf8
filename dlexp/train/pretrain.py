"""Greedy layer-wise unsupervised training (the SdA and DBN tutorials' pretraining).

Every layer to pretrain offers ``pretrain_loss(x) -> (loss, monitors)``: SGD
descends ``loss`` (for an RBM, a surrogate whose gradient is the CD-k update)
and ``monitors`` holds 0-d tensors to report (reconstruction cost,
pseudo-likelihood, ...). Layer ``i`` trains on the clean, deterministic
output ``encode()`` of the layers below it, computed once on the device.
Monitors are summed on the device and read once an epoch.

The step is :class:`dlexp.train.step.SGDStep` (gradients by
``torch.autograd.grad``, multi-tensor update kernels, optional ``torch.compile``
and bf16 autocast). Data held in host memory (a chunked split, see
:mod:`dlexp.data.device`) streams through the device ``chunk`` rows at a time.
"""
import math
import time

import torch

from .result import Diverged
from .state import epoch_permutation, polling, rng_state, set_rng_state, to_torch
from .step import SGDStep, autocast_dtype


def _device(layer):
    return next(layer.parameters()).device


@torch.no_grad()
def encode(layer, x, batch_size: int = 10000):
    """``layer.encode`` of every row of ``x``, in batches; the result stays where ``x`` is."""
    device = _device(layer)
    out = torch.cat([layer.encode(x[i:i + batch_size].to(device, non_blocking=True)).to(x.device)
                     for i in range(0, len(x), batch_size)])
    if out.device.type == "cpu" and device.type == "cuda":
        out = out.pin_memory()
    return out


def _as_split(x, layer, batch_size, chunk):
    from ..data.device import DeviceSplit

    if hasattr(x, "batches"):
        return x
    device = _device(layer)
    if x.device != device or chunk is not None:
        return DeviceSplit(x, None, chunk=chunk or 100 * batch_size, device=device)
    return DeviceSplit(x, None)


def fit_layer(layer, x, lr: float, batch_size: int, epochs: int, prefix: str = "pretrain", callback=None,
              on_epoch=None, *, compile: bool = False, precision: str = "fp32", shuffle: bool = False,
              generator=None, chunk=None, checkpoint_every: int = 0, on_checkpoint=None, state=None,
              stop=None) -> list:
    """Train one layer by minibatch SGD; returns the mean of each monitor per epoch.

    ``x``: the rows (a tensor on the layer's device, or in host memory: then it
    streams ``chunk`` rows at a time), or a DeviceSplit. ``shuffle``: a new
    permutation of the rows every epoch (from ``generator``).
    ``on_checkpoint(state)`` gets the loop's state (position, monitor sums,
    history, random generators; not the parameters, which the caller owns)
    every ``checkpoint_every`` iterations and when ``stop.requested``;
    ``state`` continues from such a state.
    """
    callback = callback or (lambda event, metrics, step: None)
    split = _as_split(x, layer, batch_size, chunk)
    device = _device(layer)
    step = SGDStep(layer, lambda xb, yb: layer.pretrain_loss(xb), list(layer.parameters()), [], lr=lr,
                   compile=compile, autocast=autocast_dtype(precision, device))
    n_batches = max(1, len(split) // batch_size)
    pos = {"it": -1, "epoch": 0, "batch": 0, "seconds": 0.0}
    history = []
    if state is not None:
        pos.update(state["position"])
        history = [dict(h) for h in state["history"]]
        step.load_state_dict(to_torch(state["step"], device))
        set_rng_state(state["rng"])
    with polling(stop):
        while pos["epoch"] < epochs or pos["batch"] > 0:
            if pos["batch"] == 0:
                pos["epoch"] += 1
                pos["seconds"] = 0.0
            epoch = pos["epoch"]
            start = time.perf_counter() - pos["seconds"]
            perm, epoch_generator = epoch_permutation(len(split), shuffle, generator,
                                                      state and state["rng"].get("generator"), split.x.device)
            state = None
            for i, (xb, _) in enumerate(split.batches(batch_size, perm, n_batches)):
                if i < pos["batch"]:
                    continue  # resumed in the middle of this epoch
                pos["it"] += 1
                pos["batch"] = i + 1
                step(xb)
                interrupted = stop is not None and stop.requested
                if on_checkpoint is not None and ((checkpoint_every and (pos["it"] + 1) % checkpoint_every == 0)
                                                  or interrupted):
                    pos["seconds"] = time.perf_counter() - start
                    on_checkpoint({"position": dict(pos), "history": list(history), "step": step.state_dict(),
                                   "rng": {**rng_state(), "generator": epoch_generator}})
                if interrupted:
                    raise KeyboardInterrupt(f"stopped at {prefix} epoch {epoch}, state saved")
            pos["batch"] = 0
            means = {k: v / n_batches for k, v in step.read().items()}
            if not all(math.isfinite(v) for v in means.values()):
                raise Diverged(f"{prefix} diverged in epoch {epoch} (lr={lr:g}): "
                               + ", ".join(f"{k} {v}" for k, v in means.items()))
            seconds = time.perf_counter() - start
            history.append(means)
            callback("pretrain", {**{f"{prefix}/{k}": v for k, v in means.items()},
                                  f"{prefix}/epoch_seconds": seconds}, epoch)
            if on_epoch is not None:
                on_epoch(epoch)
    return history


def pretrain_stack(model, x, lr: float, batch_size: int, epochs: int, callback=None, on_epoch=None, *,
                   compile: bool = False, precision: str = "fp32", shuffle: bool = False, generator=None,
                   chunk=None, checkpoint_every: int = 0, on_checkpoint=None, state=None, stop=None) -> list:
    """Pretrain ``model.pretrain_layers()`` bottom-up; metrics ``pretrain/layer_<i>/<monitor>``.

    ``on_checkpoint(state)`` gets the whole pretraining state (all parameters,
    the layer, its loop state); ``state`` continues from one: the layers below
    are done, and their codes are recomputed from their final parameters.
    """
    histories, first, loop_state = [], 0, None
    if state is not None:
        model.load_state_dict(to_torch(state["model"], _device(model)))
        histories, first, loop_state = [list(h) for h in state["histories"]], state["layer"], state["loop"]
    layers = model.pretrain_layers()
    h = x.x if hasattr(x, "batches") else x
    for i, layer in enumerate(layers):
        if i >= first:
            def save(loop, i=i):
                on_checkpoint({"phase": "pretrain", "layer": i, "histories": histories, "loop": loop,
                               "model": model.state_dict()})

            prefix = f"pretrain/layer_{i}" if len(layers) > 1 else "pretrain"
            source = x if i == 0 and hasattr(x, "batches") else h
            histories.append(fit_layer(layer, source, lr, batch_size, epochs, prefix, callback,
                                       (lambda epoch, i=i: on_epoch(i, epoch)) if on_epoch else None,
                                       compile=compile, precision=precision, shuffle=shuffle, generator=generator,
                                       chunk=chunk, checkpoint_every=checkpoint_every,
                                       on_checkpoint=save if on_checkpoint else None,
                                       state=loop_state if i == first else None, stop=stop))
        if i + 1 < len(layers):
            h = encode(layer, h)
    return histories
