"""The tracking store under real use, through the CLI in subprocesses.

Runs started at the same instant against one sqlite store (fresh or existing)
all finish, each in its own run directory; a store creation that hits a
file-size limit leaves no half-built store; a half-built store left by an
older version is rebuilt; tracking URIs a run cannot write to end in one line
before any data is read.
"""
import functools
import http.server
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from dlexp import safe_pickle as checkpoint
from dlexp.tracking import store

N = 6
RUN = ["dataset=digits", "trainer.max_epochs=2", "trainer.progress=log", "trainer.threads=1"]


def dlexp_argv(*overrides):
    return [sys.executable, "-m", "dlexp.cli", *RUN, *overrides]


def dlexp(cwd, *overrides, timeout=300, **kw):
    return subprocess.run(dlexp_argv(*overrides), cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def one_error_line(r) -> str:
    """The one ``dlexp: error:`` line of a failed command (and no traceback)."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("dlexp: error:")]
    assert r.returncode != 0 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return errors[0]


def store_runs(db: Path):
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("dlexp")
    return client.search_runs([exp.experiment_id]) if exp else []


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("pragma integrity_check").fetchone()[0]


@pytest.fixture(scope="module")
def complete_store(tmp_path_factory) -> Path:
    """A complete MLflow store, built by MLflow itself in one process (tests copy it)."""
    db = tmp_path_factory.mktemp("complete") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


# ------------------------------------------------------- runs started together
def start_together(cwd: Path, seeds):
    procs = [subprocess.Popen(dlexp_argv(f"trainer.seed={seed}"), cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for seed in seeds]
    results = []
    for p in procs:  # (each one's stderr is read while waiting: no process blocks on a full pipe)
        _, stderr = p.communicate(timeout=300)
        results.append((p.returncode, stderr))
    return results


def check_run_dirs(runs):
    """Each run has its own directory, holding its own config and an intact checkpoint."""
    dirs = [Path(r.data.tags["dlexp.output_dir"]) for r in runs]
    assert len(set(dirs)) == len(runs)
    for run, out in zip(runs, dirs):
        assert OmegaConf.load(out / "config.yaml").trainer.seed == int(run.data.params["trainer.seed"])
        assert checkpoint.load(out / "best_params.pkl")["params"]
    return set(dirs)


def test_runs_started_together_share_one_store_fresh_and_existing(tmp_path):
    db = tmp_path / "outputs" / "mlflow.db"
    for i, seeds in enumerate([range(N), range(N, 2 * N)]):  # a fresh store, then the existing one
        results = start_together(tmp_path, seeds)
        for rc, stderr in results:
            assert rc == 0 and "Traceback" not in stderr, stderr[-3000:]
        runs = store_runs(db)
        assert len(runs) == N * (i + 1) and {r.info.status for r in runs} == {"FINISHED"}
        dirs = check_run_dirs(runs)
        assert dirs == {p.resolve() for p in (tmp_path / "outputs" / "runs").glob("*/*")}
        assert integrity(db) == "ok"
    assert not list(db.parent.glob(".mlflow.db.*"))  # no temp store left


def half_built_store(db: Path) -> None:
    """What concurrent creations by an older dlexp left: migrated part-way (to revision a8c4a736bde6) with
    alembic's temp tables still there; MLflow itself then fails on it forever ("table _alembic_tmp_latest_metrics
    already exists")."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base

    db.parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    config = _get_alembic_config(f"sqlite:///{db}")
    with engine.begin() as con:
        config.attributes["connection"] = con
        command.upgrade(config, "a8c4a736bde6")
    with engine.begin() as con:
        for table in ("metrics", "latest_metrics", "runs"):
            con.execute(sqlalchemy.text(f"create table _alembic_tmp_{table} as select * from {table} where 0"))
    engine.dispose()


def test_half_built_store_of_an_older_version_is_rebuilt(tmp_path):
    db = tmp_path / "outputs" / "mlflow.db"
    half_built_store(db)
    r = dlexp(tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sum("half-built" in line for line in (r.stdout + r.stderr).splitlines()) == 1
    (run,) = store_runs(db)
    assert run.info.status == "FINISHED" and integrity(db) == "ok"


def old_store_with_a_run(db: Path) -> None:
    """A store of MLflow's first schema (no migration yet) holding one experiment and one run."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.initial_models import Base

    db.parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    with engine.begin() as con:
        con.execute(sqlalchemy.text("insert into experiments (experiment_id, name, artifact_location, "
                                    "lifecycle_stage) values (1, 'old', '/tmp/old', 'active')"))
        con.execute(sqlalchemy.text(
            "insert into runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) values "
            "('0ld', 'old run', 'LOCAL', 's', 'e', 'u', 'FINISHED', 1, 2, 'v', 'active', '/tmp/old/0ld', 1)"))
    engine.dispose()


def test_an_older_store_is_migrated_once_by_runs_started_together(tmp_path):
    db = tmp_path / "outputs" / "mlflow.db"
    old_store_with_a_run(db)
    results = start_together(tmp_path, range(3))
    for rc, stderr in results:
        assert rc == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert len(store_runs(db)) == 3 and integrity(db) == "ok"
    assert MlflowClient(f"sqlite:///{db}").get_run("0ld").info.run_name == "old run"  # kept
    logs = "".join(p.read_text() for p in (tmp_path / "outputs" / "runs").glob("*/*/dlexp.log"))
    assert logs.count("migrating a copy of it") == 1


def test_a_complete_store_needs_no_exclusive_lock(tmp_path, complete_store):
    """A run opens an existing complete store while another process holds a shared lock on it."""
    from filelock import ReadWriteLock

    db = tmp_path / "outputs" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(complete_store, db)
    inode = db.stat().st_ino
    with ReadWriteLock(db.with_name("mlflow.db.lock"), is_singleton=False).read_lock():
        r = dlexp(tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = store_runs(db)
    assert run.info.status == "FINISHED" and db.stat().st_ino == inode  # the same file, not rebuilt


# ------------------------------------------------------------ the journal mode
def journal_mode(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("pragma journal_mode").fetchone()[0]


def test_a_store_on_a_local_disk_is_kept_in_wal_mode_and_an_older_one_changes_once(tmp_path, complete_store):
    """WAL: one fsync a commit instead of the rollback journal's several (a run makes dozens of commits)."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert dlexp(fresh).returncode == 0
    assert journal_mode(fresh / "outputs" / "mlflow.db") == "wal"
    older = tmp_path / "older" / "outputs" / "mlflow.db"  # built by MLflow alone: a rollback journal
    older.parent.mkdir(parents=True)
    shutil.copyfile(complete_store, older)
    assert journal_mode(older) == "delete"
    assert dlexp(older.parents[1]).returncode == 0
    assert journal_mode(older) == "wal" and integrity(older) == "ok"
    (run,) = store_runs(older)
    assert run.info.status == "FINISHED"


def test_a_store_on_a_network_filesystem_keeps_its_rollback_journal(tmp_path, complete_store):
    """WAL's shared memory does not work across machines: on NFS (here: a mount table saying so) nothing
    changes."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(complete_store, db)
    mountinfo = (f"22 1 0:21 / / rw,relatime - ext4 /dev/vda rw\n"
                 f"98 22 0:52 / {tmp_path} rw,relatime - nfs4 server:/export rw,vers=4.2\n")
    assert store._filesystem(tmp_path, mountinfo) == "nfs4"
    assert store._filesystem(tmp_path.parent, mountinfo) == "ext4"
    store.use_wal(db, mountinfo)
    assert journal_mode(db) == "delete"
    store.use_wal(db, mountinfo.splitlines()[0])
    assert journal_mode(db) == "wal"


# ----------------------------------------------------- a store creation cut off
def _file_size_limit(limit):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG


def test_store_creation_past_a_file_size_limit_leaves_no_half_built_store(tmp_path):
    db = tmp_path / "outputs" / "mlflow.db"
    # Python, Hydra's files and the run's logs stay far below 256 KiB; a complete store is about 1 MB
    r = dlexp(tmp_path, preexec_fn=functools.partial(_file_size_limit, 256 << 10))
    line = one_error_line(r)
    assert r.returncode == 1 and str(db) in line and "File too large" in line
    assert not db.exists() or integrity(db) == "ok"
    assert not list(db.parent.glob(".mlflow.db.*"))  # the temp store was removed
    r = dlexp(tmp_path)  # room again: the store is built and the run finishes
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = store_runs(db)
    assert run.info.status == "FINISHED"


# ------------------------------------------------------------------- bad URIs
class NotMlflow(http.server.SimpleHTTPRequestHandler):
    """A plain web server (``python -m http.server``): 404 HTML for MLflow's endpoints."""

    def log_message(self, *args):
        pass


@pytest.fixture
def web_server(tmp_path):
    handler = functools.partial(NotMlflow, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


@pytest.mark.parametrize("uri,needle", [
    ("foo://x", "unknown scheme foo://"),
    ("file:///{tmp}/mlruns", "file stores are not supported"),
    ("sqlite://x.db", "three slashes"),
])
def test_uri_that_is_not_allowed_is_one_line(tmp_path, uri, needle):
    uri = uri.format(tmp=tmp_path)
    r = dlexp(tmp_path, f"tracking.uri={uri}")
    line = one_error_line(r)
    assert r.returncode == 2 and needle in line and uri in line and "sqlite:///<path>.db" in line
    assert not list(tmp_path.rglob("*.db")) and not (tmp_path / "mlruns").exists()


def test_uri_faults_end_in_one_line_with_exit_2(tmp_path, web_server):
    text = tmp_path / "x.db"
    text.write_bytes(b"not a database, just some text\n")
    cases = [(f"sqlite:///{text}", "is not an SQLite database"),
             (web_server, "is not an MLflow tracking server")]
    for uri, needle in cases:
        r = dlexp(tmp_path, f"tracking.uri={uri}")
        line = one_error_line(r)
        assert r.returncode == 2 and needle in line and uri in line
    assert text.read_bytes() == b"not a database, just some text\n"


# ------------------------------------------------------------ a read-only store
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, PR_CAPBSET_DROP = 1, 2, 3, 24


def without_root_overrides():
    """In the child before exec: drop the capabilities that let root ignore file permissions from the
    bounding set, so the exec'd dlexp (still uid 0) is held by a chmod like any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def read_only_runner(probe_dir: Path):
    """How to run dlexp so that a read-only chmod holds (root ignores it): {} as a user, root without its
    overriding capabilities, or None when that cannot be done here."""
    if os.geteuid() != 0:
        return {}
    code = f"import os, sys; sys.exit(1 if os.access({str(probe_dir)!r}, os.W_OK) else 0)"  # 0: the chmod holds
    try:
        probe = subprocess.run([sys.executable, "-c", code], preexec_fn=without_root_overrides, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"preexec_fn": without_root_overrides} if probe.returncode == 0 else None


@pytest.mark.parametrize("with_db", [True, False], ids=["read-only-db", "read-only-dir-no-db"])
def test_read_only_store_is_one_line(tmp_path, complete_store, with_db):
    store = tmp_path / "store"
    store.mkdir()
    db = store / "mlflow.db"
    if with_db:
        shutil.copyfile(complete_store, db)
        os.chmod(db, 0o444)
        before = db.read_bytes()
    os.chmod(store, 0o555)
    try:
        runner = read_only_runner(store)
        if runner is None:
            pytest.skip("running as root, and root's permission-overriding capabilities cannot be dropped "
                        "here: a read-only chmod would not hold")
        r = dlexp(tmp_path, f"tracking.uri=sqlite:///{db}", **runner)
        line = one_error_line(r)
        assert r.returncode == 2 and str(db) in line and ("read-only" in line or "not a writable" in line)
        assert (db.read_bytes() == before) if with_db else not db.exists()
    finally:
        os.chmod(store, 0o755)


# ---------------------------------------- the same new dataset, logged by runs at the same instant
LOG_INPUTS_AT_ONCE = r"""
import sys, time
from pathlib import Path
from dlexp.tracking import lineage
from dlexp.config import DatasetConfig
from dlexp.data import load_dataset
from dlexp.tracking.tracker import Tracker

uri, gate, i, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dataset = load_dataset(DatasetConfig(name="digits"))
tracker = Tracker(uri, "together")
tracker.start(f"run {i}", {}, {})
(gate / f"ready-{i}").touch()
while len(list(gate.glob("ready-*"))) < n:  # a barrier: every process has its run, then all log at once
    time.sleep(0.001)
lineage.log_dataset_inputs(tracker, dataset)
tracker.end("FINISHED")
"""


def test_runs_logging_the_same_new_dataset_at_once_all_log_it(tmp_path, complete_store):
    """A parallel sweep's jobs log the same new dataset inputs at one moment: MLflow's store inserts a
    dataset after looking it up, so all but one lost that race on its unique key (the job failed,
    its run left RUNNING). Every run now has its three inputs, stored once each."""
    shutil.copy(complete_store, tmp_path / "mlflow.db")
    uri, gate, n = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "gate", 6
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", LOG_INPUTS_AT_ONCE, uri, str(gate), str(i), str(n)],
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert len(runs) == n and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        contexts = sorted(tag.value for i in run.inputs.dataset_inputs for tag in i.tags)
        assert contexts == ["test", "train", "valid"]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 3


def test_a_store_fault_once_the_run_exists_ends_it_failed(tmp_path, monkeypatch, store):
    """A fault of the store after the run was created (here: logging its dataset inputs) ends the run
    FAILED with the reason, never RUNNING, and the command in one line."""
    from mlflow.exceptions import MlflowException

    from dlexp import cli

    def disk_fault(*args, **kwargs):
        raise MlflowException("(sqlite3.OperationalError) disk I/O error")

    monkeypatch.setattr(MlflowClient, "log_inputs", disk_fault)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dlexp", *RUN, f"tracking.uri={store}", "tracking.experiment=store-fault"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code not in (0, None)
    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("store-fault").experiment_id])
    assert run.info.status == "FAILED" and "disk I/O error" in run.data.tags["dlexp.error"]


def test_dlexp_imports_where_fcntl_does_not_exist():
    """The store's lock is filelock's (any OS): dlexp and its store import without ``fcntl`` (as on Windows)."""
    code = "import sys; sys.modules['fcntl'] = None; import dlexp.tracking.store, dlexp.cli; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
