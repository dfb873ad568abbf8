"""Speed machinery around :class:`dlexp.train.step.SGDStep`, each part measured in bench/RESULTS.md.

* :func:`compiled_step`: the whole step -- forward, gradients by ``torch.func``, the
  update (:func:`~dlexp.train.step.sgd_update`), loss sum -- as one ``torch.compile``d function.
* :class:`CudaGraphStep`: the step captured as a CUDA graph after three warm-up
  steps on a side stream, then replayed on static input buffers (small batches on CUDA).
* :func:`conv_layout`: convolution weights in channels_last while training on a CPU.

A model's closed-form step (:mod:`dlexp.train.fused`) is not compiled: ``torch.compile`` of it
(default, ``max-autotune-no-cudagraphs``, the C++ wrapper) measured 1.07-1.14x slower on a CPU
than the eager closed form, after 9-21 s of compiling; ``trainer.compile=true`` keeps autograd.
"""
import contextlib
import logging

import torch

from .. import private_api

log = logging.getLogger("dlexp")


def compiled_step(step):
    """``fn(xb, yb)``: one compiled function for the whole step of ``step`` (a SGDStep)."""
    module, loss_fn, params, autocast = step.module, step.loss_fn, step.params, step.autocast
    names = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
    keys = [names[id(p)] for p in params]
    device_type, acc = step.device.type, step.sums[0]
    reparametrize = private_api.reparametrize()

    def loss_of(values, xb, yb):
        with reparametrize(module, dict(zip(keys, values))):
            if autocast is None:
                return loss_fn(xb, yb)
            with torch.autocast(device_type=device_type, dtype=autocast):
                return loss_fn(xb, yb)

    grad_and_value = torch.func.grad_and_value(loss_of)

    def whole(xb, yb, lr):
        values = [p.detach() for p in params]
        grads, loss = grad_and_value(values, xb, yb)
        step.update(grads, lr, values)
        with torch.no_grad():
            acc.add_(loss.detach().float())

    fn = torch.compile(whole)
    return lambda xb, yb: fn(xb, yb, step.lr_tensor)


class CudaGraphStep:
    """Warm up on a side stream, capture one step on static buffers, then replay it (best effort)."""

    WARMUP = 3

    def __init__(self, step):
        self.step, self.graph, self.calls = step, None, 0
        self.stream = torch.cuda.Stream(device=step.device)

    def __call__(self, xb, yb):
        self.calls += 1
        if self.graph is not None:
            self.static_x.copy_(xb)
            if yb is not None:
                self.static_y.copy_(yb)
            self.graph.replay()
        elif self.calls <= self.WARMUP or not self._capture(xb, yb):
            self._on_side_stream(xb, yb)

    def _on_side_stream(self, xb, yb):
        current = torch.cuda.current_stream(self.step.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            self.step.eager(xb, yb, self.step.lr_tensor, cache=False)
        current.wait_stream(self.stream)

    def _capture(self, xb, yb) -> bool:
        """Capture the step on copies of (xb, yb) and replay it once; False (stay eager) if capture fails."""
        try:
            self.static_x = xb.detach().clone()
            self.static_y = yb.detach().clone() if yb is not None else None
            torch.cuda.synchronize(self.step.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                # no autocast cast cache: casts cached outside the capture would be stale inside it
                self.step.eager(self.static_x, self.static_y, self.step.lr_tensor, cache=False)
        except Exception as e:
            log.warning("CUDA graph capture failed (%s: %s); training without CUDA graphs", type(e).__name__, e)
            torch.cuda.synchronize(self.step.device)
            self.step.fast = None
            self.step.eager(xb, yb, self.step.lr)
            return True
        self.graph = graph
        graph.replay()  # capture records the step without running it
        return True


@contextlib.contextmanager
def conv_layout(model, device):
    """Convolution weights in channels_last while training on a CPU (oneDNN's fast layout: LeNet's
    step takes about half the time), back to the default layout afterwards. No-op without 4-d
    parameters."""
    convs = device.type == "cpu" and any(p.dim() == 4 for p in model.parameters())
    if convs:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if convs:
            model.to(memory_format=torch.contiguous_format)
