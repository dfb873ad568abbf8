"""Readers for the MNIST-style file formats, with structural checks.

* LeCun IDX files (``train-images-idx3-ubyte[.gz]`` ...), used by MNIST and
  Fashion-MNIST: :func:`read_idx`.
* The Deep Learning Tutorials' ``mnist.pkl.gz`` (a Python 2 pickle of three
  ``(x, y)`` pairs): :func:`read_mnist_pkl_gz`, through the restricted unpickler.
* Keras' ``mnist.npz``: :func:`read_mnist_npz`.

Every fault raises :class:`DataError` with one line naming the file and what
is wrong with it. No checksums here: files are validated by their structure.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from dlexp.safe_pickle import GZIP_MAGIC, CheckpointError, safe_load

IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801  # ubyte data, 3 or 1 dims


class DataError(ValueError):
    """A dataset file that is missing, corrupt or inconsistent; one-line message."""


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped if it starts with the gzip magic."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: truncated gzip file (download it again)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip file ({e})") from None


def read_idx(path) -> np.ndarray:
    """Read an IDX image file (N, H, W) or label file (N,) as uint8."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 8:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (IDX_IMAGES, IDX_LABELS):
        raise DataError(
            f"{path}: bad IDX magic 0x{magic:08x}: expected 0x{IDX_IMAGES:08x} (images) or 0x{IDX_LABELS:08x} (labels)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dims need {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and (dims[1] == 0 or dims[2] == 0):
        raise DataError(f"{path}: bad IDX image size {dims[1]}x{dims[2]}")
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(
            f"{path}: IDX payload is {len(data) - header} bytes but the header {dims} needs {expected}"
            " (truncated or corrupt file)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def check_split(x: np.ndarray, y: np.ndarray, n_classes: int, where: str) -> None:
    """Raise DataError unless ``x``/``y`` have equal counts, finite inputs and labels in [0, n_classes)."""
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: {x.shape[0]} images but {y.shape[0]} labels")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be a 1-d integer array, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)][0]
        raise DataError(f"{where}: label {bad} outside [0, {n_classes})")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: inputs contain NaN or inf")
    if x.dtype.kind not in "fiu":
        raise DataError(f"{where}: inputs must be numeric, got {x.dtype}")


def read_mnist_pkl_gz(path, n_classes: int = 10) -> tuple:
    """Read the tutorials' ``mnist.pkl.gz``: ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
            f.seek(0)
            obj = safe_load(gzip.GzipFile(filename=str(path), fileobj=f) if gzipped else f, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except CheckpointError as e:
        raise DataError(str(e)) from None
    shape = "a tuple of 3 (x, y) pairs: train, valid, test"
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise DataError(f"{path}: expected {shape}, got {type(obj).__name__}"
                        + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else ""))
    splits = []
    for name, pair in zip(("train", "valid", "test"), obj):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(a, np.ndarray) for a in pair):
            raise DataError(f"{path}: {name} split is not an (x, y) pair of numpy arrays; expected {shape}")
        x, y = pair
        if x.ndim != 2:
            raise DataError(f"{path}: {name} x must be 2-d (N, pixels), got shape {x.shape}")
        check_split(x, y, n_classes, f"{path} ({name})")
        splits.append((x, y))
    return tuple(splits)


def read_mnist_npz(path, n_classes: int = 10) -> tuple:
    """Read Keras' ``mnist.npz``: ((x_train, y_train), (x_test, y_test)), images (N, 28, 28)."""
    path = Path(path)
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # numpy would take any other file for a pickle
                raise DataError(f"{path}: not a valid npz file (no zip header)")
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # own handle: numpy leaks it on bad zips
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)}; expected {', '.join(keys)}")
            arrays = {k: z[k] for k in keys}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except DataError:
        raise
    except Exception as e:  # BadZipFile, ValueError (object arrays), EOFError, ...
        raise DataError(f"{path}: not a valid npz file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3:
            raise DataError(f"{path}: x_{split} must be (N, H, W), got shape {x.shape}")
        check_split(x, y, n_classes, f"{path} ({split})")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
