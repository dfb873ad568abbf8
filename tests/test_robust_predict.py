"""``dlexp-predict`` under real use: every mistake or fault is one line on stderr and exit status 2.

Each case runs the command as a real process on real files: checkpoints made by a short real
training (then modified copies written with ``dlexp.safe_pickle.save``), real ``.npy`` inputs and a
real MLflow store. Besides the one line naming the bad value or file, the tests check what a user
would find afterwards: the checkpoint and inputs unchanged, no MLflow store created where there was
none, no temp directory left behind, and labels readable with ``numpy.load``.
"""
import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dlexp import safe_pickle as checkpoint

RUN_ID = "0123456789abcdef0123456789abcdef"  # the form of a run id; in no store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real digits checkpoint (8x8 logreg) from one epoch of training, and its loaded dict."""
    cwd = tmp_path_factory.mktemp("train")
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "dataset=digits", "trainer.max_epochs=1", "tracking=none",
                        "trainer.progress=none"], cwd=cwd, capture_output=True, text=True, timeout=300)
    found = glob.glob(str(cwd / "outputs" / "runs" / "**" / "best_params.pkl"), recursive=True)
    assert r.returncode == 0 and len(found) == 1, r.stderr[-2000:]
    return Path(found[0]), checkpoint.load(found[0])


@pytest.fixture
def variant(trained, tmp_path):
    """variant(name, **changes) -> a copy of the trained checkpoint with keys replaced (None: removed)."""
    def _write(name, **changes):
        ckpt = {**trained[1], "params": dict(trained[1]["params"])}
        for key, value in changes.items():
            if value is None:
                ckpt.pop(key)
            else:
                ckpt[key] = value
        checkpoint.save(tmp_path / name, ckpt)
        return tmp_path / name
    return _write


def run_predict(*args, cwd=None, env=None):
    """dlexp-predict as a process; the environment has TMPDIR etc. as given."""
    return subprocess.run([sys.executable, "-m", "dlexp.predict", *map(str, args)], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


def one_error(r, *needles) -> str:
    """The single stderr line of a refused call: 'dlexp-predict: error: ...' naming each needle, exit 2."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("dlexp-predict: error:") and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def params_with(trained, **arrays):
    return {**trained[1]["params"], **arrays}


BAD_CHECKPOINTS = {
    "wrong_shape": (lambda t: {"params": params_with(t, **{"linear.weight": np.zeros((10, 65), np.float32)})},
                    ["'linear.weight'", "(10, 65)", "(10, 64)"]),
    "missing_param": (lambda t: {"params": {"linear.weight": t[1]["params"]["linear.weight"]}},
                      ["lacks 'linear.bias'"]),
    "extra_param": (lambda t: {"params": params_with(t, extra=np.zeros(3, np.float32))}, ["'extra'"]),
    "unknown_model": (lambda t: {"model": {"name": "resnet"}}, ["'resnet'", "logreg", "mlp"]),
    "no_params": (lambda t: {"params": None}, ["no 'params'"]),
    "no_image_shape": (lambda t: {"image_shape": None}, ["no 'image_shape'"]),
    "bad_image_shape": (lambda t: {"image_shape": [8, 8]}, ["'image_shape'", "[8, 8]"]),
    "extra_model_key": (lambda t: {"model": {"name": "logreg", "hidden_sizes": [5]}}, ["'hidden_sizes'"]),
    "bad_model_value": (lambda t: {"model": {"name": "mlp", "hidden_sizes": [0]}}, ["model.hidden_sizes"]),
    "not_numbers": (lambda t: {"params": params_with(t, **{"linear.bias": "ten"})}, ["'linear.bias'", "numeric"]),
    "nan_params": (lambda t: {"params": params_with(t, **{"linear.bias": np.array([np.nan] * 3 + [np.inf] + [0] * 6,
                                                                                    np.float32)})},
                   ["4 NaN/Inf", "'linear.bias'"]),
    "unsupervised": (lambda t: {"model": {"name": "da"}}, ["a da has no classifier"]),
    "wrong_format": (lambda t: {"format": "other/1"}, ["not a dlexp checkpoint"]),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_bad_checkpoint_is_one_line_naming_it(trained, variant, case):
    changes, needles = BAD_CHECKPOINTS[case]
    path = variant(f"{case}.pkl", **changes(trained))
    one_error(run_predict(path), str(path), *needles)


def test_checkpoint_that_is_not_a_dict(tmp_path):
    path = tmp_path / "list.pkl"
    checkpoint.save(path, [1, 2, 3])
    one_error(run_predict(path), str(path), "not a dlexp checkpoint")


@pytest.mark.parametrize("source,needle", [("missing.pkl", "'missing.pkl' is neither an existing file"),
                                           (".", "is a directory")])
def test_source_that_is_no_checkpoint_file(tmp_path, source, needle):
    one_error(run_predict(source, cwd=tmp_path), needle)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_dataset_of_another_image_size_refused_before_loading_it(trained, tmp_path, dataset):
    # no data of that name exists here (DLEXP_CACHE points nowhere): the size is known from the name
    r = run_predict(trained[0], "--dataset", dataset, cwd=tmp_path)
    one_error(r, f"--dataset {dataset}", "8x8 inputs (64 values)", f"dataset {dataset} has 28x28")
    assert list(tmp_path.iterdir()) == []


def test_inputs_of_the_wrong_width(trained, tmp_path):
    np.save(tmp_path / "x.npy", np.random.rand(4, 63).astype(np.float32))
    one_error(run_predict(trained[0], "--inputs", tmp_path / "x.npy"), str(tmp_path / "x.npy"), "(4, 63)",
              "(N, 64) or (N, 8, 8)")


def test_nan_inputs_refused_with_their_count(trained, tmp_path):
    x = np.random.rand(4, 8, 8)
    x[1, 2, 3], x[3, 0, 0] = np.nan, -np.inf
    np.save(tmp_path / "x.npy", x)
    one_error(run_predict(trained[0], "--inputs", tmp_path / "x.npy"), str(tmp_path / "x.npy"), "2 NaN/Inf")


@pytest.mark.parametrize("content,needle", [(None, "no such file"), (np.zeros((0, 64)), "no images"),
                                            (np.array([{"a": 1}], dtype=object), "not a readable .npy")])
def test_inputs_that_cannot_be_used(trained, tmp_path, content, needle):
    path = tmp_path / "x.npy"
    if content is not None:
        np.save(path, content, allow_pickle=True)
    one_error(run_predict(trained[0], "--inputs", path), str(path), needle)


def test_output_onto_the_checkpoint_is_refused_and_it_stays_whole(trained, tmp_path):
    np.save(tmp_path / "x.npy", np.random.rand(3, 64))
    before = trained[0].read_bytes()
    r = run_predict(trained[0], "--inputs", tmp_path / "x.npy", "--output", trained[0])
    one_error(r, f"--output {trained[0]}", "is the checkpoint")
    assert trained[0].read_bytes() == before


def test_output_onto_the_inputs_is_refused_and_they_stay_whole(trained, tmp_path):
    np.save(tmp_path / "x.npy", np.random.rand(3, 64))
    before = (tmp_path / "x.npy").read_bytes()
    r = run_predict(trained[0], "--inputs", "x.npy", "--output", "./x.npy", cwd=tmp_path)
    one_error(r, "--output x.npy", "is the --inputs file")
    assert (tmp_path / "x.npy").read_bytes() == before


@pytest.mark.parametrize("output,needle", [("labels.txt", "must be a .npy"), ("adir.npy", "is a directory"),
                                           ("nodir/labels.npy", "nodir does not exist")])
def test_bad_output_names_the_users_path(trained, tmp_path, output, needle):
    (tmp_path / "adir.npy").mkdir()
    one_error(run_predict(trained[0], "--output", output, cwd=tmp_path), f"--output {output}", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.npy"]


def test_output_in_a_read_only_directory_names_it_not_a_temp_file(trained, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        target = ro / "labels.npy"
        if os.access(ro, os.W_OK):  # root writes anywhere, but not into sysfs
            if not Path("/sys/kernel").is_dir():
                pytest.skip("running as root without /sys: no directory refuses a write")
            target = Path("/sys/dlexp-labels.npy")
        line = one_error(run_predict(trained[0], "--output", target), f"--output {target}")
        assert ".tmp" not in line and not target.exists()
    finally:
        ro.chmod(0o755)


def test_missing_sqlite_store_is_refused_and_nothing_created(tmp_path):
    for db in (tmp_path / "nodir" / "mlflow.db", tmp_path / "mlflow.db"):
        r = run_predict(RUN_ID, "--tracking-uri", f"sqlite:///{db}", cwd=tmp_path)
        one_error(r, f"no MLflow store at {db}", RUN_ID)
        assert list(tmp_path.iterdir()) == []


def test_run_id_without_any_store_creates_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run([sys.executable, "-m", "dlexp.predict", RUN_ID], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    one_error(r, f"no MLflow store at {tmp_path.resolve() / 'outputs' / 'mlflow.db'}")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def store(trained, tmp_path_factory):
    """A real sqlite MLflow store with one run holding the trained checkpoint as its artifact."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("predict", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifact(run.info.run_id, str(trained[0]), "checkpoint")
    client.set_terminated(run.info.run_id)
    return uri, run.info.run_id


def test_unknown_run_id_in_an_existing_store(store, tmp_path):
    one_error(run_predict(RUN_ID, "--tracking-uri", store[0], cwd=tmp_path), f"no run {RUN_ID}", store[0])


@pytest.mark.parametrize("args,needle", [(["--split", "training"], "--split: invalid choice: 'training'"),
                                         (["--dataset", "cifar"], "--dataset: invalid choice: 'cifar'"),
                                         (["--nope"], "unrecognized arguments: --nope"),
                                         ([], None)])
def test_usage_mistakes_are_one_line(trained, args, needle):
    source = [] if needle is None else [trained[0]]
    one_error(run_predict(*source, *args), needle or "required: source")


def test_labels_written_readable_and_no_temp_dir_left(trained, store, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    x = np.random.RandomState(0).rand(7, 8, 8).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "labels.npy").write_bytes(b"an older file, replaced")
    for source in (trained[0], store[1]):  # a file, and a run's artifact (downloaded, then removed)
        r = run_predict(source, "--inputs", tmp_path / "x.npy", "--output", tmp_path / "labels.npy", "--force",
                        "--tracking-uri", store[0], env={"TMPDIR": str(tmp)})
        assert r.returncode == 0 and r.stderr == "", r.stderr
        labels = np.load(tmp_path / "labels.npy")
        assert labels.shape == (7,) and set(labels.tolist()) <= set(range(10))
        assert r.stdout.split() == [str(v) for v in labels.tolist()]
        assert list(tmp.iterdir()) == []  # no dlexp-predict-* copy of the checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.npy", "tmp", "x.npy"]  # no temp file


def test_labels_file_gets_the_umask_mode(trained, tmp_path):
    out = tmp_path / "labels.npy"
    r = subprocess.run([sys.executable, "-m", "dlexp.predict", str(trained[0]), "--split", "valid", "--output",
                        str(out)], capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0 and r.stdout.startswith("valid error "), r.stderr
    assert np.load(out).shape == (250,) and out.stat().st_mode & 0o777 == 0o644


def _as_a_shell_starts_it():
    """SIGINT at its default and not blocked in the child: a child inherits both from this pytest process,
    which earlier tests' libraries may have left otherwise (a Python started with SIGINT ignored installs
    no KeyboardInterrupt handler at all)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_masks(pid: int) -> str:
    try:
        return " ".join(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
    except OSError:
        return "(no /proc)"


def test_interrupt_is_one_line_and_status_130(tmp_path):
    """SIGINT while the command waits mid-run: here on a tracking server that accepted the connection and
    never answers (a FIFO, which waited the same way, is now refused unopened)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(60)
    p = subprocess.Popen([sys.executable, "-m", "dlexp.predict", RUN_ID, "--tracking-uri",
                          f"http://127.0.0.1:{server.getsockname()[1]}"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=_as_a_shell_starts_it)
    try:
        conn, _ = server.accept()
        conn.settimeout(60)
        assert conn.recv(1), p.communicate()  # its request has begun: the process waits for the answer
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            masks = _signal_masks(p.pid)
            p.kill()
            pytest.fail(f"dlexp-predict did not stop within 60 s of SIGINT; its signal masks: {masks}")
        conn.close()
    finally:
        server.close()
    assert p.returncode == 130 and err.strip() == "dlexp-predict: stopped", err
