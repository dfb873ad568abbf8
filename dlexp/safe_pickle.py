"""Safe pickle io for numpy parameters: atomic writes and a restricted unpickler.

``pickle.load`` runs whatever a file tells it to (``os.system`` included), so
dlexp never calls it: :func:`safe_load` rebuilds only numpy arrays, dtypes,
numpy scalars and plain containers, and refuses any other global by name.
:func:`save` writes through :func:`atomic_write`, so a crash mid-write leaves
the previous file whole.
"""
from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import errno
import gzip
import os
import pickle
import stat
import tempfile
import zlib
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"


class CheckpointError(ValueError):
    """A pickle file that is missing, truncated or malformed; one-line message."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """A pickle that asks for a global outside the allow-list (e.g. ``os.system``)."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb") -> Iterator[IO]:
    """Yield a temp file next to ``path``; on success fsync and rename it onto ``path``.

    If the body raises, the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_kind(path) -> str:
    """What ``path`` is when it is not a regular file ("a FIFO", "a directory", ...), else "" (a regular
    file, or nothing there). Never opens it: opening a FIFO waits for a writer forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISREG(mode):
        return ""
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")


def _regular_opener(path, flags: int) -> int:
    """An ``opener`` for :func:`open`: opens non-blocking (a FIFO does not wait for a writer), then refuses
    anything but a regular file with an OSError."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a regular file") if stat.S_ISDIR(mode) else \
            OSError(errno.EINVAL, f"is {file_kind(path) or 'not a regular file'}, not a regular file")
    os.set_blocking(fd, True)
    return fd


def open_regular(path) -> IO[bytes]:
    """``open(path, "rb")`` for a regular file only; anything else (a FIFO, a device) raises OSError
    without waiting on it."""
    return open(path, "rb", opener=_regular_opener)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles made by Python 3 store bytes as _codecs.encode(str, "latin1").
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}: only latin1 is allowed")
    return text.encode("latin1")


def _allowed() -> dict:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    table = {}
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x (and Python 2) names, numpy 2.x names
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5 arrays
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    table[("_codecs", "encode")] = _latin1_encode
    table[("collections", "OrderedDict")] = collections.OrderedDict
    for t in (set, frozenset, complex, bytes, bytearray, slice, range):
        table[("builtins", t.__name__)] = t
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` knows only numpy arrays and plain containers."""

    allowed = _allowed()  # (module, name) -> object; nothing is imported by name

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 spellings (__builtin__.eval, commands.Popen) -> Python 3 ones; only names change.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        try:
            return self.allowed[key]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only numpy arrays, dtypes, scalars and plain containers are allowed"
            ) from None


def _name(fileobj) -> str:
    name = getattr(fileobj, "name", None)
    return name if isinstance(name, str) else "<stream>"


def safe_load(fileobj: IO[bytes], encoding: str = "ASCII") -> Any:
    """Unpickle ``fileobj`` with :class:`RestrictedUnpickler`; bad data raises CheckpointError."""
    where = _name(fileobj)
    try:
        return RestrictedUnpickler(fileobj, encoding=encoding).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{where}: {e}") from None
    except EOFError:
        raise CheckpointError(f"{where}: file is truncated (ended before the pickle did)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise CheckpointError(f"{where}: corrupt gzip data ({e})") from None
    except MemoryError:
        raise
    except Exception as e:  # UnpicklingError, ValueError, TypeError, ... from malformed data
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{where}: not a valid pickle ({msg})") from None


def save(path, obj: Any) -> None:
    """Pickle ``obj`` (protocol 4) to ``path`` atomically; gzip it if the name ends in .gz."""
    path = Path(path)
    with atomic_write(path) as f:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename=path.name, fileobj=f, mode="wb", mtime=0) as gz:
                pickle.dump(obj, gz, protocol=4)
        else:
            pickle.dump(obj, f, protocol=4)


def load(path) -> Any:
    """Read a file written by :func:`save` (gzipped or not) with :func:`safe_load`."""
    path = Path(path)
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        gzipped = f.read(2) == GZIP_MAGIC
        f.seek(0)
        if not gzipped:
            return safe_load(f)
        with gzip.GzipFile(filename=str(path), fileobj=f, mode="rb") as gz:
            return safe_load(gz)
