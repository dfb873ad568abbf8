"""Resume after a crash, stop on signals, divergence and tracking faults, through the CLI in subprocesses.

A run is SIGKILLed at a random moment after its first training-state
checkpoint and resumed with ``trainer.resume``; it must end with the same
parameters (bit for bit) and the same metric histories as an uninterrupted
run. bench/faults.py does the same at more kill points and prints a report.
"""
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dlexp import safe_pickle as checkpoint

TIMINGS = ("seconds", "examples_per_s")
MODELS = {
    "logreg": ["model=logreg", "optimizer.batch_size=50", "trainer.max_epochs=150", "trainer.checkpoint_every=10"],
    "mlp": ["model=mlp", "optimizer.batch_size=20", "optimizer.momentum=0.5", "trainer.shuffle=true",
            "trainer.max_epochs=25", "trainer.checkpoint_every=25"],
    "rbm": ["model=rbm", "model.pretrain_epochs=8", "model.n_hidden=64", "model.n_chains=2", "model.n_samples=2",
            "trainer.checkpoint_every=25"],
}


class Store:
    """A temp dir with its own sqlite store; runs the CLI there."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root}/mlflow.db"
        self.n = 0

    def argv(self, overrides):
        self.n += 1
        return [sys.executable, "-m", "dlexp.cli", "dataset=digits", *overrides, f"tracking.uri={self.uri}",
                "trainer.progress=log", f"hydra.run.dir=run{self.n}"]

    def run(self, overrides, **kw):
        return subprocess.run(self.argv(overrides), cwd=self.root, capture_output=True, text=True, timeout=300, **kw)

    def start(self, overrides, **kw):
        return subprocess.Popen(self.argv(overrides), cwd=self.root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, **kw)

    def client(self):
        return MlflowClient(self.uri)

    def runs(self):
        c = self.client()
        exp = c.get_experiment_by_name("dlexp")
        return c.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]) if exp else []

    def state_files(self):
        return list((self.root / "mlartifacts").glob("*/artifacts/state/train_state.pkl"))

    def params(self, run_id, name):
        return checkpoint.load(self.root / "mlartifacts" / run_id / "artifacts" / "checkpoint" / name)["params"]

    def histories(self, run_id):
        c = self.client()
        return {k: [(m.step, m.value) for m in c.get_metric_history(run_id, k)]
                for k in c.get_run(run_id).data.metrics if not any(t in k for t in TIMINGS)}


def interrupt(store, overrides, sig, rng):
    """Start a run, wait for its first state checkpoint, wait a random moment, send ``sig``."""
    p = store.start(overrides)
    deadline = time.monotonic() + 120
    while not store.state_files() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.1))
    p.send_signal(sig)
    return p.wait(60), p.stderr.read()


def assert_identical(store, ref_id, run_id, ckpt):
    a, b = store.params(ref_id, ckpt), store.params(run_id, ckpt)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ha, hb = store.histories(ref_id), store.histories(run_id)
    assert ha.keys() == hb.keys() and all(ha[k] == hb[k] for k in ha), \
        {k: (ha[k][-2:], hb.get(k, [])[-2:]) for k in ha if ha[k] != hb.get(k)}


@pytest.mark.parametrize("model", ["logreg", "mlp", "rbm"])
def test_sigkill_then_resume_gives_the_uninterrupted_result(tmp_path, model):
    store = Store(tmp_path)
    overrides = MODELS[model]
    assert store.run(overrides).returncode == 0
    rc, err = interrupt(store, overrides, signal.SIGKILL, random.Random(model))
    ref, killed = store.runs()
    if rc == 0:
        pytest.skip("the run finished before the kill landed")  # a very fast machine
    assert rc == -signal.SIGKILL and killed.info.status == "RUNNING"  # nothing could mark it
    r = store.run(overrides + [f"trainer.resume={killed.info.run_id}"])
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = store.client().get_run(killed.info.run_id)
    assert resumed.info.status == "FINISHED" and "dlexp.resumed_from" in resumed.data.tags
    assert len(store.runs()) == 2  # the same run continued
    assert_identical(store, ref.info.run_id, killed.info.run_id,
                     "pretrained_params.pkl" if model == "rbm" else "best_params.pkl")
    assert not store.state_files()  # finished: nothing left to resume


def test_sigkill_after_the_model_was_logged_resumes_to_the_same_histories(tmp_path):
    """Killed between logging its MLflow model (which copies the run's metrics at that step onto the model,
    into the run's histories) and its end, a resumed run keeps that model: no second copy of those points."""
    store = Store(tmp_path)
    overrides = MODELS["logreg"][:3] + ["trainer.max_epochs=40", "trainer.checkpoint_every=10"]
    assert store.run(overrides).returncode == 0
    p = subprocess.Popen(store.argv(overrides), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    for line in p.stdout:  # the line the run prints once its model is logged
        if "MLflow model models:/" in line:
            p.kill()
            break
    rc = p.wait(60)
    ref, killed = store.runs()
    if rc == 0 or killed.info.status != "RUNNING":
        pytest.skip("the run ended before the kill landed")
    [first] = killed.outputs.model_outputs
    assert store.run(overrides + [f"trainer.resume={killed.info.run_id}"]).returncode == 0
    resumed = store.client().get_run(killed.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert [o.model_id for o in resumed.outputs.model_outputs] == [first.model_id]  # the same model, kept
    assert_identical(store, ref.info.run_id, killed.info.run_id, "best_params.pkl")


def test_sigterm_saves_state_marks_killed_and_auto_resumes(tmp_path):
    store = Store(tmp_path)
    overrides = MODELS["mlp"]
    rc, err = interrupt(store, overrides, signal.SIGTERM, random.Random(1))
    (killed,) = store.runs()
    assert rc != 0 and killed.info.status == "KILLED", err[-2000:]
    state = checkpoint.load(store.state_files()[0])
    assert state["run_id"] == killed.info.run_id and state["phase"] == "finetune"
    assert store.run(overrides + ["trainer.resume=auto"]).returncode == 0
    assert [r.info.status for r in store.runs()] == ["FINISHED"]
    assert store.run(overrides).returncode == 0  # an uninterrupted reference
    ref = store.runs()[1]
    assert_identical(store, ref.info.run_id, killed.info.run_id, "best_params.pkl")


def test_resume_refuses_a_different_config_and_a_broken_state(tmp_path):
    store = Store(tmp_path)
    overrides = MODELS["logreg"]
    rc, _ = interrupt(store, overrides, signal.SIGKILL, random.Random(2))
    (killed,) = store.runs()
    r = store.run(overrides + ["optimizer.lr=0.5", f"trainer.resume={killed.info.run_id}"])
    assert r.returncode == 2 and "optimizer.lr=0.13" in r.stderr and "optimizer.lr=0.5" in r.stderr, r.stderr
    state = store.state_files()[0]
    broken = tmp_path / "broken_state.pkl"
    broken.write_bytes(state.read_bytes()[:100])
    r = store.run(overrides + [f"trainer.resume={broken}"])
    errors = [line for line in r.stderr.splitlines() if line.startswith("dlexp: error:")]
    assert r.returncode == 2 and len(errors) == 1 and "broken_state.pkl" in errors[0], r.stderr
    r = store.run(overrides + ["trainer.resume=0123456789abcdef0123456789abcdef"])
    assert r.returncode == 2 and "no such run" in r.stderr
    assert len(store.runs()) == 1


def test_divergence_fails_the_run_and_keeps_the_best_model(tmp_path):
    store = Store(tmp_path)
    r = store.run(["model=mlp", "optimizer.lr=1e20", "optimizer.batch_size=20",
                   "early_stopping.validation_frequency=1"])
    errors = [line for line in r.stderr.splitlines() if line.startswith("dlexp: error:")]
    assert r.returncode == 1 and len(errors) == 1, r.stderr[-2000:]
    assert "diverged at iteration 2" in errors[0] and "lr=1e+20" in errors[0] and "model=mlp" in errors[0]
    (run,) = store.runs()
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["dlexp.error"]
    best = store.params(run.info.run_id, "best_params.pkl")  # the model of iteration 1, finite
    assert all(np.isfinite(v).all() for v in best.values())


def test_unreachable_tracking_server_fails_fast(tmp_path):
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "dataset=digits", "tracking.uri=http://127.0.0.1:9",
                        "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("dlexp: error:")]
    assert r.returncode == 2 and len(errors) == 1 and "http://127.0.0.1:9" in errors[0], r.stderr
    assert time.monotonic() - start < 60


def _disk_full_at(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_disk_full_fails_the_run_and_keeps_the_last_state(tmp_path):
    store = Store(tmp_path)
    overrides = ["model=mlp", "model.hidden_sizes=[3000]", "optimizer.batch_size=20", "optimizer.momentum=0.5",
                 "trainer.max_epochs=30", "trainer.checkpoint_every=20"]
    rc, _ = interrupt(store, overrides, signal.SIGKILL, random.Random(3))
    assert rc == -signal.SIGKILL  # (a run too short to be killed mid-way would leave no state)
    (run,) = store.runs()
    state = store.state_files()[0]
    before, files = state.read_bytes(), sorted(state.parent.iterdir())  # (the kill may leave a temp file)
    db = tmp_path / "mlflow.db"
    limit = db.stat().st_size + (1 << 19)  # the store can still grow; a state of 2.7 MB cannot be written
    assert len(before) > limit
    r = store.run(overrides + [f"trainer.resume={run.info.run_id}"], preexec_fn=_disk_full_at(limit))
    assert r.returncode == 1 and "File too large" in r.stderr, r.stderr[-2000:]
    run = store.client().get_run(run.info.run_id)
    assert run.info.status == "FAILED" and "File too large" in run.data.tags["dlexp.error"]
    assert state.read_bytes() == before and sorted(state.parent.iterdir()) == files  # intact, no new temp file
    r = store.run(overrides + [f"trainer.resume={run.info.run_id}"])  # space again: it resumes and finishes
    assert r.returncode == 0 and store.client().get_run(run.info.run_id).info.status == "FINISHED"
    assert not state.parent.exists()  # state removed at the end, temp files of killed writers and the folder too
