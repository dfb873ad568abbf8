"""Mistakes a new user makes on the `dlexp` command line: each ends in one line, exit 2, nothing created.

Hydra's own composition errors (an unknown option, a value of the wrong type, a misspelt key, an override
that does not parse) are reported as dlexp's own, one line, without Hydra's 20-line report; keys added with
`+` that no schema has are refused; schemas are not options. Ctrl-C at start-up ends with one line, and
files a run writes get the umask's mode.
"""
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient


def _cli(tmp_path, *overrides, env=None):
    return subprocess.run([sys.executable, "-m", "dlexp.cli", *overrides, "trainer.progress=log"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)


def _one_error_line(r):
    errors = [line for line in r.stderr.splitlines() if line.startswith("dlexp: error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("overrides,needles", [
    (["model=foo"], ["model=foo", "one of ca, da, dbn, lenet, logreg, mlp, rbm, sda"]),
    (["dataset=nope"], ["dataset=nope", "digits, fashion_mnist, mnist"]),
    (["model=_schema_mlp"], ["model=_schema_mlp", "not allowed"]),
    (["optimizer.lr=abc"], ["optimizer.lr=abc", "Float"]),
    (["optimizer.lrr=1"], ["optimizer.lrr", "one of batch_size, decay, lr"]),
    (["+optimizer.foo=1"], ["optimizer.foo", "not a key of optimizer"]),
    (["+foo=1"], ["foo", "not a config key"]),
    (["optimizer.lr=[1"], ["optimizer.lr=[1", "cannot parse"]),
    (["optimizer.lr=inf"], ["optimizer.lr=inf", "finite"]),
    (["optimizer.lr=1e400"], ["optimizer.lr=inf", "finite"]),
    (["dataset.path=/dev/zero", "dataset=mnist"], ["/dev/zero", "not a regular file"]),
    (["dataset.path=/tmp"], ["dataset.path='/tmp'", "dataset=digits"]),
])
def test_mistake_is_one_line_exit_2_and_creates_nothing(tmp_path, overrides, needles):
    r = _cli(tmp_path, "dataset=digits", *overrides)
    line = _one_error_line(r)
    assert r.returncode == 2 and all(n in line for n in needles), line
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_text_file_named_npz_is_not_a_pickle_question(tmp_path):
    (tmp_path / "mnist.npz").write_text("hello\n")
    r = _cli(tmp_path, "dataset=mnist", f"dataset.path={tmp_path}/mnist.npz")
    line = _one_error_line(r)
    assert r.returncode == 2 and "not a valid npz file" in line and "allow_pickle" not in r.stderr


def test_help_lists_options_not_schemas(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "--help"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "logreg, mlp" in r.stdout and "tutorial_sda" in r.stdout
    assert "_schema" not in r.stdout and "powered by Hydra" not in r.stdout


def _sigint_as_at_a_terminal() -> None:
    """SIGINT at its default in the child, as a terminal starts a command: a test runner started as a
    background job of a shell ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_handler(pid: int, sig, timeout: float = 60) -> None:
    """Until process ``pid`` catches ``sig`` (its bit in SigCgt of /proc/<pid>/status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        if int(fields["SigCgt"], 16) >> (sig - 1) & 1:
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never caught signal {sig}")


@pytest.mark.parametrize("delay, sig", [(0.3, signal.SIGINT), (1.5, signal.SIGINT), (3.0, signal.SIGINT),
                                        (0, signal.SIGTERM), (1.5, signal.SIGTERM)])
def test_ctrl_c_at_start_up_is_one_line_and_no_run_left_running(tmp_path, delay, sig):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    p = subprocess.Popen([sys.executable, "-m", "dlexp.cli", "dataset=digits", "model=mlp", f"tracking.uri={store}",
                          "trainer.progress=log"], cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         text=True, preexec_fn=_sigint_as_at_a_terminal)
    # from the moment the process catches it (Python's own SIGINT handler, dlexp's SIGTERM handler in main's
    # first line), not its exec: before that, the signal's default kills any program silently
    _wait_for_handler(p.pid, sig)
    time.sleep(delay)
    p.send_signal(sig)
    err = p.communicate(timeout=120)[1]
    assert "Traceback" not in err, err[-3000:]
    # the default mlp on digits trains for minutes: a run that ended on its own did not see the signal
    assert p.returncode == 130 and err.strip().startswith("dlexp: stopped ("), err[-3000:]
    stopped = [line for line in err.splitlines() if line.startswith("dlexp: stopped")]
    assert len(stopped) == 1 and "()" not in stopped[0], err[-2000:]
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(store)
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
        assert all(r.info.status != "RUNNING" for r in runs)


def test_signal_inside_code_run_from_a_string_still_exits_130(tmp_path):
    """A signal that lands while ``exec(str)`` runs (dataclasses, namedtuple, pybind11 do it while importing)
    used to end a ``python -m`` command with SIGINT (-2) after its 'stopped' line and ``sys.exit(130)``."""
    (tmp_path / "stopmod.py").write_text(
        "import sys\nfrom dlexp.interrupt import install\ninstall()\ntry:\n"
        "    exec('import os, signal, time\\nos.kill(os.getpid(), signal.SIGTERM)\\ntime.sleep(30)')\n"
        "except KeyboardInterrupt:\n    sys.exit(130)\n")
    r = subprocess.run([sys.executable, "-m", "stopmod"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 130, r.stderr[-2000:]


def test_an_error_raised_while_a_stop_is_handled_is_the_stop(tmp_path):
    """A SIGTERM landing in Python's import lock can make importlib raise a KeyError while it handles the
    KeyboardInterrupt (seen on CI: a traceback and exit 1); the command still stops in one line, exit 130."""
    code = ("import os, signal, sys, time\n"
            "import dlexp.sweep.optuna_setup as o\n"
            "def broken(argv):\n"
            "    try:\n"
            "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
            "    except KeyboardInterrupt:\n"
            "        raise KeyError(140174046296960)\n"
            "o.missing_sweeper = broken\n"
            "sys.argv = ['dlexp', 'dataset=digits']\n"
            "from dlexp.cli import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 130 and r.stderr.strip() == "dlexp: stopped (signal SIGTERM)", r.stderr[-2000:]


def test_a_stop_swallowed_by_a_finalizer_still_stops_the_command(tmp_path):
    """A signal whose handler runs inside a finalizer (or the garbage collector) raises there, and Python
    ignores that exception: the stop was lost and the run trained to its end. The command still stops before
    its run starts: one line, exit 130, no run in the store. (SIGTERM: a runner may start the tests with
    SIGINT ignored, as a shell starts a background job.)"""
    store = f"sqlite:///{tmp_path}/mlflow.db"
    code = ("import os, signal, sys\n"
            "import dlexp.sweep.optuna_setup as o\n"
            "class Finalized:\n"
            "    def __del__(self):\n"
            "        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the finalizer\n"
            "def dropped(argv):\n"
            "    Finalized()\n"
            "o.missing_sweeper = dropped\n"
            f"sys.argv = ['dlexp', 'dataset=digits', 'model=mlp', 'trainer.max_epochs=2', 'tracking.uri={store}']\n"
            "from dlexp.cli import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 130 and r.stderr.strip() == "dlexp: stopped (signal SIGTERM)", r.stderr[-2000:]
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(store)
        assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_written_files_get_the_umask_mode(tmp_path):
    r = _cli(tmp_path, "dataset=digits", "trainer.max_epochs=2", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    assert r.returncode == 0, r.stderr[-2000:]
    written = [p for p in (tmp_path / "outputs").rglob("*") if p.suffix in (".pkl", ".png")]
    written += [p for p in (tmp_path / "mlartifacts").rglob("*") if p.suffix in (".pkl", ".png")]
    assert written
    umask = os.umask(0)
    os.umask(umask)
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


def test_a_resumed_run_leaves_no_empty_state_folder(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    base = ["dataset=digits", "model=mlp", "optimizer.batch_size=20", "trainer.max_epochs=30",
            "trainer.checkpoint_every=20", f"tracking.uri={store}"]
    p = subprocess.Popen([sys.executable, "-m", "dlexp.cli", *base, "trainer.progress=log"], cwd=tmp_path,
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while not list(Path(tmp_path).rglob("train_state.pkl")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=120)
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("dlexp").experiment_id])[0]
    if run.info.status == "FINISHED":
        pytest.skip("the run finished before it could be stopped")
    r = _cli(tmp_path, *base, f"trainer.resume={run.info.run_id}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert "state" not in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_read_only_working_directory_is_one_line(tmp_path):
    from test_robust_store import read_only_runner

    cwd = tmp_path / "ro"
    cwd.mkdir()
    cwd.chmod(0o555)
    runner = read_only_runner(cwd)
    if runner is None:
        pytest.skip("cannot make a read-only directory hold for this user here")
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "dataset=digits", "trainer.max_epochs=1"], cwd=cwd,
                       capture_output=True, text=True, timeout=120, **runner)
    line = _one_error_line(r)
    assert r.returncode == 2 and "cannot create the run directory" in line and "writable" in line
