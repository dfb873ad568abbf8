"""Nothing lost, third round (issue 22): no command writes over the store, a mistake creates nothing.

One real sweep (2 jobs on digits, its best child registered) in the default store ``outputs/mlflow.db`` is
the user's work; each case then does what a user might and checks what they would find: the store still
opening with every run, exit status 2 with exactly one ``<prog>: error:`` line, no new file or run
directory. ``dlexp`` runs as a process; ``dlexp-sweep`` and ``dlexp-predict`` run through their ``main``
(the console scripts' code) where a case cannot hang, as a process with a timeout where it could (FIFOs).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dlexp import predict
from dlexp.tracking import store
from dlexp.sweep import cli as sweep_cli

REPO = Path(__file__).resolve().parents[1]
NAME = "nothing-lost"


def env():
    e = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    e.pop("MLFLOW_TRACKING_URI", None)
    return e


def dlexp(cwd, *overrides, timeout=300):
    return subprocess.run([sys.executable, "-m", "dlexp.cli", "dataset=digits", "trainer.progress=none",
                           *overrides], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def one_line(r, prog="dlexp"):
    """The single error line of a refused command (exit 2)."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error:"), r.stderr[-3000:]
    return lines[0]


def in_process(main, argv, capsys, cwd, monkeypatch):
    """(exit status, the stderr lines) of ``main(argv)`` run in ``cwd``, as the console script does."""
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    capsys.readouterr()
    code = main(list(map(str, argv)))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A user's directory: a 2-job sweep in outputs/mlflow.db, its best child registered as NAME."""
    cwd = tmp_path_factory.mktemp("work")
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "-m", "dataset=digits", "trainer.progress=none",
                        "trainer.max_epochs=1", "optimizer.lr=0.1,0.01", f"tracking.register_as={NAME}"],
                       cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    uri = f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}"
    runs = all_runs(uri)
    parent = next(r for r in runs if "dlexp.sweep_id" in r.data.tags)
    child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    ckpt = next((cwd / "outputs").glob("multirun/*/*/*/best_params.pkl"))
    return cwd, uri, parent.info.run_id, child.info.run_id, ckpt


def all_runs(uri):
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)


def listing(cwd: Path) -> set:
    return {str(p.relative_to(cwd)) for p in cwd.rglob("*")}


@pytest.mark.parametrize("target", ["outputs/mlflow.db", "outputs/mlflow.db-wal", "outputs/mlflow.db.lock",
                                    "outputs/mlartifacts/table.txt", "notes.txt"])
def test_output_never_overwrites_the_store_its_artifacts_or_a_file(work, target, capsys, monkeypatch):
    cwd, uri, parent, _, _ = work
    (cwd / "notes.txt").write_text("the user's notes\n")
    before, n_runs = listing(cwd), len(all_runs(uri))
    for argv in (["table", parent, "--output", target], ["compare", parent, parent, "--output", target]):
        code, err = in_process(sweep_cli.main, argv, capsys, cwd, monkeypatch)
        assert code == 2 and len(err) == 1 and err[0].startswith(f"dlexp-sweep: error: --output {target}:"), err
    assert len(all_runs(uri)) == n_runs and listing(cwd) == before
    assert (cwd / "notes.txt").read_text() == "the user's notes\n"


def test_output_replaces_an_existing_file_only_with_force_and_atomically(work, capsys, monkeypatch):
    cwd, uri, parent, _, ckpt = work
    (cwd / "old.npy").write_bytes(b"older labels")
    code, err = in_process(predict.main, [ckpt, "--output", "old.npy"], capsys, cwd, monkeypatch)
    assert code == 2 and err == ["dlexp-predict: error: --output old.npy: exists; refusing to overwrite it (add "
                                 "--force to replace it, or choose another file)"]
    assert (cwd / "old.npy").read_bytes() == b"older labels"
    code, err = in_process(predict.main, [ckpt, "--output", "old.npy", "--force"], capsys, cwd, monkeypatch)
    assert code == 0 and np.load(cwd / "old.npy").shape == (250,)
    code, _ = in_process(sweep_cli.main, ["table", parent, "--format", "csv", "--output", "t.csv"], capsys, cwd,
                         monkeypatch)
    assert code == 0 and (cwd / "t.csv").read_text().startswith("rank,")
    assert not list(cwd.glob(".*.tmp"))  # no temp file of the atomic writes left


def test_fifos_are_refused_in_one_line_never_opened(work, tmp_path):
    cwd, uri, _, _, ckpt = work
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for argv, needle in (([fifo], "the checkpoint"), ([ckpt, "--inputs", fifo], "--inputs")):
        r = subprocess.run([sys.executable, "-m", "dlexp.predict", *map(str, argv)], cwd=tmp_path, env=env(),
                           capture_output=True, text=True, timeout=60)
        assert f"{needle} {fifo}: is a FIFO" in one_line(r, "dlexp-predict")
    r = dlexp(tmp_path, f"tracking.uri=sqlite:///{fifo}", timeout=60)
    assert "is a FIFO" in one_line(r) and listing(tmp_path) == {"pipe"}


@pytest.mark.parametrize("link", ["dangling", "looping"])
def test_a_broken_symlink_at_the_store_is_refused_not_replaced(tmp_path, link):
    db = tmp_path / "mlflow.db"
    db.symlink_to(tmp_path / "nowhere" / "x.db" if link == "dangling" else db)
    r = dlexp(tmp_path, f"tracking.uri=sqlite:///{db}", timeout=60)
    assert "symlink to nothing" in one_line(r) and db.is_symlink() and listing(tmp_path) == {"mlflow.db"}


@pytest.mark.parametrize("overrides,needle", [
    ([f"model.pretrained_from=models:/{NAME}/99"], "has no version '99' (its versions: 1)"),
    (["model.pretrained_from=runs:/0123456789abcdef0123456789abcdef/model"], "no run 0123456789abcdef"),
    (["tracking.experiment=" + "x" * 10000], "at most 500 characters"),
    (["++tracking.tags={" + "k" * 251 + ": v}"], "at most 236 characters"),
    (["++tracking.tags={mlflow.runName: x}"], "'mlflow.runName' is not allowed"),
    (["tracking=none", "trainer.skip_finished=true"], "trainer.skip_finished=True is not allowed"),
    (["tracking.register_as=\"it's\""], "cannot contain \"'\""),
])
def test_mistakes_are_one_line_exit_2_and_create_nothing(work, tmp_path, overrides, needle):
    _, uri, _, _, _ = work
    n_runs = len(all_runs(uri))
    r = dlexp(tmp_path, "model=sda", "trainer.max_epochs=1", f"tracking.uri={uri}", *overrides)
    assert needle in one_line(r) and "Error:" not in one_line(r)  # not "<ExceptionType>: ..."
    assert listing(tmp_path) == set()  # no run directory, no outputs/
    assert len(all_runs(uri)) == n_runs


def test_read_only_commands_leave_a_store_they_cannot_read_as_it_is(tmp_path, capsys, monkeypatch):
    from test_robust_store import old_store_with_a_run

    (tmp_path / "empty.db").write_bytes(b"")
    old_store_with_a_run(tmp_path / "old.db")
    for name in ("empty.db", "old.db"):
        before = (tmp_path / name).read_bytes()
        for main, argv in ((sweep_cli.main, ["list"]), (predict.main, ["0123456789abcdef0123456789abcdef"])):
            code, err = in_process(main, [*argv, "--tracking-uri", f"sqlite:///{name}"], capsys, tmp_path, monkeypatch)
            assert code == 2 and len(err) == 1 and "this command only reads a store" in err[0], err
        assert (tmp_path / name).read_bytes() == before
    assert listing(tmp_path) == {"empty.db", "old.db"}


def test_table_of_a_child_run_names_its_sweep(work, capsys, monkeypatch):
    cwd, _, parent, child, _ = work
    code, err = in_process(sweep_cli.main, ["table", child], capsys, cwd, monkeypatch)
    assert code == 2 and len(err) == 1 and f"child run) of the sweep whose parent run is {parent}" in err[0], err


def test_temp_file_of_a_killed_store_creation_is_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    tmp = tmp_path / f".mlflow.db.{dead.pid}-0123abcd.tmp"
    tmp.write_bytes(b"SQLite format 3\x00 half")
    store.prepare_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]
