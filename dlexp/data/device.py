"""Device residency: each split is copied to the device once; minibatches are index slices.

This is the tutorials' shared-variable advice: moving the whole data set to
GPU memory once avoids a host-to-device copy per minibatch, which would
otherwise dominate the time of a small model.
"""
from dataclasses import dataclass

import torch


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
    x: torch.Tensor  # (N, D) float32 on the device
    y: torch.Tensor  # (N,) int64 on the device


@dataclass
class DeviceData:
    train: DeviceSplit
    valid: DeviceSplit
    test: DeviceSplit
    image_shape: tuple
    n_classes: int


def to_device(dataset, device: torch.device) -> DeviceData:
    def move(split):
        return DeviceSplit(torch.as_tensor(split.x, dtype=torch.float32).to(device),
                           torch.as_tensor(split.y, dtype=torch.long).to(device))

    return DeviceData(move(dataset.train), move(dataset.valid), move(dataset.test),
                      tuple(dataset.image_shape), dataset.n_classes)
