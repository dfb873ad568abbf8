"""What the MLflow UI draws of dlexp's runs, read through MLflow's own client (issue 23).

The UI draws a metric as a line chart when a run's latest point of it has a step >= 1, else as a bar
(one number a run): curves must share one x axis (the epoch, whatever the batch size), summary values
sit at step 0. Names say what varied; params are only the keys a model reads; an override a model
ignores is refused before any run exists.
"""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as NS

from mlflow.tracking import MlflowClient

import sweep_procs
from dlexp import metric_names as names
from dlexp.tracking.contract import short_value
from dlexp.sweep.table import rank

PREFIXES = ("train/", "valid/", "test/", "perf/", "pretrain/", "best/", "final/")
SUMMARY = {"best/valid_error", "best/test_error", "best/iteration", "final/epochs", "final/iterations",
           "final/train_seconds"}


def _runs(store, experiment="dlexp"):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _steps(client, run, key):
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def _assert_params_are_meaningful(run):
    params = run.data.params
    assert params and "None" not in params.values(), params
    assert not [k for k in params if k.startswith("tracking.") or k in ("dataset.cache_dir", "dataset.path")]


def test_batch_20_and_batch_600_curves_share_the_epoch_axis(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for batch in (20, 600):
        sweep_procs.run(tmp_path, store, "model=logreg", f"optimizer.batch_size={batch}", "trainer.max_epochs=3",
                        multirun=False)
    client = MlflowClient(store)
    small, large = _runs(store)
    assert (small.info.run_name, large.info.run_name) == ("logreg/digits batch_size=20 max_epochs=3",
                                                          "logreg/digits batch_size=600 max_epochs=3")
    for run in (small, large):
        for key in ("valid/error", "valid/best_error", "test/error", "train/nll", "train/lr", "perf/epoch_seconds",
                    "perf/examples_per_s"):
            assert _steps(client, run, key) == [1, 2, 3], (run.info.run_name, key)
        for key in SUMMARY:  # one number each, at step 0: a bar, not a curve
            assert _steps(client, run, key) == [0], key
        assert all(k.startswith(PREFIXES) for k in run.data.metrics), sorted(run.data.metrics)
        assert run.data.tags["dlexp.step"] == "epoch"
        _assert_params_are_meaningful(run)
    # fractions in MLflow, the same numbers the console prints as percentages
    assert 0 < small.data.metrics["best/valid_error"] < 1


def test_step_unit_examples_and_a_bad_unit(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_procs.run(tmp_path, store, "model=logreg", "optimizer.batch_size=600", "trainer.max_epochs=2",
                    "tracking.step=examples", multirun=False)
    run, = _runs(store)
    # digits: 1,297 training rows, 2 minibatches of 600 an epoch
    assert _steps(MlflowClient(store), run, "valid/error") == [1200, 2400]
    r = sweep_procs.run(tmp_path, store, "tracking.step=batches", multirun=False, check=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "dlexp: error: tracking.step='batches' is not allowed: one of epoch, examples, iteration"], r.stderr


def test_sweep_children_are_named_by_their_swept_keys(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_procs.run(tmp_path, store, "model=logreg", "trainer.max_epochs=2", "optimizer.lr=0.1,0.00012345678",
                    "regularization=l2", "regularization.l2=0,1e-4")
    parent, = sweep_procs.parents(store)
    children = sweep_procs.children(store, parent)
    assert parent.info.run_name == "logreg/digits lr x l2 (4)"
    assert sorted(c.info.run_name for c in children) == sorted(
        ["lr=0.1 l2=0", "lr=0.1 l2=1e-4", "lr=1.235e-4 l2=0", "lr=1.235e-4 l2=1e-4"])
    tags = parent.data.tags  # the UI's "Created by" and source columns
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    client = MlflowClient(store)
    # the parent's copy of the best child: summary numbers only, no point of a curve (an extra series)
    assert SUMMARY <= set(parent.data.metrics)
    assert not [k for k in parent.data.metrics if k.startswith(("train/", "valid/", "test/", "perf/"))]
    assert all(_steps(client, parent, k) == [0] for k in parent.data.metrics)
    for c in children:
        _assert_params_are_meaningful(c)
        assert _steps(client, c, "valid/error") == [1, 2]


def test_overrides_a_model_ignores_are_refused_before_any_run(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cases = [
        (["model=da", "optimizer.lr=0.1"], False,
         "dlexp: error: optimizer.lr is ignored by model=da (it trains only by pretraining): use model.pretrain_lr"),
        (["model=rbm", "trainer.max_epochs=10"], False,
         "dlexp: error: trainer.max_epochs is ignored by model=rbm (it trains only by pretraining): "
         "use model.pretrain_epochs"),
        (["model=da", "optimizer.lr=0.1,0.01"], True,
         "dlexp: error: optimizer.lr=0.1 (job 0 of 2): optimizer.lr is ignored by model=da (it trains only by "
         "pretraining): use model.pretrain_lr"),
    ]
    for overrides, multirun, line in cases:
        r = sweep_procs.run(tmp_path, store, *overrides, multirun=multirun, check=False)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [line], r.stderr
    assert _runs(store) == []  # no run, no sweep parent
    # a da run logs no key it ignores
    sweep_procs.run(tmp_path, store, "model=da", "model.n_hidden=16", "model.pretrain_epochs=1",
                    "dataset.max_train=200", multirun=False)
    run, = _runs(store)
    _assert_params_are_meaningful(run)
    assert not [k for k in run.data.params if k.startswith(("optimizer.", "early_stopping.", "regularization."))]
    assert "trainer.max_epochs" not in run.data.params and run.data.params["model.pretrain_epochs"] == "1"
    assert run.info.run_name == "da/digits n_hidden=16 pretrain_epochs=1 max_train=200"
    assert _steps(MlflowClient(store), run, "final/cost") == [0] and _steps(MlflowClient(store), run,
                                                                            "pretrain/cost") == [1]


def test_sda_on_digits_fine_tunes_with_its_own_defaults(tmp_path):
    """model=sda used to fine-tune with logreg's optimizer (lr 0.13, batch 600) and end at 77.6 % validation
    error on digits; its config now carries its own (lr 0.1, batch 20, patience 10000)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "--cfg", "job", "model=sda"], cwd=tmp_path,
                       env=sweep_procs.env(), capture_output=True, text=True, timeout=300)
    assert "lr: 0.1\n  batch_size: 20\n" in r.stdout and "patience: 10000\n" in r.stdout
    sweep_procs.run(tmp_path, store, "model=sda", "model.pretrain_epochs=2", "trainer.max_epochs=12",
                    "tracking.log_model=false", multirun=False)
    run, = _runs(store)
    assert run.data.metrics["best/valid_error"] < 0.2


def test_short_values_and_old_metric_names():
    assert [short_value(v) for v in ("0.01", "0.0001", "0.00037545539669128784", "30", "1e-05", "true")] == \
        ["0.01", "1e-4", "3.755e-4", "30", "1e-5", "true"]
    # runs logged before the current names (valid_error, best_valid_error, ...) still rank and read
    old = [NS(info=NS(run_id=i, run_name=i, status="FINISHED", start_time=0, end_time=1000),
              data=NS(metrics={"best_valid_error": v, "final_test_error": v / 2, "epochs": 3.0}, params={},
                      tags={"dlexp.objective": "best_valid_error:min"}))
           for i, v in (("a", 0.2), ("b", 0.1))]
    rows, metric = rank(old)
    assert metric == names.BEST_VALID and [r["run_id"] for r in rows] == ["b", "a"]
    assert rows[0]["test_error"] == 0.05 and rows[0]["epochs"] == 3.0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.fidelity.readback import stop_reason

    assert stop_reason(NS(data=NS(params={"trainer.max_epochs": "5", "early_stopping.name": "patience"},
                                  metrics={"epochs": 3.0}))) == "patience exhausted"
