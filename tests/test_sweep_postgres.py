"""A real database for many jobs: an ``mlflow server`` backed by PostgreSQL, 16 parallel jobs writing to it.

The test starts PostgreSQL itself (Debian's ``postgresql`` package: ``initdb`` / ``pg_ctl`` in a temporary
data directory, on 127.0.0.1, run as the ``postgres`` user when the test runs as root), then ``mlflow
server --backend-store-uri postgresql://...`` on 127.0.0.1, then a 16-job sweep through the joblib
launcher with every metric written at once (the most concurrent writes), and stops both. It skips only
when PostgreSQL is not installed and cannot be (``apt-get install -y postgresql``), or psycopg2 (the
``postgres`` extra) is missing.
"""
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import sweep_procs
from dlexp import sweep



def _driver():
    """The DB-API module SQLAlchemy (so MLflow) uses for ``postgresql://`` (psycopg with SQLAlchemy 2.1,
    psycopg2 before), or a skip."""
    from sqlalchemy.engine import make_url

    try:
        return make_url("postgresql://").get_dialect().import_dbapi()
    except ImportError as e:
        pytest.skip(f"no PostgreSQL driver for SQLAlchemy ({e}): pip install '.[postgres]'")


def _pg_bin():
    """The directory of PostgreSQL's initdb / pg_ctl, installing Debian's package if we may."""
    def find():
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if found:
            return Path(found[-1]).parent
        on_path = shutil.which("pg_ctl")
        return Path(on_path).resolve().parent if on_path else None

    if find() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], capture_output=True, timeout=600)
    return find()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(owner):
    """subprocess keyword arguments that run a command as ``owner`` (PostgreSQL refuses to run as root)."""
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []} if os.geteuid() == 0 else {}


@pytest.fixture(scope="module")
def postgres():
    _driver()
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    root = Path(tempfile.mkdtemp(prefix="dlexp-postgres-"))
    os.chown(root, owner.pw_uid, owner.pw_gid)
    data, port, run = root / "data", _free_port(), _as_owner(owner)
    subprocess.run([bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "dlexp", "--no-sync"], check=True,
                   capture_output=True, cwd=root, **run)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200"
    subprocess.run([bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", root / "postgres.log", "-w", "start"],
                   check=True, capture_output=True, cwd=root, **run)
    try:
        subprocess.run([bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "dlexp", "mlflow"],
                       check=True, capture_output=True, cwd=root, **run)
        yield f"postgresql://dlexp@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], capture_output=True, cwd=root,
                       **run)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """``mlflow server`` on the PostgreSQL database, proxying artifacts to a local directory."""
    d = tmp_path_factory.mktemp("pg-server")
    port = _free_port()
    log = open(d / "server.log", "w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(["mlflow", "server", "--backend-store-uri", postgres, "--artifacts-destination",
                             str(d / "artifacts"), "--workers", "2", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    try:
        while True:
            assert proc.poll() is None, (d / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, (d / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def test_sixteen_parallel_jobs_against_a_postgresql_backed_server(server, postgres, tmp_path):
    r = sweep_procs.run(tmp_path, server, "hydra/launcher=joblib", "hydra.launcher.n_jobs=16", "model=logreg",
                        "trainer.max_epochs=5", "optimizer.lr=0.2,0.1,0.05,0.02", "regularization=l2",
                        "regularization.l2=0,1e-4,1e-3,1e-2", timeout=900,
                        extra_env={"DLEXP_TRACKING_FLUSH_SECONDS": "0"})
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # everything went to the server
    (parent,) = sweep_procs.parents(server)
    children = sweep_procs.children(server, parent)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.launcher"] == "JoblibLauncher"
    assert len(children) == 16 and all(c.info.status == "FINISHED" for c in children)
    assert len({(c.data.params["optimizer.lr"], c.data.params["regularization.l2"]) for c in children}) == 16
    client = MlflowClient(server)
    for c in children:  # complete metric histories: one validation an epoch (2 minibatches of 600), at its epoch
        assert c.data.metrics["final/epochs"] == 5 and {"best/valid_error", "best/test_error"} <= set(c.data.metrics)
        for key in ("valid/error", "test/error", "train/nll"):
            assert sorted(h.step for h in client.get_metric_history(c.info.run_id, key)) == [1, 2, 3, 4, 5], key
        assert len(client.get_metric_history(c.info.run_id, "perf/epoch_seconds")) == 5
    # and in the database itself, nothing lost or twice
    con = _driver().connect(postgres)
    try:
        cur = con.cursor()
        ids = [c.info.run_id for c in children]
        cur.execute("select count(*) from runs where run_uuid = any(%s) and status = 'FINISHED'", (ids,))
        assert cur.fetchone()[0] == 16
        cur.execute("select count(*), count(distinct (run_uuid, step)) from metrics "
                    "where key = 'valid/error' and run_uuid = any(%s)", (ids,))
        assert tuple(cur.fetchone()) == (80, 80)
    finally:
        con.close()
    assert "16 runs ranked by best/valid_error" in r.stdout
    assert sweep.main(["table", parent.info.run_id, "--tracking-uri", server, "--pivot", "lr,l2"]) == 0
