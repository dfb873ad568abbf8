"""The tracking store: which URIs dlexp tracks to, and a sqlite store built once, never half.

A sqlite store is built once, whoever asks first: under an exclusive lock
on ``<db>.lock`` beside it (filelock's reader/writer lock, on any OS), in a
temp file of the same directory (MLflow creates
and migrates it there) that is renamed onto ``<db>`` only when complete, so N
runs started together never migrate one file at once and a full disk or a kill
never leaves a half-built store. An existing complete store is only looked at,
under a shared lock for a moment. A store on a local disk is kept in sqlite's
write-ahead-log mode (``journal_mode=wal``, still ``synchronous=FULL``: a commit is
as durable as before, but one ``fsync`` of the log instead of the rollback
journal's several: ~4 ms a commit here instead of ~19 ms; a run makes a few dozen);
one on a network filesystem (NFS, Lustre, ...), where WAL's shared memory does not
work across machines, keeps the rollback journal. A URI dlexp cannot track to (a file that is
not a database, a read-only store, a file store, an unknown scheme, an HTTP
server that is not MLflow) is refused in one line before any data is read.
"""
import contextlib
import functools
import errno
import json
import logging
import os
import secrets
import sqlite3
from glob import escape as glob_escape
from pathlib import Path
from urllib.parse import quote, urlparse

from ..safe_pickle import file_kind, open_regular

log = logging.getLogger("dlexp")


class TrackingError(ValueError):
    """The tracking store cannot be used; the message is one line and names the URI."""


class StoreWriteError(OSError):
    """A sqlite store could not be built (a full disk, a file-size limit): an outside fault, not a mistake
    (the CLI ends with status 1); the message is one line naming the store and the OS error."""

    def __init__(self, message: str, code: int = None):
        super().__init__(message)
        self.errno = code

    def __str__(self):
        return self.args[0]


# ------------------------------------------------------------------ which URIs
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")  # MLflow's other SQL stores, handed to MLflow as they are
ALLOWED = ("sqlite:///<path>.db, http(s)://<an MLflow server>, or tracking.uri unset "
           "(sqlite:///<cwd>/outputs/mlflow.db)")
SQLITE_HEADER = b"SQLite format 3\x00"


def default_store(cwd=None) -> Path:
    """The embedded store's database file: ``<cwd>/outputs/mlflow.db``."""
    return Path(cwd or os.getcwd()).resolve() / "outputs" / "mlflow.db"


def resolve_uri(uri=None, cwd=None) -> str:
    """tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite under ./outputs."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    path = default_store(cwd)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def sqlite_path(uri: str):
    """The database file of a ``sqlite:///`` URI (a relative path is relative to the cwd, as in MLflow),
    else None."""
    from sqlalchemy.engine import make_url

    if not uri.startswith("sqlite:///"):
        return None
    try:
        path = make_url(uri).database  # as MLflow's engine reads it (percent-decoded, no query)
    except Exception:
        raise TrackingError(f"tracking.uri={uri} is not allowed: not a valid sqlite URL; use {ALLOWED}") from None
    if not path or path == ":memory:":
        raise TrackingError(f"tracking.uri={uri} is not allowed: an in-memory store keeps nothing; use {ALLOWED}")
    return Path(path).absolute()


def check_uri(uri: str) -> str:
    """The URI's kind ("sqlite", "http", "database"); one line for a URI dlexp cannot track to.

    MLflow 3 refuses file stores (``file:``, a bare path) unless ``MLFLOW_ALLOW_FILE_STORE`` is set and
    keeps them in maintenance mode, so dlexp does not offer them; a sqlite file is the local store."""
    scheme = urlparse(uri).scheme.lower()
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise TrackingError(f"tracking.uri={uri} is not allowed: a sqlite URI has three slashes and a file "
                                f"path (sqlite:///relative.db, sqlite:////absolute.db); use {ALLOWED}")
        sqlite_path(uri)
        return "sqlite"
    if scheme in ("http", "https"):
        return "http"
    if scheme.split("+", 1)[0] in DATABASE_SCHEMES:
        return "database"
    if scheme in ("", "file"):
        raise TrackingError(f"tracking.uri={uri} is not allowed: file stores are not supported (MLflow 3 keeps "
                            f"them in maintenance mode); use {ALLOWED}")
    raise TrackingError(f"tracking.uri={uri} is not allowed: unknown scheme {scheme}://; use {ALLOWED}")


# ------------------------------------------------------- checks before any data
def check_sqlite_file(path: Path, uri: str, write: bool = True) -> None:
    """One line unless ``path`` is (or can become) an SQLite database this process can write; the file is
    only read (its first 16 bytes), never changed."""
    if path.is_dir():
        raise TrackingError(f"tracking.uri={uri}: {path} is a directory; the URI names the database file "
                            "(e.g. sqlite:///outputs/mlflow.db)")
    check_not_special(path, uri)
    if path.exists():
        try:
            with open_regular(path) as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as e:
            raise TrackingError(f"tracking.uri={uri}: cannot read the store {path} ({e.strerror}); "
                                "make it readable or choose another tracking.uri") from None
        if head and head != SQLITE_HEADER:
            raise TrackingError(f"tracking.uri={uri}: {path} is not an SQLite database (left untouched); "
                                "point tracking.uri at an MLflow .db file or a new file name")
        if write and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
            raise TrackingError(f"tracking.uri={uri}: the store {path} is read-only (file or directory); a run "
                                "writes to it: make both writable, or choose another tracking.uri")
        return
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TrackingError(f"tracking.uri={uri}: cannot create the store {path}: {parent} is not a writable "
                            "directory; choose another tracking.uri")


def check_not_special(path: Path, uri: str) -> None:
    """One line for a store path that is a dangling or looping symlink (a new store would be made where the
    link points, or nowhere) or not a regular file (a FIFO would be waited on forever); nothing is opened."""
    if path.is_symlink() and not path.exists():
        raise TrackingError(f"tracking.uri={uri}: {path} is a symlink to nothing (dangling or looping); "
                            "remove it or point tracking.uri at the store file itself")
    kind = file_kind(path)
    if kind and kind != "a directory":
        raise TrackingError(f"tracking.uri={uri}: {path} is {kind}, not a regular file; point tracking.uri "
                            "at an MLflow .db file or a new file name")


def _root_cause(e: BaseException) -> str:
    """The innermost exception of a chain, in words (e.g. "[Errno 111] Connection refused")."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    return str(e) or type(e).__name__


PROBE = "/api/2.0/mlflow/experiments/get-by-name"


def _mlflow_answer(response) -> bool:
    """An answer only an MLflow tracking server gives: the experiment, or MLflow's JSON error."""
    try:
        body = json.loads(response.text)
    except ValueError:
        return False
    return isinstance(body, dict) and ("experiment" in body or isinstance(body.get("error_code"), str))


def check_server(uri: str, timeout: float = 10.0) -> None:
    """One line unless an MLflow tracking server answers at ``uri`` (MLflow's own client would retry for
    minutes, and any other HTTP server would fail the run at its first write)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(get_default_host_creds(uri), PROBE, "GET", max_retries=0, backoff_factor=0,
                                timeout=timeout, raise_on_status=False, params={"experiment_name": "dlexp"})
    except Exception as e:
        raise TrackingError(f"tracking.uri={uri}: no MLflow server answers there ({_root_cause(e)}); start one "
                            "(mlflow server), leave tracking.uri unset for the embedded store, or use "
                            "tracking=none") from None
    status = response.status_code
    if status in (401, 403):
        raise TrackingError(f"tracking.uri={uri}: the server refuses access (HTTP {status}); set "
                            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")
    if status >= 500:
        raise TrackingError(f"tracking.uri={uri}: the server answers HTTP {status} ({response.reason}); "
                            "check the MLflow server, or leave tracking.uri unset for the embedded store")
    if not _mlflow_answer(response):
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise TrackingError(f"tracking.uri={uri}: the server there is not an MLflow tracking server (HTTP "
                            f"{status}, {kind} on {PROBE}); use the address of an MLflow server "
                            "(mlflow server), or leave tracking.uri unset for the embedded store")


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """Before any data is read: one line for a tracking URI a run cannot write to (see :func:`check_uri`,
    :func:`check_sqlite_file`, :func:`check_server`). ``uri`` empty: the embedded store (not created here)."""
    uri = uri or f"sqlite:///{default_store()}"
    kind = check_uri(uri)
    if kind == "sqlite":
        check_sqlite_file(sqlite_path(uri), uri)
    elif kind == "http":
        check_server(uri, timeout)


# ------------------------------------------------- building a sqlite store once
@contextlib.contextmanager
def store_lock(path: Path, exclusive: bool):
    """A lock on ``<db>.lock`` beside the store (filelock's ``ReadWriteLock``: sqlite's own file locks, on
    any OS): shared to look at the store, exclusive to build or migrate it. Where the lock file cannot be
    opened (a read-only directory) a shared look goes ahead unlocked: nothing can be built there."""
    from filelock import ReadWriteLock

    try:
        lock = ReadWriteLock(path.with_name(path.name + ".lock"), is_singleton=False)
    except (OSError, sqlite3.Error, ValueError):
        if exclusive:
            raise
        yield
        return
    try:
        with lock.write_lock() if exclusive else lock.read_lock():
            yield
    finally:
        lock.close()


@functools.lru_cache(maxsize=1)
def _schema():
    """(the tables MLflow's models define, the schema revision this MLflow writes)."""
    from .. import private_api

    return private_api.mlflow_schema()


def _count(con, query: str) -> int:
    return con.execute(query).fetchone()[0]


def store_state(path: Path) -> str:
    """"missing", "complete" (MLflow opens it without migrating), "empty" (incomplete and holding no
    experiment or run: half-built), or "data" (incomplete, with experiments or runs: to migrate)."""
    if not path.exists():
        return "missing"
    if path.stat().st_size == 0:
        return "empty"
    con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
        expected, head = _schema()
        versions = con.execute("select version_num from alembic_version").fetchall() \
            if "alembic_version" in tables else []
        if expected <= tables and versions == [(head,)]:
            return "complete"
        runs = _count(con, "select count(*) from runs") if "runs" in tables else 0
        experiments = _count(con, "select count(*) from experiments where experiment_id != 0") \
            if "experiments" in tables else 0
        return "data" if runs or experiments else "empty"
    finally:
        con.close()


NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "lustre", "gpfs", "beegfs",
                       "ceph", "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.s3fs", "gfs2", "ocfs2", "pvfs2",
                       "orangefs", "panfs"}


def _filesystem(path: Path, mountinfo: str = None):
    """The type of the filesystem holding ``path`` ("ext4", "nfs4", ...) from ``mountinfo`` (default: this
    process's /proc/self/mountinfo), or None where the OS does not say."""
    try:
        lines = (mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()).splitlines()
    except OSError:
        return None
    best, kind = "", None
    target = str(path.resolve())
    for line in lines:
        fields, _, rest = line.partition(" - ")
        mount = fields.split()[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best) and rest:
            best, kind = mount, rest.split()[0]
    return kind


def use_wal(db: Path, mountinfo: str = None) -> None:
    """Put the sqlite database ``db`` in write-ahead-log mode where its filesystem is a known local one (the
    mode is kept in the file: every later connection, MLflow's too, uses it); left as it is elsewhere, or
    when another process holds the database for longer than a moment."""
    with open(db, "rb") as f:
        header = f.read(20)
    if len(header) == 20 and header[18] == 2:
        return  # already WAL (the header's read/write versions: 2), whatever the filesystem
    kind = _filesystem(db.parent, mountinfo)
    if kind is None or kind in NETWORK_FILESYSTEMS:
        return
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=1)) as con:
            con.execute("pragma journal_mode=wal")
    except sqlite3.Error as e:
        log.debug("store %s keeps its rollback journal (%s)", db, e)


def _remove_aside(tmp: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)


def _open_store(tmp: Path, artifact_root: str) -> None:
    """MLflow's SqlAlchemyStore on ``tmp``: it creates (or migrates) the schema and the Default experiment;
    its engine is closed after, so no handle on ``tmp`` outlives the rename."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db_uri = f"sqlite:///{quote(str(tmp))}"
    try:
        SqlAlchemyStore(db_uri, artifact_root)
    finally:
        engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(db_uri, None)
        if engine is not None:
            engine.dispose()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Remove the temp files of builds that were killed (``.<db>.<pid>-<hex>.tmp`` and their journals).
    Called under the exclusive lock, which every build holds from its temp file's creation to its rename,
    so a temp file seen here belongs to a creator that died; one whose pid is alive on this machine is
    left alone all the same (its pid may be reused; the file is only disk space)."""
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp*"):
        pid = tmp.name[len(path.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                log.warning("removed %s, left by a store creation that was killed", tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        pass
    return True


def build_aside(path: Path, uri: str, copy_from_existing: bool) -> None:
    """Build the store in a temp file beside ``path`` (a fresh one, or a copy of the existing one to migrate),
    check it, and rename it onto ``path``; on any failure the temp file goes and ``path`` is as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        if copy_from_existing:
            with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)) as src, \
                    contextlib.closing(sqlite3.connect(tmp)) as dst:
                src.backup(dst)
        _open_store(tmp, artifact_root(uri))
        with contextlib.closing(sqlite3.connect(tmp)) as con:
            integrity = con.execute("pragma integrity_check").fetchone()[0]
        if store_state(tmp) != "complete" or integrity != "ok":
            raise TrackingError(f"tracking.uri={uri}: MLflow built an incomplete store ({integrity})")
        use_wal(tmp)  # closed again: no -wal file is left beside tmp when it is renamed
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as e:
        _remove_aside(tmp)
        if isinstance(e, Exception) and not isinstance(e, (TrackingError, StoreWriteError)):
            raise _store_error(e, path, uri) from None
        raise


def _write_probe(directory: Path, size: int = 1 << 20):
    """The OSError writing ``size`` bytes in ``directory`` raises (a full disk, a file-size limit), or None:
    sqlite reports only "database or disk is full" / "disk I/O error"."""
    probe = directory / f".dlexp-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e
    finally:
        probe.unlink(missing_ok=True)
    return None


DISK_WORDS = ("disk", "full", "i/o error", "unable to open", "readonly")  # sqlite's words for a write that failed
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _store_error(e: Exception, path: Path, uri: str) -> Exception:
    """One line for a failed build: a StoreWriteError (an outside fault: a full disk, a size limit, an I/O
    error) naming the store and the OS error, or a TrackingError (not writable, or MLflow's reason)."""
    os_error = e if isinstance(e, OSError) else None
    if os_error is None and any(word in str(e).lower() for word in DISK_WORDS):
        os_error = _write_probe(path.parent)
    if os_error is not None and os_error.errno in NOT_WRITABLE:
        return TrackingError(f"tracking.uri={uri}: cannot create the store {path}: {os_error.strerror} "
                             f"([Errno {os_error.errno}]); make {path.parent} writable or choose another "
                             "tracking.uri")
    if os_error is not None:
        advice = "free disk space or raise the file-size limit" if os_error.errno in NO_SPACE else "check the disk"
        return StoreWriteError(f"cannot create the tracking store {path}: {os_error.strerror or os_error} "
                               f"([Errno {os_error.errno}]); {advice}, then run again", os_error.errno)
    reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    return TrackingError(f"tracking.uri={uri}: cannot create or migrate the store {path}: {reason[:300]}")


def check_existing(uri: str) -> None:
    """For commands that only read a store (dlexp-predict, dlexp-sweep): refuse one that is not there or not
    complete (missing, empty, half-built, an older schema), creating, rewriting and migrating nothing
    (MLflow would create an empty sqlite file and its directory, or migrate the file)."""
    if check_uri(uri) == "http":
        return check_reachable(uri)
    path = sqlite_path(uri)
    if path is None:
        return
    check_not_special(path, uri)
    if not path.is_file():
        raise TrackingError(f"no MLflow store at {path} (tracking URI {uri})")
    check_sqlite_file(path, uri, write=False)
    try:  # no lock: a build renames a complete file into place, never changes this one
        state = store_state(path)
    except (OSError, sqlite3.Error) as e:
        raise TrackingError(f"tracking URI {uri}: cannot read the store {path} ({e})") from None
    if state != "complete":
        what = "an MLflow store of an older schema" if state == "data" else "an empty or half-built store"
        raise TrackingError(f"tracking URI {uri}: {path} is {what}; this command only reads a store and "
                            "leaves it as it is (a dlexp training run on it builds or migrates it)")


def prepare_store(uri: str) -> None:
    """Make the sqlite store at ``uri`` complete before MLflow opens it (see the module doc); other URIs
    are left to MLflow."""
    path = sqlite_path(uri)
    if path is None:
        return
    check_sqlite_file(path, uri, write=False)
    with store_lock(path, exclusive=False):
        try:
            if store_state(path) == "complete":
                return use_wal(path)  # a store built before dlexp used WAL changes mode once
        except sqlite3.Error:  # e.g. locked for longer than the timeout: look again under the exclusive lock
            pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with store_lock(path, exclusive=True):
            state = store_state(path)
            if state == "complete":
                return  # built meanwhile by another process
            if state == "empty":
                log.warning("tracking store %s was left half-built (an interrupted or concurrent creation); "
                            "rebuilding it", path)
            elif state == "data":
                log.warning("tracking store %s has an older MLflow schema; migrating a copy of it", path)
            remove_stale_temps(path)
            build_aside(path, uri, copy_from_existing=state == "data")
    except StoreWriteError:
        raise
    except (OSError, sqlite3.Error) as e:
        raise _store_error(e, path, uri) from None


def artifact_root(uri: str):
    """For a sqlite store, artifacts live beside the database file (a relative path: from the cwd)."""
    path = sqlite_path(uri)
    return (path.parent / "mlartifacts").as_uri() if path is not None else None
