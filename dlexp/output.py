"""``--output FILE`` of dlexp's commands (``dlexp-predict``, ``dlexp-sweep table/compare``): one guard, one
atomic write.

A command writes its ``--output`` only where nothing of value can be lost: never onto the MLflow store
(its database, ``-wal``, ``-shm``, ``-journal`` and ``.lock`` files, the tracking URI's and the default
``outputs/mlflow.db`` alike), never under its artifact root (``mlartifacts/``), never onto another SQLite
database or a file the command reads (a checkpoint, ``--inputs``), never onto a FIFO, device, socket,
directory or symlink, and onto any other existing file only with ``--force``. The checks run before
any work; the file is then written atomically (a temp file beside it, renamed into place), so an
interrupted write leaves the previous file whole.
"""
import os
import stat
from pathlib import Path

from .safe_pickle import atomic_write, file_kind
from .tracking.store import SQLITE_HEADER, default_store, sqlite_path

STORE_SUFFIXES = ("", "-wal", "-shm", "-journal", ".lock")


class OutputError(ValueError):
    """An ``--output`` dlexp refuses to write; the message is one line naming it."""


def _store_paths(tracking_uri):
    """(the store files, the artifact roots) of the tracking URI and of the default store, resolved."""
    dbs = [default_store()]
    try:
        path = sqlite_path(tracking_uri) if tracking_uri else None
    except ValueError:  # not a sqlite URI the command can use: it refuses it itself
        path = None
    if path is not None:
        dbs.append(path)
    files = {Path(os.path.realpath(f"{db}{suffix}")): f"{f'the {suffix} file' if suffix else 'the database'} of "
                                                      f"the MLflow store {db}"
             for db in dbs for suffix in STORE_SUFFIXES}
    roots = [Path(os.path.realpath(db.parent / "mlartifacts")) for db in dbs]
    return files, roots


def _check_existing(out: Path, shown: str, force: bool) -> None:
    """An existing ``out``: a regular file (not a link), not a database, and replaced only with --force."""
    st = os.lstat(out)
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"--output {shown}: is a symlink; refusing to write through it, give a plain file name")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"--output {shown}: is {file_kind(out)}, not a regular file; give a file name")
    try:
        with open(out, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError:  # unreadable: not looked at, but replaced only with --force
        head = b""
    if head == SQLITE_HEADER:
        raise OutputError(f"--output {shown}: is an SQLite database (an MLflow store?); refusing to "
                          "overwrite it, choose another file")
    if not force:
        raise OutputError(f"--output {shown}: exists; refusing to overwrite it (add --force to replace it, "
                          "or choose another file)")


def check_output(path, force: bool = False, tracking_uri=None, reads=()) -> Path:
    """``path`` as a safe place for a command's output, or one OutputError line (see the module doc).

    ``reads``: (path, what) pairs of files the command reads, which it must not overwrite either."""
    out = Path(path)
    shown = str(out)
    real = Path(os.path.realpath(out))
    for other, what in reads:
        if other and real == Path(os.path.realpath(other)):
            raise OutputError(f"--output {shown}: is {what}; refusing to overwrite it, choose another file")
    files, roots = _store_paths(tracking_uri)
    if real in files:
        raise OutputError(f"--output {shown}: is {files[real]}; refusing to overwrite it, choose another file")
    root = next((r for r in roots if real == r or r in real.parents), None)
    if root is not None:
        raise OutputError(f"--output {shown}: is under the MLflow artifact root {root}; refusing to write "
                          "there, choose a file outside it")
    if os.path.lexists(out):
        _check_existing(out, shown, force)
    if not out.parent.is_dir():
        raise OutputError(f"--output {shown}: directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputError(f"--output {shown}: directory {out.parent} is not writable")
    return out


def write_output(path, write, mode: str = "wb") -> None:
    """``write(f)`` into ``path`` atomically; an OSError is one line naming the user's path, not the temp file."""
    try:
        with atomic_write(path, mode) as f:
            write(f)
    except OSError as e:
        raise OutputError(f"--output {path}: cannot write it ({e.strerror or e})") from None
