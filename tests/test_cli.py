"""End to end through the ``dlexp`` CLI: each model learns on real data, and the MLflow run reads back."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlexp import predict
from runs import download, history

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_logreg_digits_run_reads_back(dlexp, store, tmp_path, capsys):
    run = dlexp("dataset=digits", "trainer.max_epochs=200")
    assert run.info.status == "FINISHED"
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    assert m["best/test_error"] < 0.08 and m["best/valid_error"] < 0.10
    assert p["model.name"] == "logreg" and p["optimizer.lr"] == "0.13" and p["optimizer.batch_size"] == "600"
    assert p["early_stopping.patience"] == "5000" and p["dataset.name"] == "digits"
    assert len(t["dlexp.data_checksum"]) == 64 and t["dlexp.device"] == "cpu"
    assert t["dlexp.torch_version"] and "dlexp.git_commit" in t and "torch=" in t["dlexp.versions"]
    assert t["dlexp.overrides"].startswith("dataset=digits trainer.max_epochs=200")
    assert run.info.run_name == "logreg/digits max_epochs=200"
    valid = history(run, "valid/error", store)
    assert len(valid) > 10 and [h.step for h in valid] == sorted(h.step for h in valid)
    assert len(history(run, "perf/epoch_seconds", store)) == m["final/epochs"]
    # the checkpoint artifact reloads through the safe loader and reproduces the logged test error
    ckpt = download(run, "checkpoint/best_params.pkl", store, tmp_path / "dl")
    capsys.readouterr()
    assert predict.main([str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"test error {100 * m['best/test_error']:.2f} %")
    # the filter image: 10 logreg filters of 8x8 on a 3 x 4 grid with 1-pixel spacing, enlarged s times
    img = np.asarray(Image.open(download(run, "images/filters.png", store, tmp_path / "img")))
    s = img.shape[1] // (9 * 4 - 1)
    assert s >= 1 and img.shape == (s * (9 * 3 - 1), s * (9 * 4 - 1))
    tile = img[:s * 8, :s * 8]  # the first filter, scaled to the full grey range on its own
    assert tile.min() == 0 and tile.max() == 255
    config = download(run, "config.yaml", store, tmp_path / "cfg").read_text()
    assert "batch_size: 600" in config


def test_predict_by_run_id_writes_labels(dlexp, store, tmp_path, capsys):
    run = dlexp("dataset=digits", "trainer.max_epochs=20")
    out = tmp_path / "labels.npy"
    assert predict.main([run.info.run_id, "--tracking-uri", store, "--split", "valid", "--output", str(out)]) == 0
    labels = np.load(out)
    assert labels.shape == (250,) and set(labels.tolist()) <= set(range(10))
    assert f"valid error {100 * run.data.metrics['best/valid_error']:.2f} %" in capsys.readouterr().out


def test_mlp_tutorial_protocol_on_digits(dlexp):
    # the tutorial's exact protocol (patience 10000, up to 1000 epochs): ~650 epochs, ~20 s here
    run = dlexp("experiment=tutorial_mlp", "dataset=digits")
    assert run.data.params["regularization.l2"] == "0.0001" and run.data.params["optimizer.batch_size"] == "20"
    assert run.data.metrics["best/test_error"] < 0.03
    assert "train/penalty" in run.data.metrics


def test_lenet_digits_learns(dlexp):
    run = dlexp("experiment=tutorial_lenet", "dataset=digits", "model.filter_size=3", "model.pool_size=1",
                "optimizer.batch_size=50", "trainer.max_epochs=8")
    assert run.data.metrics["best/test_error"] < 0.08


def test_cg_logreg_digits_learns(dlexp):
    run = dlexp("experiment=tutorial_cg", "dataset=digits", "trainer.max_epochs=30")
    assert run.data.params["optimizer.name"] == "cg"
    assert run.data.metrics["best/test_error"] < 0.08


def test_momentum_and_plateau_schedule_run(dlexp, store):
    run = dlexp("model=mlp", "dataset=digits", "model.hidden_sizes=[64]", "optimizer.lr=0.05",
                "optimizer.batch_size=20", "optimizer.momentum=0.9", "optimizer.schedule=plateau",
                "early_stopping=no_improvement", "early_stopping.epochs=3", "trainer.max_epochs=40")
    assert run.data.metrics["best/test_error"] < 0.08
    assert run.data.metrics["final/epochs"] < 40  # stopped early by no_improvement


@pytest.mark.skipif(not FASHION.exists(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_logreg_learns(dlexp):
    run = dlexp("dataset=fashion_mnist", "trainer.max_epochs=3")
    assert run.data.tags["dlexp.data_source"].startswith(str(FASHION))
    assert run.data.metrics["best/test_error"] < 0.20


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "dlexp.cli", *args, "hydra.run.dir=run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override,needle", [
    ("optimizer.lr=-1", "optimizer.lr=-1.0 is not allowed: must be > 0"),
    ("optimizer.batch_size=5000", "optimizer.batch_size=5000 is not allowed: at most the 1297 training examples"),
    ("model=lenet", "8x8 input is too small"),
])
def test_bad_input_fails_before_any_run(tmp_path, override, needle):
    r = _cli(tmp_path, "dataset=digits", override)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("dlexp: error:")]
    assert len(errors) == 1 and needle in errors[0]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # no MLflow run was created


def test_help_lists_groups(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0
    for group in ("model:", "dataset:", "optimizer:", "early_stopping:", "experiment:"):
        assert group in r.stdout
