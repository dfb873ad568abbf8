"""Datasets as numpy arrays: MNIST and Fashion-MNIST from files, digits from scikit-learn.

:func:`load_dataset` finds the files (:mod:`dlexp.data.sources`), reads and
checks them (:mod:`dlexp.data.formats`) and returns train/valid/test splits of
flattened float32 images in [0, 1] and int64 labels. MNIST-style sets use the
tutorials' split: the first 50,000 training images train, the last 10,000
validate, the 10,000 test images test (``mnist.pkl.gz`` carries that split
itself). ``digits`` (8x8, offline) is shuffled once with a fixed seed and cut
1297 / 250 / 250.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlexp.data import cache, formats, sources
from dlexp.data.formats import DataError

__all__ = ["Split", "Dataset", "DataError", "load_dataset"]

N_CLASSES = 10
VALID_SIZE = 10_000  # cut from the end of the training files, as the tutorials do
DIGITS_VALID = DIGITS_TEST = 250


@dataclass
class Split:
    x: np.ndarray  # float32 (N, D) in [0, 1], flattened images
    y: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    name: str
    train: Split
    valid: Split
    test: Split
    image_shape: tuple  # (C, H, W)
    n_classes: int
    checksum: str  # sha256 of the arrays as read, all splits, before max_* caps
    source: str  # the file or directory read, or 'sklearn'


def _checksum(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _as_split(x: np.ndarray, y: np.ndarray, where: str) -> Split:
    """Flatten, scale to float32 [0, 1] (integer pixels are 0-255) and cast labels to int64."""
    flat = x.reshape(len(x), -1).astype(np.float32)
    top = 255 if x.dtype.kind in "iu" else 1
    if flat.size and (flat.min() < 0 or flat.max() > top):
        raise DataError(f"{where}: pixel values span [{flat.min()}, {flat.max()}], expected [0, {top}]")
    if top != 1:
        flat /= top
    return Split(flat, y.astype(np.int64))


def _tutorial_split(train_x, train_y, test_x, test_y, where: str) -> tuple:
    """Last 10,000 (or a sixth, for small files) training images validate; the rest train."""
    n_valid = min(VALID_SIZE, len(train_y) // 6)
    if n_valid < 1 or len(test_y) < 1:
        raise DataError(f"{where}: too few images ({len(train_y)} train, {len(test_y)} test) to split")
    cut = len(train_y) - n_valid
    return (_as_split(train_x[:cut], train_y[:cut], f"{where} (train)"),
            _as_split(train_x[cut:], train_y[cut:], f"{where} (valid)"),
            _as_split(test_x, test_y, f"{where} (test)"))


def _read_idx_dir(directory: Path) -> tuple:
    files = [sources.idx_file(directory, n) for n in sources.IDX_NAMES]
    missing = [n for n, f in zip(sources.IDX_NAMES, files) if f is None]
    if missing:
        raise DataError(f"{directory}: missing {', '.join(missing)}")
    tx, ty, sx, sy = (formats.read_idx(f) for f in files)
    for f, a, ndim in zip(files, (tx, ty, sx, sy), (3, 1, 3, 1)):
        if a.ndim != ndim:
            raise DataError(f"{f}: expected an IDX {'image' if ndim == 3 else 'label'} file, got shape {a.shape}")
    formats.check_split(tx, ty, N_CLASSES, f"{files[0]} + {files[1].name}")
    formats.check_split(sx, sy, N_CLASSES, f"{files[2]} + {files[3].name}")
    if tx.shape[1:] != sx.shape[1:]:
        raise DataError(f"{directory}: train images are {tx.shape[1:]} but test images {sx.shape[1:]}")
    return [tx, ty, sx, sy], _tutorial_split(tx, ty, sx, sy, str(directory)), (1, *tx.shape[1:])


def _read_npz(path: Path) -> tuple:
    (tx, ty), (sx, sy) = formats.read_mnist_npz(path, N_CLASSES)
    if tx.shape[1:] != sx.shape[1:]:
        raise DataError(f"{path}: x_train images are {tx.shape[1:]} but x_test {sx.shape[1:]}")
    return [tx, ty, sx, sy], _tutorial_split(tx, ty, sx, sy, str(path)), (1, *tx.shape[1:])


def _read_pkl(path: Path) -> tuple:
    pairs = formats.read_mnist_pkl_gz(path, N_CLASSES)
    dims = [x.shape[1] for x, _ in pairs]
    side = math.isqrt(dims[0])
    if len(set(dims)) != 1 or side * side != dims[0]:
        raise DataError(f"{path}: rows of {dims} pixels (train, valid, test) are not one square image size")
    splits = tuple(_as_split(x, y, f"{path} ({n})") for (x, y), n in zip(pairs, ("train", "valid", "test")))
    return [a for pair in pairs for a in pair], splits, (1, side, side)


def _read_digits() -> tuple:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data, d.target
    perm = np.random.RandomState(0).permutation(len(y))  # fixed, whatever the run seed
    xs, ys = (x[perm] / 16.0).astype(np.float32), y[perm].astype(np.int64)
    a, b = len(y) - DIGITS_VALID - DIGITS_TEST, len(y) - DIGITS_TEST
    splits = (Split(xs[:a], ys[:a]), Split(xs[a:b], ys[a:b]), Split(xs[b:], ys[b:]))
    return [x, y], splits, (1, 8, 8)


def _cap(split: Split, n) -> Split:
    return Split(cache.fresh(split.x, n), cache.fresh(split.y, n))


def _read(cfg) -> tuple:
    """(splits, image shape, checksum of the arrays as read, source) of ``cfg.name``; remembered for the
    next job of the process (:mod:`dlexp.data.cache`)."""
    if cfg.name == "digits":
        return cache.remembered(("digits",), lambda: _checked(_read_digits(), "sklearn"))
    if cfg.name not in sources.FILE_SETS:
        raise DataError(f"dataset.name={cfg.name!r} is not allowed: one of digits, {', '.join(sources.FILE_SETS)}")
    path = sources.locate(cfg)
    if path.is_dir():
        reader = _read_idx_dir
    elif path.name.endswith(".npz"):
        reader = _read_npz
    elif path.name.endswith((".pkl.gz", ".pkl")):
        reader = _read_pkl
    else:
        raise DataError(f"{path}: unknown file type: expected a directory of IDX files, .npz or .pkl.gz")
    return cache.remembered((cfg.name, cache.file_key(path)), lambda: _checked(reader(path), str(path)))


def _checked(read: tuple, source: str) -> tuple:
    raw, splits, shape = read
    return splits, shape, _checksum(raw), source


def load_dataset(cfg) -> Dataset:
    """Load ``cfg.name`` (a :class:`dlexp.config.DatasetConfig`); raise DataError with one line if it cannot."""
    (train, valid, test), shape, checksum, source = _read(cfg)
    return Dataset(
        name=cfg.name,
        train=_cap(train, cfg.max_train),
        valid=_cap(valid, cfg.max_valid),
        test=_cap(test, cfg.max_test),
        image_shape=shape,
        n_classes=N_CLASSES,
        checksum=checksum,
        source=source,
    )
