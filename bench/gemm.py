"""The matmul bound: the step's own matrix products and convolutions, replayed alone.

:func:`record` runs one training step (forward, loss, gradients) under a
dispatch mode that keeps every matrix product and convolution it dispatches
(``mm``, ``addmm``, ``bmm``, ``convolution``, ``convolution_backward``, ...)
with its argument shapes and strides, and counts the step's FLOPs with
``torch.utils.flop_counter``. :func:`replay_seconds` then times those same
calls, with fresh tensors of the same shapes and strides, back to back: the
time the step's dense maths takes on this machine, in this run, with
nothing else. dlexp's time divided into it is how close the trainer gets to
the hardware.
"""
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .timing import measure

DENSE = {"mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "matmul", "linear", "convolution",
         "convolution_backward", "_convolution", "mkldnn_convolution", "conv2d"}


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ in DENSE:
            self.calls.append((func, _describe(args), _describe(kwargs)))
        return func(*args, **kwargs)


def _describe(obj):
    if isinstance(obj, torch.Tensor):
        return ("T", tuple(obj.shape), tuple(obj.stride()), obj.dtype, obj.device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_describe(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _describe(v) for k, v in obj.items()}
    return obj


def _make(desc, gen):
    if isinstance(desc, tuple) and len(desc) == 5 and desc[0] == "T":
        _, shape, stride, dtype, device = desc
        t = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        if dtype.is_floating_point:
            t.uniform_(-1, 1, generator=gen) if device.type == "cpu" else t.uniform_(-1, 1)
        else:
            t.zero_()
        return t
    if isinstance(desc, (list, tuple)):
        return type(desc)(_make(d, gen) for d in desc)
    if isinstance(desc, dict):
        return {k: _make(v, gen) for k, v in desc.items()}
    return desc


def record(fn):
    """Run ``fn()`` once; returns (dense calls, FLOPs)."""
    counter = FlopCounterMode(display=False)
    rec = _Recorder()
    with counter, rec:
        fn()
    return rec.calls, counter.get_total_flops()


def replay_seconds(calls, repeat: int = 20, sync=None) -> float:
    """Seconds for one pass over ``calls`` (the best quiet repetition of ``repeat`` passes)."""
    if not calls:
        return 0.0
    gen = torch.Generator().manual_seed(0)
    ready = [(func, _make(a, gen), _make(k, gen)) for func, a, k in calls]

    def one_pass():
        for func, a, k in ready:
            func(*a, **k)

    for _ in range(2):
        one_pass()

    def run():
        for _ in range(repeat):
            one_pass()

    return measure(run, reps=3, sync=sync).seconds / repeat
