"""Greedy layer-wise unsupervised training (the SdA and DBN tutorials' pretraining).

Every layer to pretrain offers ``pretrain_loss(x) -> (loss, monitors)``: SGD
descends ``loss`` (for an RBM, a surrogate whose gradient is the CD-k update),
``theta <- theta - lr * d loss / d theta``, and ``monitors`` holds 0-d tensors
to report (reconstruction cost, pseudo-likelihood, ...). Layer ``i`` trains on
the clean, deterministic output ``encode()`` of the layers below it, computed
once on the device. Monitors are summed on the device and read once an epoch.

The step is :class:`dlexp.train.step.SGDStep`, the loop (position, shuffling,
checkpoints, stop requests) :class:`dlexp.train.loop.Loop`, as for
fine-tuning. Data held in host memory (a chunked split, see
:mod:`dlexp.data.device`) streams through the device ``chunk`` rows at a time.
"""
import math
from dataclasses import replace

import torch

from ..data.device import DeviceSplit
from .loop import Loop, LoopOptions
from .result import Diverged
from .state import polling, to_torch
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
    if isinstance(x, DeviceSplit):
        return x
    device = _device(layer)
    if x.device != device or chunk is not None:
        return DeviceSplit(x, None, chunk=chunk or 100 * batch_size, device=device)
    return DeviceSplit(x, None)


def fit_layer(layer, x, lr: float, batch_size: int, epochs: int, prefix: str = "pretrain", callback=None,
              on_epoch=None, options: LoopOptions = None, chunk=None, state=None) -> list:
    """Train one layer by minibatch SGD; returns the mean of each monitor per epoch.

    ``x``: the rows (a tensor on the layer's device, or in host memory: then it
    streams ``chunk`` rows at a time), or a DeviceSplit. ``options``: as for
    fine-tuning (shuffling, checkpoints, stop, compile, precision). A checkpoint
    holds the loop's state (position, monitor sums, history, random
    generators; not the parameters, which the caller owns); ``state``
    continues from such a state.
    """
    callback = callback or (lambda event, metrics, step: None)
    options = options or LoopOptions()
    split = _as_split(x, layer, batch_size, chunk)
    device = _device(layer)
    step = SGDStep(layer, lambda xb, yb: layer.pretrain_loss(xb), list(layer.parameters()), [], lr=lr,
                   compile=options.compile, autocast=autocast_dtype(options.precision, device), objective="pretrain")
    history = []
    if state is not None:
        history = [dict(h) for h in state["history"]]
        step.load_state_dict(to_torch(state["step"], device))
    loop = Loop(split, batch_size, epochs, options,
                lambda: {"history": list(history), "step": step.state_dict()}, state)
    with polling(options.stop):
        for epoch in loop.epochs():
            for xb, _ in loop.batches():
                step(xb)
            means = {k: v / loop.n_batches for k, v in step.read().items()}
            if not all(math.isfinite(v) for v in means.values()):
                raise Diverged(f"{prefix} diverged in epoch {epoch} (lr={lr:g}): "
                               + ", ".join(f"{k} {v}" for k, v in means.items()))
            history.append(means)
            callback("pretrain", {**{f"{prefix}/{k}": v for k, v in means.items()},
                                  f"{prefix}/epoch_seconds": loop.epoch_seconds(), **loop.where()}, epoch)
            if on_epoch is not None:
                on_epoch(epoch)
    return history


def pretrain_stack(model, x, lr: float, batch_size: int, epochs: int, callback=None, on_epoch=None,
                   options: LoopOptions = None, chunk=None, state=None) -> list:
    """Pretrain ``model.pretrain_layers()`` bottom-up; metrics ``pretrain/layer_<i>/<monitor>``.

    A checkpoint holds the whole pretraining state (all parameters, the layer,
    its loop state); ``state`` continues from one: the layers below are done,
    and their codes are recomputed from their final parameters.
    """
    options = options or LoopOptions()
    histories, first, loop_state = [], 0, None
    if state is not None:
        model.load_state_dict(to_torch(state["model"], _device(model)))
        histories, first, loop_state = [list(h) for h in state["histories"]], state["layer"], state["loop"]
    layers = model.pretrain_layers()
    h = x.x if isinstance(x, DeviceSplit) else x
    for i, layer in enumerate(layers):
        if i >= first:
            def save(loop, i=i):
                options.on_checkpoint({"phase": "pretrain", "layer": i, "histories": histories, "loop": loop,
                                       "model": model.state_dict()})

            layer_options = options if options.on_checkpoint is None else replace(options, on_checkpoint=save)
            prefix = f"pretrain/layer_{i}" if len(layers) > 1 else "pretrain"
            source = x if i == 0 and isinstance(x, DeviceSplit) else h
            histories.append(fit_layer(layer, source, lr, batch_size, epochs, prefix, callback,
                                       (lambda epoch, i=i: on_epoch(i, epoch)) if on_epoch else None,
                                       layer_options, chunk, loop_state if i == first else None))
        if i + 1 < len(layers):
            h = encode(layer, h)
    return histories

