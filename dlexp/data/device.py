"""Device residency: each split is copied to the device once; minibatches are index slices.

This is the tutorials' shared-variable advice: moving the whole data set to
GPU memory once avoids a host-to-device copy per minibatch, which would
otherwise dominate the time of a small model.

When the training split does not fit (``dataset.device_chunk``), it stays in
host memory (pinned, for a GPU) and only a *chunk* of whole minibatches is
resident at a time; the trainer walks the chunks in order and each one is
refilled from the host, the tutorials' advice for data larger than the GPU.
On CUDA the next chunk is copied on a side stream while the current one
trains (two resident buffers), so the copy is hidden behind the compute.
Minibatch ``i`` is the same rows whether chunked or not (with or without a
shuffling permutation), so both give the same training.
"""
from dataclasses import dataclass
from typing import Iterator, Optional

import torch


# Shuffled minibatches of a resident split are gathered this many bytes at a time.
GATHER_BYTES_CPU = 1 << 20
GATHER_BYTES_CUDA = 1 << 28


class DeviceError(ValueError):
    pass


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable device is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"trainer.device={name!r} is not available: torch {torch.__version__} sees no CUDA "
                              "device; use trainer.device=auto or cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"trainer.device={name!r} is not available: {torch.cuda.device_count()} CUDA "
                              f"device(s), indices 0..{torch.cuda.device_count() - 1}")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("trainer.device='mps' is not available here; use trainer.device=auto or cpu")
    return torch.device(name)


@dataclass
class DeviceSplit:
    """One split: ``x`` (N, D) float32 and ``y`` (N,) int64.

    Fully resident (``chunk`` None): both live on ``device``. Chunked: they
    live in host memory and :meth:`batches` streams ``chunk`` rows at a time
    through resident buffers on ``device``.
    """

    x: torch.Tensor
    y: Optional[torch.Tensor]  # None for unlabelled data (pretraining)
    chunk: Optional[int] = None
    device: Optional[torch.device] = None

    def __post_init__(self):
        if self.device is None:
            self.device = self.x.device
        self._buffers = None
        self._gather = None

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, perm: Optional[torch.Tensor] = None, n_batches: Optional[int] = None
                ) -> Iterator[tuple]:
        """Minibatches ``(x_i, y_i)`` on the device, i = 0 .. n_batches - 1 (default len // batch_size).

        Minibatch i holds rows ``perm[i*b:(i+1)*b]`` (rows ``i*b:(i+1)*b`` without ``perm``),
        whether the split is resident or chunked. Resident without ``perm``:
        views, no copy; with ``perm``: one gather per epoch. The tensors of a
        chunked split are views of a buffer that is refilled for a later chunk:
        use each minibatch before asking for the next one (the trainer does).
        """
        b = batch_size
        n = len(self) // b if n_batches is None else n_batches
        if self.chunk is None:
            x, y = self.x, self.y
            if perm is None:
                yield from _views(x[:n * b], None if y is None else y[:n * b], b)
                return
            # Shuffled: gather a group of minibatches at a time into a reused buffer (on a CPU, about
            # 1 MB: the rows are still in cache when the step reads them; no new memory per epoch).
            perm = perm.to(x.device)
            row_bytes = x[:1].numel() * x.element_size()
            target = GATHER_BYTES_CUDA if x.device.type == "cuda" else GATHER_BYTES_CPU
            group = max(1, min(n, target // max(1, b * row_bytes)))
            rows = group * b
            if self._gather is None or self._gather[0].shape[0] < rows:
                self._gather = (torch.empty((rows, *x.shape[1:]), dtype=x.dtype, device=x.device),
                                None if y is None else torch.empty(rows, dtype=y.dtype, device=y.device))
            gx, gy = self._gather
            for first in range(0, n, group):
                count = min(group, n - first)
                idx = perm[first * b:(first + count) * b]
                torch.index_select(x, 0, idx, out=gx[:count * b])
                if y is not None:
                    torch.index_select(y, 0, idx, out=gy[:count * b])
                yield from _views(gx[:count * b], None if y is None else gy[:count * b], b)
            return
        per_chunk = max(1, self.chunk // b)
        plan = [(first * b, min(per_chunk, n - first) * b) for first in range(0, n, per_chunk)]
        if self._buffers is None or self._buffers.rows < per_chunk * b:
            self._buffers = _ChunkBuffers(self, per_chunk * b)
        buffers = self._buffers
        buffers.start_epoch(plan, None if perm is None else perm.to(self.x.device))
        for j in range(len(plan)):
            xc, yc = buffers.get(j)
            for i in range(max(1, len(xc) // b)):
                yield xc[i * b:(i + 1) * b], None if yc is None else yc[i * b:(i + 1) * b]


def _views(x, y, b: int):
    """The minibatch views (x_i, y_i) of ``b`` rows each, made in one call each (``split``: a fraction of
    the cost of one slicing a minibatch)."""
    return zip(x.split(b), y.split(b)) if y is not None else ((xb, None) for xb in x.split(b))


class _ChunkBuffers:
    """The resident buffers of a chunked split.

    CPU: one buffer, refilled in place (a copy, or a gather with a
    permutation). CUDA: two buffers used in turn; chunk j+1 is copied from
    pinned host memory on a side stream into the buffer chunk j-1 used (once
    the compute queued on it is done) while chunk j trains. With a permutation
    the rows are first gathered on the host into a pinned staging buffer.
    """

    def __init__(self, split: DeviceSplit, rows: int):
        self.split, self.rows = split, rows
        dev = split.device
        self.cuda = dev.type == "cuda"
        shape = split.x.shape[1:]
        n_buf = 2 if self.cuda else 1
        self.x = [torch.empty((rows, *shape), dtype=split.x.dtype, device=dev) for _ in range(n_buf)]
        self.labelled = split.y is not None
        self.y = [torch.empty(rows, dtype=split.y.dtype, device=dev) if self.labelled else None
                  for _ in range(n_buf)]
        self.plan, self.perm = [], None
        self.last = None      # buffer of the chunk being trained
        self.pending = None   # (chunk index, buffer) of a prefetch in flight
        if self.cuda:
            self.stream = torch.cuda.Stream(device=dev)
            self.ready = [torch.cuda.Event() for _ in range(n_buf)]  # copy into buffer k done
            self.free = [torch.cuda.Event() for _ in range(n_buf)]   # compute reading buffer k done
            self.stage_x = [torch.empty((rows, *shape), dtype=split.x.dtype).pin_memory() for _ in range(n_buf)]
            self.stage_y = [torch.empty(rows, dtype=split.y.dtype).pin_memory() if self.labelled else None
                            for _ in range(n_buf)]

    def start_epoch(self, plan, perm):
        self.plan, self.perm, self.pending = plan, perm, None

    def _copy(self, j, k):
        """Issue the copy of chunk j into buffer k."""
        start, rows = self.plan[j]
        x, y, perm = self.split.x, self.split.y, self.perm
        pairs = [(x, self.x[k])] + ([(y, self.y[k])] if self.labelled else [])
        if not self.cuda:
            for src, dst in pairs:
                if perm is None:
                    dst[:rows].copy_(src[start:start + rows])
                else:
                    torch.index_select(src, 0, perm[start:start + rows], out=dst[:rows])
            return
        if perm is None:
            sources = [src[start:start + rows] for src, _ in pairs]
        else:
            self.ready[k].synchronize()  # the previous copy out of staging buffer k has finished
            stages = [self.stage_x[k]] + ([self.stage_y[k]] if self.labelled else [])
            sources = []
            for (src, _), stage in zip(pairs, stages):
                torch.index_select(src, 0, perm[start:start + rows], out=stage[:rows])
                sources.append(stage[:rows])
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(self.free[k])  # nothing still reads buffer k
            for s, (_, dst) in zip(sources, pairs):
                dst[:rows].copy_(s, non_blocking=True)
            self.ready[k].record(self.stream)

    def get(self, j):
        """Chunk j of the plan, resident: (x, y) views of a buffer."""
        rows = self.plan[j][1]
        if not self.cuda:
            self._copy(j, 0)
            return self.x[0][:rows], self.y[0][:rows] if self.labelled else None
        cur = torch.cuda.current_stream(self.split.device)
        if self.last is not None:
            self.free[self.last].record(cur)  # all compute on the previous chunk has been queued
        if self.pending is not None and self.pending[0] == j:
            k = self.pending[1]
        else:
            k = 0 if self.last is None else 1 - self.last
            self._copy(j, k)
        cur.wait_event(self.ready[k])
        self.last, self.pending = k, None
        if j + 1 < len(self.plan):  # prefetch the next chunk into the other buffer
            self._copy(j + 1, 1 - k)
            self.pending = (j + 1, 1 - k)
        return self.x[k][:rows], self.y[k][:rows] if self.labelled else None


@dataclass
class DeviceData:
    train: DeviceSplit
    valid: DeviceSplit
    test: DeviceSplit
    image_shape: tuple
    n_classes: int


def to_device(dataset, device: torch.device, chunk: Optional[int] = None) -> DeviceData:
    """Copy the splits to ``device``; with ``chunk`` (rows), the training split streams through the device.

    Validation and test splits stay resident (they are evaluated in large
    batches). ``chunk`` at least the training set size means full residency.
    """
    def move(split):
        return DeviceSplit(torch.as_tensor(split.x, dtype=torch.float32).to(device),
                           torch.as_tensor(split.y, dtype=torch.long).to(device))

    if chunk is not None and chunk < len(dataset.train.y):
        x = torch.as_tensor(dataset.train.x, dtype=torch.float32)
        y = torch.as_tensor(dataset.train.y, dtype=torch.long)
        if device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        train = DeviceSplit(x, y, chunk=int(chunk), device=device)
    else:
        train = move(dataset.train)
    return DeviceData(train, move(dataset.valid), move(dataset.test),
                      tuple(dataset.image_shape), dataset.n_classes)
