"""One SGD step on a minibatch, for any model (the MSGD loop and layer-wise pretraining).

The update is the tutorials' rule, for every parameter p with gradient g:

    d = g + l1 sign(W) + 2 l2 W          (the penalty's gradient: weights W only)
    b <- m b + d,  d = b                 (with momentum m)
    p <- p - lr d

:func:`sgd_update` applies it with multi-tensor kernels, one call per
operation for all tensors (no optimizer object, no ``.grad`` fields to zero).
:class:`SGDStep` computes the loss, its gradients by ``torch.autograd.grad``,
applies the update and sums the loss (or a model's monitors) on the device,
read once per validation. When the model offers the objective's gradient in
closed form (:meth:`dlexp.models.base.Model.closed_form`; the caller names the
objective) and no autocast or compile is asked, the step uses it instead of
autograd: a few in-place kernels, the update added straight into the
parameters (:mod:`dlexp.train.fused`), the same training to float rounding.
A compiled step and CUDA-graph replay (:mod:`dlexp.train.accel`) take over
after the first step when asked.
"""
import torch

from . import accel, fused


def autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype for ``trainer.precision`` (None: plain fp32)."""
    if precision in (None, "fp32"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    raise ValueError(f"precision={precision!r} is not allowed: fp32 or bf16")


@torch.no_grad()
def sgd_update(params, grads, lr, n_weights=0, l1=0.0, l2=0.0, momentum=0.0, bufs=()):
    """p <- p - lr d, d = g + l1 sign(W) + 2 l2 W (the first ``n_weights`` params), b <- m b + d, d = b.

    The same rule as ``torch.optim.SGD(momentum=m, weight_decay=2 l2)`` on the
    weights. ``lr`` is a float or a 0-d tensor (read by a compiled step or a
    CUDA graph). (``torch._fused_sgd_`` measured the same; the simpler kernels stay.)
    """
    grads, nw = list(grads), n_weights
    if l1 and nw:
        torch._foreach_add_(grads[:nw], torch._foreach_sign(params[:nw]), alpha=l1)
    if l2 and nw:
        torch._foreach_add_(grads[:nw], params[:nw], alpha=2.0 * l2)
    if momentum:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        grads = bufs
    if isinstance(lr, torch.Tensor):
        torch._foreach_sub_(params, torch._foreach_mul(grads, lr))
    else:
        torch._foreach_add_(params, grads, alpha=-lr)


class SGDStep:
    """One SGD step on a minibatch: ``step(xb, yb)``.

    ``loss_fn(xb, yb)`` returns the loss, or ``(loss, monitors)`` with a dict
    of 0-d tensors; the step sums the loss (or the monitors) on the device,
    read with :meth:`read`. ``weights`` (a subset of ``params``) get the L1/L2
    penalty. Options: ``compile`` (``functional=True``: the whole step as one
    compiled function; otherwise ``torch.compile`` of ``loss_fn``),
    ``autocast`` (a dtype for the forward), ``cuda_graph`` (CUDA only).
    ``objective``: what ``loss_fn`` computes in the model's terms, ``"nll"``
    (the mean NLL of ``module(x)``) or ``"pretrain"`` (``module.pretrain_loss(x)``);
    if ``module.closed_form_for(objective)`` offers its gradient, and neither
    autocast nor compile is asked, the step uses that instead of autograd
    (``closed_form=False`` turns it off).
    """

    def __init__(self, module, loss_fn, params, weights, lr, momentum=0.0, l1=0.0, l2=0.0, compile=False,
                 autocast=None, cuda_graph=False, functional=False, objective=None, closed_form=True):
        self.wid = {id(w) for w in weights}
        self.device = params[0].device
        self.module, self.autocast = module, autocast
        self.momentum, self.l1, self.l2 = float(momentum), float(l1), float(l2)
        self.bufs = []
        self._set_params(params)
        self.closed = None  # the model's closed-form gradient, when it has one and the options allow it
        if objective is not None and closed_form and autocast is None and not compile:
            offer = getattr(module, "closed_form_for", None)  # a Model's, for the objective it still computes
            self.closed = offer(objective) if offer is not None else None
        self._slots = None
        self.lr = float(lr)
        self.lr_tensor = torch.tensor(self.lr, device=self.device)
        self.want_compiled = bool(compile and functional)
        self.loss_fn = torch.compile(loss_fn) if compile and not functional else loss_fn
        self.names = None  # monitor names, known after the first step
        self.sums = None   # their running sums on the device
        use_graph = bool(cuda_graph) and self.device.type == "cuda"
        self.fast = accel.CudaGraphStep(self) if use_graph else None  # takes over the steps when set

    def _set_params(self, params):
        weights = [p for p in params if id(p) in self.wid]
        old = dict(zip(map(id, getattr(self, "params", [])), self.bufs))  # momentum kept for tensors kept
        self.params = weights + [p for p in params if id(p) not in self.wid]  # penalised tensors first
        self.n_weights = len(weights)
        self.bufs = [old[id(p)] if id(p) in old else torch.zeros_like(p) for p in self.params] \
            if self.momentum else []
        self.checked_unused = False

    def losses(self, xb, yb, cache=True):
        """(loss, [monitor values]) of a minibatch, the forward under autocast if set."""
        if self.autocast is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast, cache_enabled=cache):
                out = self.loss_fn(xb, yb)
        else:
            out = self.loss_fn(xb, yb)
        if isinstance(out, tuple):
            loss, monitors = out
            self.names = self.names or list(monitors)
            return loss, [monitors[k].detach().float() for k in self.names]
        self.names = self.names or ["loss"]
        return out, [out.detach().float()]

    def update(self, grads, lr, params=None) -> None:
        """:func:`sgd_update` of ``params`` (default: the step's parameters; a compiled step passes its own views)."""
        sgd_update(self.params if params is None else params, grads, lr, self.n_weights, self.l1, self.l2,
                   self.momentum, self.bufs)

    def eager(self, xb, yb, lr, cache=True) -> None:
        """Forward, gradients, update, monitor sums: the step itself."""
        if self.closed is not None:
            self.closed_step(xb, yb, lr)
            return
        loss, values = self.losses(xb, yb, cache)
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

    @torch.no_grad()
    def closed_step(self, xb, yb, lr) -> None:
        """The step with the model's closed-form gradient: no autograd graph, the update fused into it."""
        monitors, pairs = self.closed(xb, yb)
        if self._slots is None or len(pairs) != self._n_pairs:
            self._align(pairs)
        grads = [pairs[j][1] for j in self._slots]
        if isinstance(lr, torch.Tensor):  # read at replay (a CUDA graph): no GEMM alpha can hold it
            sgd_update(self.params, [fused.dense(g) for g in grads], lr, self.n_weights, self.l1, self.l2,
                       self.momentum, self.bufs)
        else:
            fused.update(self.params, grads, lr, self.n_weights, self.l1, self.l2, self.momentum, self.bufs)
        if self.names is None:
            self.names = list(monitors)
        if self.sums is None:
            self.sums = [torch.zeros((), device=self.device) for _ in self.names]
        for total, k in zip(self.sums, self.names):  # (few monitors: one add each beats a foreach call on a CPU)
            total.add_(monitors[k])

    def _align(self, pairs) -> None:
        """Where each parameter's gradient is in the closed form's list; parameters it leaves out (the
        objective does not use them) are left out from now on, as on the autograd path."""
        where = {id(p): j for j, (p, _) in enumerate(pairs)}
        if any(id(p) not in where for p in self.params):
            self._set_params([p for p in self.params if id(p) in where])
        self._slots = [where[id(p)] for p in self.params]
        self._n_pairs = len(pairs)
        self.checked_unused = True

    def __call__(self, xb, yb=None):
        if self.fast is not None:
            self.fast(xb, yb)
            return
        self.eager(xb, yb, self.lr)
        if self.want_compiled and self.names == ["loss"]:
            self.fast = accel.compiled_step(self)

    # ------------------------------------------------------------------ state (resume)
    def state_dict(self) -> dict:
        """Momentum buffers by parameter name, the monitor sums, the learning rate."""
        names = {id(p): n for n, p in self.module.named_parameters()}
        return {"momentum": {names[id(p)]: b for p, b in zip(self.params, self.bufs)},
                "sums": dict(zip(self.names or [], self.sums or [])), "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        names = {id(p): n for n, p in self.module.named_parameters()}
        with torch.no_grad():
            for p, b in zip(self.params, self.bufs):
                if names[id(p)] in state["momentum"]:  # not there: unused by the loss, left out at the first step
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
            self.lr_tensor.fill_(lr)

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
