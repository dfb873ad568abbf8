"""Faults and bad input: refused before any work, with one line naming the fault; nothing runs from a pickle."""
import gzip
import os
import pickle
import subprocess
import sys

import pytest

from dlexp import safe_pickle as checkpoint, predict
from dlexp.config import ConfigError, validate


class Evil:
    """A pickle that would create ``marker`` when unpickled by plain pickle.load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_bytes(marker, payload=None):
    return pickle.dumps({"format": "dlexp.params/1", "params": Evil(marker)} if payload is None else payload)


def test_malicious_checkpoint_refused_by_predict(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "best_params.pkl"
    path.write_bytes(evil_bytes(marker))
    assert predict.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "refusing to unpickle" in err and "posix.system" in err or "os.system" in err
    assert not marker.exists()


def test_malicious_mnist_pkl_gz_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "mnist.pkl.gz").write_bytes(gzip.compress(evil_bytes(marker, ((Evil(marker),) * 2,) * 3)))
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "dataset=mnist", f"dataset.path={tmp_path}/mnist.pkl.gz",
                        "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "refusing to unpickle" in r.stderr
    assert not marker.exists()
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_malicious_pretrained_stack_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "pretrained_params.pkl").write_bytes(evil_bytes(marker))
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "model=sda", "dataset=digits",
                        f"model.pretrained_from={tmp_path}/pretrained_params.pkl", "hydra.run.dir=run"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "refusing to unpickle" in r.stderr
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "best_params.pkl"
    checkpoint.save(path, {"format": "dlexp.params/1", "params": {"w": list(range(1000))}})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(checkpoint.CheckpointError, match="best_params.pkl"):
        predict.load_model(path)


# Every bad value below must fail validation with one line naming the key and value.
BAD = [
    ("model=mlp model.hidden_sizes=[0]", "model.hidden_sizes"),
    ("model=lenet model.filter_size=0", "model.filter_size=0"),
    ("model=lenet model.pool_size=0", "model.pool_size=0"),
    ("model=lenet model.hidden_size=0", "model.hidden_size=0"),
    ("model=da model.corruption_level=1.0", "model.corruption_level=1.0"),
    ("model=da model.corruption_level=-0.1", "model.corruption_level=-0.1"),
    ("model=da model.n_hidden=0", "model.n_hidden=0"),
    ("model=da model.pretrain_lr=0", "model.pretrain_lr=0.0"),
    ("model=da model.pretrain_batch_size=0", "model.pretrain_batch_size=0"),
    ("model=da model.image_every=0", "model.image_every=0"),
    ("model=ca model.contraction_level=-1", "model.contraction_level=-1.0"),
    ("model=rbm model.k=0", "model.k=0"),
    ("model=rbm model.n_chains=0", "model.n_chains=0"),
    ("model=rbm model.plot_every=0", "model.plot_every=0"),
    ("model=sda model.corruption_levels=[0.1,0.2]", "model.corruption_levels=[0.1, 0.2]"),
    ("model=sda model.hidden_layers_sizes=[]", "model.hidden_layers_sizes=[]"),
    ("model=dbn model.k=0", "model.k=0"),
    ("optimizer=cg optimizer.momentum=0.9", "optimizer.momentum=0.9"),
    ("optimizer.decay=-1", "optimizer.decay=-1.0"),
    ("optimizer.plateau_patience=0", "optimizer.plateau_patience=0"),
    ("optimizer.min_lr_factor=2", "optimizer.min_lr_factor=2.0"),
    ("regularization.l1=-1", "regularization.l1=-1.0"),
    ("early_stopping.patience_increase=0.5", "early_stopping.patience_increase=0.5"),
    ("early_stopping.validation_frequency=0", "early_stopping.validation_frequency=0"),
    ("early_stopping.epochs=0", "early_stopping.epochs=0"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size=0"),
    ("trainer.progress=fancy", "trainer.progress='fancy'"),
    ("trainer.threads=0", "trainer.threads=0"),
    ("trainer.precision=fp8", "trainer.precision='fp8'"),
    ("trainer.device=cuda:x", "trainer.device='cuda:x'"),
    ("dataset.device_chunk=0", "dataset.device_chunk=0"),
    ("dataset.max_test=-5", "dataset.max_test=-5"),
    ("tracking.experiment=''", "tracking.experiment=''"),
]


@pytest.mark.parametrize("overrides,needle", BAD)
def test_bad_config_value_named_in_one_line(compose_cfg, overrides, needle):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(overrides.split()))
    assert "\n" not in str(e.value) and needle in str(e.value) and "allowed" in str(e.value)


@pytest.mark.parametrize("args,needle", [
    (["trainer.device=cuda"], "trainer.device='cuda' is not available"),
    (["dataset=mnist", "dataset.download=false", "dataset.path=/nonexistent/mnist"], "/nonexistent/mnist"),
    (["model=sda", "model.pretrained_from=/nonexistent/run.pkl"], "/nonexistent/run.pkl"),
])
def test_unavailable_resources_fail_before_any_run(tmp_path, args, needle):
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "dataset=digits", *args, "hydra.run.dir=run"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("dlexp: error:")]
    assert r.returncode == 2 and len(errors) == 1 and needle in errors[0], r.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()
