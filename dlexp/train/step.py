"""One SGD step on a minibatch, for any model, as fast as the hardware allows.

:class:`SGDStep` is shared by the MSGD loop (:mod:`dlexp.train.sgd`) and
layer-wise pretraining. It takes gradients with ``torch.autograd.grad`` and
applies the tutorials' update

    d = g + l1 sign(W) + 2 l2 W   (weights only),   b <- m b + d,   p <- p - lr b

with multi-tensor kernels, one call per operation (no optimizer object, no
``.grad`` fields to zero or re-allocate). It sums the loss (or a model's
monitors) on the device, read once per validation. Options, each measured in
bench/RESULTS.md: ``torch.compile`` of the whole step, a CUDA graph of the
step for small batches on CUDA, bf16 autocast; on a CPU, channels-last
convolution weights (LeNet 1.7x).
"""
import contextlib
import logging

import torch

log = logging.getLogger("dlexp")

def autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype for ``trainer.precision`` (None: plain fp32)."""
    if precision in (None, "fp32"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    raise ValueError(f"precision={precision!r} is not allowed: fp32 or bf16")


class _Update:
    """p <- p - lr * d,  d = g + l1 sign(W) + 2 l2 W  (weights only),  with momentum: b <- m b + d, d = b.

    The same rule as ``torch.optim.SGD(momentum=m, weight_decay=2 l2)`` on the
    weights (the L2 gradient), applied by ``torch._foreach_*`` kernels: one call
    per operation for all tensors. ``lr`` may be a float or a 0-d tensor (a CUDA
    graph or compiled step reads it). (``torch._fused_sgd_`` measured the same
    on the mlp protocol, so the simpler kernels stay.)
    """

    def __init__(self, params, n_weights, momentum, l1, l2):
        self.params = params
        self.nw = n_weights
        self.momentum, self.l1, self.l2 = float(momentum), float(l1), float(l2)
        self.bufs = [torch.zeros_like(p) for p in params] if momentum else []

    @torch.no_grad()
    def __call__(self, grads, lr):
        nw, params, bufs = self.nw, self.params, self.bufs
        grads = list(grads)
        if self.l1 and nw:
            torch._foreach_add_(grads[:nw], torch._foreach_sign(params[:nw]), alpha=self.l1)
        if self.l2 and nw:
            torch._foreach_add_(grads[:nw], params[:nw], alpha=2.0 * self.l2)
        if self.momentum:
            torch._foreach_mul_(bufs, self.momentum)
            torch._foreach_add_(bufs, grads)
            grads = bufs
        if isinstance(lr, torch.Tensor):
            torch._foreach_sub_(params, torch._foreach_mul(grads, lr))
        else:
            torch._foreach_add_(params, grads, alpha=-lr)


class SGDStep:
    """One SGD step on a minibatch, for any model: ``step(xb, yb)``.

    ``loss_fn(xb, yb)`` returns the loss, or ``(loss, monitors)`` with a dict
    of 0-d tensors; the step sums the loss (or the monitors) on the device,
    read with :meth:`read`. ``weights`` (a subset of ``params``) get the L1/L2
    penalty. Options: ``compile`` (``functional=True``: the whole step --
    forward, gradients by ``torch.func``, update, loss sum -- as one compiled
    function; otherwise torch.compile of ``loss_fn``), ``autocast`` (a dtype:
    the forward under autocast), ``cuda_graph`` (capture the whole step as a
    CUDA graph after three warm-up steps, and replay it; CUDA only).
    """

    def __init__(self, module, loss_fn, params, weights, lr, momentum=0.0, l1=0.0, l2=0.0, compile=False,
                 autocast=None, cuda_graph=False, functional=False):
        self.wid = {id(w) for w in weights}
        self.device = params[0].device
        self.module = module
        self.hyper = (momentum, l1, l2)
        self._set_params(params)
        self.lr = float(lr)
        self.loss_fn = loss_fn
        self.functional = None  # the compiled whole step, built after the first (eager) step
        self.want_functional = bool(compile and functional)
        if compile and not functional:
            self.loss_fn = torch.compile(loss_fn)
        self.autocast = autocast
        self.names = None       # monitor names, known after the first step
        self.sums = None        # their running sums on the device
        self.graph = None
        self.use_graph = bool(cuda_graph) and self.device.type == "cuda"
        self.cast_cache = not self.use_graph
        self.steps = 0

    def _set_params(self, params):
        weights = [p for p in params if id(p) in self.wid]
        others = [p for p in params if id(p) not in self.wid]
        self.params = weights + others  # penalised tensors first
        self.update = _Update(self.params, len(weights), *self.hyper)
        self.checked_unused = False

    # ------------------------------------------------------------------ core
    def _losses(self, xb, yb):
        if self.autocast is not None:
            # no cast cache: cached casts made outside a CUDA graph capture would be stale inside it
            with torch.autocast(device_type=self.device.type, dtype=self.autocast, cache_enabled=self.cast_cache):
                out = self.loss_fn(xb, yb)
        else:
            out = self.loss_fn(xb, yb)
        if isinstance(out, tuple):
            loss, monitors = out
            if self.names is None:
                self.names = list(monitors)
            return loss, [monitors[k].detach().float() for k in self.names]
        if self.names is None:
            self.names = ["loss"]
        return out, [out.detach().float()]

    def _step(self, xb, yb, lr):
        loss, values = self._losses(xb, yb)
        if self.checked_unused:
            grads = torch.autograd.grad(loss, self.params)
        else:  # parameters the loss does not use (a stack's pretraining biases) are left out from now on
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            if any(g is None for g in grads):
                self._set_params([p for p, g in zip(self.params, grads) if g is not None])
                grads = [g for g in grads if g is not None]
            self.checked_unused = True
        self.update(grads, lr)
        if self.sums is None:
            self.sums = [torch.zeros((), device=self.device) for _ in values]
        torch._foreach_add_(self.sums, values)

    def __call__(self, xb, yb=None):
        self.steps += 1
        if self.graph is not None:
            self.static_x.copy_(xb)
            if yb is not None:
                self.static_y.copy_(yb)
            self.graph.replay()
            return
        if self.use_graph and self.steps > 3:
            if self._capture(xb, yb):
                return
        if self.functional is not None:
            self.functional(xb, yb, self.lr_tensor)
            return
        if self.use_graph:  # warm-up steps run on a side stream, as capture requires
            side = self._side_stream()
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self._step(xb, yb, self.lr_tensor)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return
        self._step(xb, yb, self.lr)
        if self.want_functional and self.names == ["loss"]:
            self.functional = self._build_functional()

    def _build_functional(self):
        """One compiled function for the whole step: torch.func gradients, penalty, momentum, update, sum."""
        module, loss_fn, params, autocast = self.module, self.loss_fn, self.params, self.autocast
        momentum, l1, l2 = self.hyper
        nw, bufs, acc = self.update.nw, self.update.bufs, self.sums[0]
        names = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
        keys = [names[id(p)] for p in params]
        device_type = self.device.type

        def loss_of(values, xb, yb):
            with torch.nn.utils.stateless._reparametrize_module(module, dict(zip(keys, values))):
                if autocast is None:
                    return loss_fn(xb, yb)
                with torch.autocast(device_type=device_type, dtype=autocast):
                    return loss_fn(xb, yb)

        grad_and_value = torch.func.grad_and_value(loss_of)

        def step(xb, yb, lr):
            values = [p.detach() for p in params]
            grads, loss = grad_and_value(values, xb, yb)
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(values, grads)):
                    if i < nw:
                        if l1:
                            g = g + l1 * torch.sign(p)
                        if l2:
                            g = g + (2.0 * l2) * p
                    if momentum:
                        bufs[i].mul_(momentum).add_(g)
                        g = bufs[i]
                    p.sub_(lr * g)
                acc.add_(loss.detach().float())

        return torch.compile(step)

    # ------------------------------------------------------------------ state (resume)
    def state_dict(self) -> dict:
        """Momentum buffers by parameter name, the monitor sums, the learning rate."""
        names = {id(p): n for n, p in self.module.named_parameters()}
        return {"momentum": {names[id(p)]: b for p, b in zip(self.update.params, self.update.bufs)},
                "sums": dict(zip(self.names or [], self.sums or [])), "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        names = {id(p): n for n, p in self.module.named_parameters()}
        with torch.no_grad():
            for p, b in zip(self.update.params, self.update.bufs):
                b.copy_(state["momentum"][names[id(p)]])
        if state["sums"]:
            self.names = list(state["sums"])
            self.sums = [torch.as_tensor(v, device=self.device).clone() for v in state["sums"].values()]
        self.set_lr(state["lr"])

    # ------------------------------------------------------------------ lr, readings
    def set_lr(self, lr: float) -> None:
        lr = float(lr)
        if lr != self.lr:
            self.lr = lr
            if hasattr(self, "_lr_tensor"):
                self._lr_tensor.fill_(lr)

    @property
    def lr_tensor(self):
        if not hasattr(self, "_lr_tensor"):
            self._lr_tensor = torch.tensor(self.lr, device=self.device)
        return self._lr_tensor

    def read(self) -> dict:
        """The sums since the last read, by monitor name (one host sync), then reset."""
        if self.sums is None:
            return {}
        values = torch.stack(self.sums).tolist()
        for s in self.sums:
            s.zero_()
        return dict(zip(self.names, values))

    def read_loss(self) -> float:
        return self.read().get("loss", float("nan"))

    # ------------------------------------------------------------------ CUDA graphs
    def _side_stream(self):
        if not hasattr(self, "_stream"):
            self._stream = torch.cuda.Stream(device=self.device)
        return self._stream

    def _capture(self, xb, yb) -> bool:
        """Capture one step as a CUDA graph on static input buffers, then replay it for (xb, yb)."""
        self.use_graph = False
        try:
            self.static_x = xb.detach().clone()
            self.static_y = yb.detach().clone() if yb is not None else None
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step(self.static_x, self.static_y, self.lr_tensor)
        except Exception as e:  # capture is best effort: stay eager
            log.warning("CUDA graph capture failed (%s: %s); training without CUDA graphs", type(e).__name__, e)
            torch.cuda.synchronize(self.device)
            return False
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
