"""Sweeps through the CLI: one MLflow parent run per multirun, its jobs nested under it, a ranked table.

Every sweep runs ``python -m dlexp.cli -m ...`` in a subprocess (on the working tree: PYTHONPATH is the
repository) in a temporary directory, against its own MLflow store.
"""
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

from dlexp import sweep
from dlexp.tracking import tracker as tracking
from dlexp.cli import CONFIG_PATH
from dlexp.config import validate
from dlexp.models import CONFIGS as MODELS

REPO = Path(__file__).resolve().parents[1]
BASE = ("dataset=digits", "trainer.progress=log", "trainer.threads=1")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def dlexp_multirun(cwd: Path, store: str, *overrides, env=None, timeout=300):
    """Run a sweep through the CLI; returns the finished process (stdout + stderr kept)."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    args = [sys.executable, "-m", "dlexp.cli", "-m", *BASE, *overrides, f"tracking.uri={store}"]
    r = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args)}\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


def sweep_runs(store: str, experiment: str = "dlexp"):
    """(parent, children) of the only sweep in the store's experiment."""
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if sweep.SWEEP_TAG in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1  # nothing outside the sweep
    return parents[0], children


def read_csv(text: str):
    return list(csv.DictReader(io.StringIO(text)))


def artifact_text(store: str, run_id: str, path: str, dest: Path) -> str:
    return Path(MlflowClient(store).download_artifacts(run_id, path, str(dest))).read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An MLflow server (``mlflow server`` / ``mlflow ui``) on 127.0.0.1, in its own process group.

    It starts at once and is waited for (``url()``) only when a test needs it, so its start-up overlaps
    with the serial sweeps before it (they leave one of the two cores idle); ``stop()`` always ends it.
    """

    def __init__(self, args, log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "w")
        # without the GenAI job runner (a consumer pool of 8 more processes) the server starts in a third
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen([*args, "--host", "127.0.0.1", "--port", str(self.port)], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def url(self, timeout=120) -> str:
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"no answer on {url} within {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A remote tracking server with a sqlite backend and proxied artifacts."""
    d = tmp_path_factory.mktemp("server")
    server = Server(["mlflow", "server", "--backend-store-uri", f"sqlite:///{d / 'server.db'}",
                     "--artifacts-destination", str(d / "artifacts"), "--workers", "1"], d / "server.log")
    yield server
    server.stop()


# --------------------------------------------------------------- a 2 x 2 grid
@pytest.fixture(scope="module")
def grid(tmp_path_factory, tracking_server):
    """A 2 x 2 grid over lr and L2 lambda, run once for the tests below (the tracking server and then
    `mlflow ui` on this store start meanwhile, for the tests at the end)."""
    cwd = tmp_path_factory.mktemp("grid")
    store = f"sqlite:///{cwd / 'store' / 'mlflow.db'}"
    r = dlexp_multirun(cwd, store, "model=mlp", "model.hidden_sizes=[16]", "optimizer.batch_size=100",
                       "trainer.max_epochs=5", "optimizer.lr=0.1,0.01", "regularization.l2=0,0.01")
    parent, children = sweep_runs(store)
    ui = Server(["mlflow", "ui", "--backend-store-uri", store], cwd / "ui.log")
    yield {"cwd": cwd, "store": store, "out": r.stdout, "parent": parent, "children": children, "ui": ui}
    ui.stop()


def test_grid_is_one_parent_with_four_children(grid):
    parent, children = grid["parent"], grid["children"]
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert all(c.info.status == "FINISHED" for c in children)
    # the parent holds the sweep's config and id
    p = parent.data.params
    assert p["sweep.keys"] == "optimizer.lr,regularization.l2"
    assert p["sweep.params"] == "optimizer.lr=0.1,0.01 regularization.l2=0,0.01"
    assert p["sweep.sweeper"] == "BasicSweeper" and p["sweep.launcher"] == "BasicLauncher"
    sweep_dir = Path(parent.data.tags["dlexp.sweep_dir"])
    assert (sweep_dir / sweep.PARENT_FILE).read_text().strip() == parent.info.run_id
    assert parent.data.tags[sweep.SWEEP_TAG].startswith("outputs/multirun/")
    # one child per grid point, params flattened with dotted keys, named by its swept values
    points = {(c.data.params["optimizer.lr"], c.data.params["regularization.l2"]) for c in children}
    assert points == {("0.1", "0.0"), ("0.1", "0.01"), ("0.01", "0.0"), ("0.01", "0.01")}
    for c in children:
        assert c.data.params["model.name"] == "mlp" and c.data.params["model.hidden_sizes"] == "[16]"
        assert c.data.params["dataset.name"] == "digits" and "trainer.max_epochs" in c.data.params
        lr = c.data.params["optimizer.lr"]
        assert c.info.run_name.startswith(f"lr={lr} l2=")  # its swept keys only, short
        assert c.info.experiment_id == parent.info.experiment_id


def test_grid_table_ranks_children_by_their_metrics(grid, tmp_path):
    parent, children, store = grid["parent"], grid["children"], grid["store"]
    by_id = {c.info.run_id: c for c in children}
    rows = read_csv(artifact_text(store, parent.info.run_id, sweep.TABLE_CSV, tmp_path / "csv"))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4] and set(r["run_id"] for r in rows) == set(by_id)
    errors = [by_id[r["run_id"]].data.metrics["best/valid_error"] for r in rows]
    assert errors == sorted(errors)
    assert sorted(errors) == sorted(c.data.metrics["best/valid_error"] for c in children)
    for r in rows:
        child = by_id[r["run_id"]]
        assert float(r["best/valid_error"]) == pytest.approx(child.data.metrics["best/valid_error"])
        assert float(r["test_error"]) == pytest.approx(child.data.metrics["best/test_error"])
        assert int(float(r["epochs"])) == int(child.data.metrics["final/epochs"])
        assert float(r["seconds"]) >= 0 and r["status"] == "FINISHED"
        lr, l2 = r["overrides"].split()  # the swept values, as given on the command line
        assert lr == f"optimizer.lr={child.data.params['optimizer.lr']}"
        assert float(l2.split("=")[1]) == float(child.data.params["regularization.l2"])
    # the best child's metrics are the parent's
    best = by_id[rows[0]["run_id"]]
    assert parent.data.metrics["best/valid_error"] == pytest.approx(min(errors))
    assert parent.data.metrics["best/test_error"] == pytest.approx(best.data.metrics["best/test_error"])
    assert parent.data.tags["dlexp.best_run_id"] == best.info.run_id and parent.data.metrics["sweep.runs"] == 4
    md = artifact_text(store, parent.info.run_id, sweep.TABLE_MD, tmp_path / "md")
    assert md.startswith("| rank | overrides | best valid error | test error | epochs | seconds |")
    assert len(md.strip().splitlines()) == 2 + 4
    # the table printed to the terminal, in the same order
    out = grid["out"]
    assert "4 runs ranked by best/valid_error" in out and "best valid error" in out
    printed = [line for line in out.splitlines() if line.strip()[:1].isdigit() and "optimizer.lr=" in line]
    assert [line.split()[1] for line in printed] == [r["overrides"].split()[0] for r in rows]
    assert [line.split()[-1] for line in printed] == [r["run_id"][:12] for r in rows]


def test_table_later_from_the_cli(grid, tmp_path, capsys, monkeypatch):
    parent, store = grid["parent"], grid["store"]
    artifact = artifact_text(store, parent.info.run_id, sweep.TABLE_CSV, tmp_path / "csv")
    out_file = tmp_path / "table.csv"
    # by parent run id, by sweep id (the tag), by sweep directory
    assert sweep.main(["table", parent.info.run_id, "--tracking-uri", store, "--format", "csv",
                       "--output", str(out_file)]) == 0
    assert out_file.read_text() == artifact
    monkeypatch.chdir(grid["cwd"])
    for ref in (parent.data.tags[sweep.SWEEP_TAG], parent.data.tags["dlexp.sweep_dir"]):
        capsys.readouterr()
        assert sweep.main(["table", ref, "--tracking-uri", store]) == 0
        out = capsys.readouterr().out
        assert parent.info.run_id in out and "4 runs ranked by best/valid_error" in out
        assert out.index(read_csv(artifact)[0]["run_id"][:12]) < out.index(read_csv(artifact)[3]["run_id"][:12])
    assert sweep.main(["list", "--tracking-uri", store]) == 0
    assert parent.info.run_id in capsys.readouterr().out
    assert sweep.main(["table", "no-such-sweep", "--tracking-uri", store]) == 2
    assert "no sweep 'no-such-sweep'" in capsys.readouterr().err


# ------------------------------------------------------- 8 jobs, one sqlite file
def test_eight_parallel_jobs_lose_no_run_and_no_metric(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # created by the sweep's parent, before the jobs start
    # every metric written at once (no buffering): the most concurrent writes the store can get
    r = dlexp_multirun(tmp_path, store, "hydra/launcher=joblib", "hydra.launcher.n_jobs=8", "model=logreg",
                       "trainer.max_epochs=5", "optimizer.lr=0.2,0.1,0.05,0.02", "regularization.l2=0,0.001",
                       env={"DLEXP_TRACKING_FLUSH_SECONDS": "0"})
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.launcher"] == "JoblibLauncher"
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["dlexp.output_dir"] for c in children}) == 8
    # they did run at the same time
    assert max(c.info.start_time for c in children) < min(c.info.end_time for c in children) or \
        sum(a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time
            for a in children for b in children if a is not b) > 0
    client = MlflowClient(store)
    for c in children:
        m = c.data.metrics
        assert m["final/epochs"] == 5 and {"best/valid_error", "best/test_error", "final/train_seconds"} <= set(m)
        # one validation an epoch here (2 minibatches of 600): MLflow holds every one, at its epoch
        for key in ("valid/error", "test/error", "train/nll"):
            history = client.get_metric_history(c.info.run_id, key)
            assert sorted(h.step for h in history) == [1, 2, 3, 4, 5], key
        assert len(client.get_metric_history(c.info.run_id, "perf/epoch_seconds")) == 5
        # and the values the job printed (its log shows some validations) are the ones stored
        valid = {h.step: h.value for h in client.get_metric_history(c.info.run_id, "valid/error")}
        log_file = Path(c.data.tags["dlexp.output_dir"]) / "dlexp.log"  # Hydra names the log after hydra.job.name
        logged = [line for line in log_file.read_text().splitlines() if ": valid error " in line]
        assert logged
        for line in logged:
            step = int(line.split("epoch ")[1].split(",")[0])
            assert f"valid error {100 * valid[step]:.2f} %" in line
    assert "8 runs ranked by best/valid_error" in r.stdout


# -------------------------------------------------------------------- Optuna
def test_optuna_preset_runs_three_trials_and_the_parent_records_the_best(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = dlexp_multirun(tmp_path, store, "hparams_search=optuna", "model=mlp", "model.hidden_sizes=[16]",
                       "optimizer.batch_size=100", "trainer.max_epochs=4", "hydra.sweeper.n_trials=3")
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.sweeper"] == "OptunaSweeper"
    assert parent.data.params["sweep.keys"] == "optimizer.lr,regularization.l2"
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    for c in children:  # sampled log-uniformly in the tutorials' ranges
        assert 1e-4 <= float(c.data.params["optimizer.lr"]) <= 1e-1
        assert 1e-5 <= float(c.data.params["regularization.l2"]) <= 1e-2
    best = min(children, key=lambda c: c.data.metrics["best/valid_error"])
    assert parent.data.metrics["best/valid_error"] == pytest.approx(best.data.metrics["best/valid_error"])
    assert parent.data.tags["dlexp.best_run_id"] in {c.info.run_id for c in children
                                                      if c.data.metrics["best/valid_error"] ==
                                                      best.data.metrics["best/valid_error"]}
    # Optuna's own record of the study agrees
    results = artifact_text(store, parent.info.run_id, "optimization_results.yaml", tmp_path / "opt")
    assert f"best_value: {best.data.metrics['best/valid_error']}" in results
    assert "3 runs ranked by best/valid_error" in r.stdout
    # the study's pictures: Optuna's optimisation history and parameter importances, with their data
    images = {f.path for f in MlflowClient(store).list_artifacts(parent.info.run_id, "images")}
    assert {f"images/optuna_{n}.{e}" for n in ("history", "importance") for e in ("png", "csv")} <= images
    history = read_csv(artifact_text(store, parent.info.run_id, "images/optuna_history.csv", tmp_path / "h"))
    assert [row["state"] for row in history] == ["COMPLETE"] * 3
    importance = read_csv(artifact_text(store, parent.info.run_id, "images/optuna_importance.csv", tmp_path / "i"))
    assert {row["param"] for row in importance} == {"optimizer.lr", "regularization.l2"}


def _one_error(r, *needles):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("dlexp: error: "), r.stderr[-3000:]
    assert all(n in lines[0] for n in needles), lines[0]


def test_optuna_storage_this_optuna_cannot_open_is_refused_before_any_run(tmp_path):
    """Optuna 2 (pinned by the sweeper) cannot open a database under SQLAlchemy 2: one line, no parent run."""
    import optuna

    if int(optuna.__version__.split(".")[0]) >= 3:
        pytest.skip("Optuna 3 opens a database storage")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [sys.executable, "-m", "dlexp.cli", "-m", *BASE, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}", f"tracking.uri={store}"]
    r = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    _one_error(r, "hydra.sweeper.storage=", "leave it null")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()


def test_optuna_without_its_sweeper_installed_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['hydra_plugins.hydra_optuna_sweeper'] = None; "
            "sys.argv = ['dlexp', '-m', 'hparams_search=optuna']; from dlexp.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    _one_error(r, "hparams_search=optuna", "pip install 'dlexp[optuna]'")
    assert not (tmp_path / "outputs").exists()


def test_pruned_run_ends_finished_tagged_pruned_and_the_sweep_goes_on(tmp_path):
    # the second run (lr 1e-4) falls behind the first at its first validation: the pruner stops it
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = dlexp_multirun(tmp_path, store, "model=logreg", "trainer.max_epochs=10", "optimizer.lr=0.13,0.0001",
                       "++hydra.callbacks.mlflow_sweep.pruner={_target_:optuna.pruners.MedianPruner,"
                       "n_startup_trials:1}")
    parent, children = sweep_runs(store)
    by_lr = {c.data.params["optimizer.lr"]: c for c in children}
    assert by_lr["0.13"].info.status == "FINISHED" and by_lr["0.13"].data.metrics["final/epochs"] == 10
    pruned = by_lr["0.0001"]
    # an outcome of the sweep, not a crash: FINISHED (no red mark in the UI), tagged, PRUNED in the table
    assert pruned.info.status == "FINISHED" and pruned.data.tags["dlexp.pruned"].startswith("at step ")
    assert "final/epochs" not in pruned.data.metrics
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep.pruned"] == 1
    assert parent.data.tags["dlexp.best_run_id"] == by_lr["0.13"].info.run_id
    rows = read_csv(artifact_text(store, parent.info.run_id, sweep.TABLE_CSV, tmp_path / "csv"))
    assert [row["status"] for row in rows] == ["FINISHED", "PRUNED"]
    assert "PRUNED" in r.stdout


# ----------------------------------------------------------- SLURM (submitit)
def _compose_hydra(overrides):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_slurm_preset_through_submitit_local_executor(tmp_path):
    slurm = _compose_hydra(["hydra/launcher=slurm"]).hydra.launcher
    local = _compose_hydra(["hydra/launcher=slurm_local"]).hydra.launcher
    assert slurm._target_.endswith("submitit_launcher.SlurmLauncher")
    assert local._target_.endswith("submitit_launcher.LocalLauncher")
    for key in ("timeout_min", "nodes", "tasks_per_node", "cpus_per_task", "mem_gb"):
        assert slurm[key] == local[key]
    assert _compose_hydra(["hydra/launcher=slurm_gpu"]).hydra.launcher.gpus_per_node == 1
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dlexp_multirun(tmp_path, store, "hydra/launcher=slurm_local", "model=logreg", "trainer.max_epochs=3",
                   "optimizer.lr=0.1,0.01")
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.launcher"] == "LocalLauncher"
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    submitit = Path(parent.data.tags["dlexp.sweep_dir"]) / ".submitit"
    assert len(list(submitit.glob("*/*_result.pkl"))) == 2  # each run was a submitit job


# ------------------------------------------------------------ presets, config
@pytest.mark.parametrize("model", sorted(MODELS))
def test_grid_presets_compose_for_every_model(model):
    cfg = _compose_hydra(["experiment=grid_lr_lambda", f"model={model}"])
    params = cfg.hydra.sweeper.params
    assert [float(v) for v in params["optimizer.lr"].split(",")] == [1e-1, 1e-2, 1e-3, 1e-4]
    assert [float(v) for v in params["regularization.l2"].split(",")] == [1e-2, 1e-3, 1e-4, 1e-5]
    assert cfg.model.name == model
    # the extreme grid points validate for this model
    for lr, l2 in (("0.1", "0.01"), ("0.0001", "0.00001")):
        validate(_compose_hydra(["experiment=grid_lr_lambda", f"model={model}", f"optimizer.lr={lr}",
                                 f"regularization.l2={l2}"]))
    l1 = _compose_hydra(["experiment=grid_lr_l1", f"model={model}"]).hydra.sweeper.params
    assert [float(v) for v in l1["regularization.l1"].split(",")] == [1e-2, 1e-3, 1e-4, 1e-5]
    optuna = _compose_hydra(["hparams_search=optuna", f"model={model}"]).hydra
    assert optuna.sweeper._target_.endswith("OptunaSweeper") and optuna.sweeper.direction == "minimize"
    assert optuna.sweeper.params["optimizer.lr"] == "tag(log, interval(1e-4, 1e-1))"
    assert optuna.callbacks.mlflow_sweep.pruner._target_ == "optuna.pruners.MedianPruner"
    if hasattr(MODELS[model], "pretrain_lr"):
        pre = _compose_hydra(["experiment=grid_pretrain_lr", f"model={model}", "model.pretrain_lr=0.0001"])
        assert [float(v) for v in pre.hydra.sweeper.params["model.pretrain_lr"].split(",")] == [1e-1, 1e-2, 1e-3, 1e-4]
        validate(pre)
        assert _compose_hydra(["hparams_search=optuna_pretrain", f"model={model}"]).hydra.sweeper.params[
            "model.pretrain_lr"] == "tag(log, interval(1e-4, 1e-1))"


def test_sweep_without_tracking(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "-m", *BASE, "tracking=none", "model=logreg",
                        "trainer.max_epochs=2", "optimizer.lr=0.1,0.01"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "outputs" / "mlflow.db").exists() and not list(tmp_path.rglob(sweep.PARENT_FILE))
    assert len(list((tmp_path / "outputs" / "multirun").glob("*/*/1/config.yaml"))) == 1


def test_store_lock_is_retried(monkeypatch):
    from mlflow.exceptions import MlflowException

    calls = []

    def flaky(x):
        calls.append(x)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return x * 2

    assert tracking.retry_locked(flaky, 21) == 42 and len(calls) == 3
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|no such run"):
        tracking.retry_locked(lambda: (_ for _ in ()).throw(MlflowException("no such run")))
    with pytest.raises(MlflowException, match="locked"):  # not forever
        tracking.retry_locked(lambda: (_ for _ in ()).throw(MlflowException("database is locked")), _deadline_s=0.2)


def _fake_run(run_id, metrics, params=(), tags=(), status="FINISHED", start=0):
    from types import SimpleNamespace as NS

    return NS(info=NS(run_id=run_id, run_name=run_id, status=status, start_time=start, end_time=start + 1000),
              data=NS(metrics=dict(metrics), params=dict(params), tags=dict(tags)))


def test_ranking_rules():
    # supervised: lowest best/valid_error first; a failed run (no metric) and a pruned one last
    runs = [_fake_run("a", {"best/valid_error": 0.2}), _fake_run("b", {"best/valid_error": 0.1}, start=5),
            _fake_run("c", {}, status="FAILED"), _fake_run("d", {"best/valid_error": 0.05},
                                                            tags={"dlexp.pruned": "at step 2"})]
    rows, metric = sweep.rank(runs)
    assert metric == "best/valid_error" and [r["run_id"] for r in rows] == ["b", "a", "d", "c"]
    assert [r["status"] for r in rows] == ["FINISHED", "FINISHED", "PRUNED", "FAILED"]
    # pretraining only: the final cost, lowest first, epochs from the config
    da = [_fake_run(k, {"final/cost": v}, {"model.name": "da", "model.pretrain_epochs": "15"})
          for k, v in (("x", 30.0), ("y", 20.0))]
    rows, metric = sweep.rank(da)
    assert metric == "final/cost" and [r["run_id"] for r in rows] == ["y", "x"] and rows[0]["epochs"] == 15
    # a run whose objective is a likelihood (an RBM trained with PCD) says so in its tag: highest first
    rbm = [_fake_run(k, {"final/cost": v}, tags={"dlexp.objective": "final/cost:max"})
           for k, v in (("p", -80.0), ("q", -60.0))]
    assert [r["run_id"] for r in sweep.rank(rbm)[0]] == ["q", "p"]
    text = sweep.table_text(*sweep.rank(runs))
    assert text.splitlines()[0].split()[:3] == ["rank", "overrides", "best"] and "10.00 %" in text


# ------------------------------------------------------- a real tracking server
def _rest(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
    return raw if path.startswith("/get-artifact") else json.loads(raw)


def test_sweep_against_a_tracking_server_over_http(tmp_path, tracking_server):
    url = tracking_server.url()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    dlexp_multirun(cwd, url, "model=logreg", "trainer.max_epochs=4", "optimizer.lr=0.1,0.01",
                   "tracking.experiment=remote")
    assert not (cwd / "outputs" / "mlflow.db").exists()  # everything went to the server
    exp = _rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=remote")["experiment"]
    runs = _rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                     "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags) if sweep.SWEEP_TAG in t]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    parent_id = parents[0]["info"]["run_id"]
    children = _rest(url, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp["experiment_id"]], "filter": f"tags.mlflow.parentRunId = '{parent_id}'"})["runs"]
    assert len(children) == 2 == len(runs) - 1
    for child in children:
        run_id = child["info"]["run_id"]
        assert child["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        assert metrics["final/epochs"] == 4
        for key in metrics:  # every metric's history reads back
            q = urllib.parse.urlencode({"run_id": run_id, "metric_key": key})
            history = _rest(url, f"/api/2.0/mlflow/metrics/get-history?{q}")["metrics"]
            assert history and history[-1]["value"] == pytest.approx(metrics[key]) or \
                any(h["value"] == pytest.approx(metrics[key]) for h in history)
            if key in ("valid/error", "perf/epoch_seconds"):
                assert len(history) == 4
        listing = _rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=images")["files"]
        assert [f["path"] for f in listing] == ["images/filters.png"]
        png = _rest(url, "/get-artifact?" + urllib.parse.urlencode({"path": "images/filters.png", "run_uuid": run_id}))
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 100
    table = _rest(url, "/get-artifact?" + urllib.parse.urlencode({"path": sweep.TABLE_CSV, "run_uuid": parent_id}))
    rows = read_csv(table.decode())
    assert [r["run_id"] for r in rows] == [c["info"]["run_id"] for c in sorted(
        children, key=lambda c: {m["key"]: m["value"] for m in c["data"]["metrics"]}["best/valid_error"])]


# ---------------------------------------------------------- what the UI shows
def _chromium(tmp_path, *args, timeout=120, size="1800,1200"):
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={size}",
                           "--virtual-time-budget=20000", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")
def test_mlflow_ui_shows_the_sweep(grid, tmp_path):
    from PIL import Image

    parent, children, store = grid["parent"], grid["children"], grid["store"]
    url = grid["ui"].url()  # `mlflow ui --backend-store-uri <the grid's sqlite store>`
    exp = parent.info.experiment_id
    ids = [c.info.run_id for c in children]
    compare = f"{url}/#/compare-runs?" + urllib.parse.urlencode({"runs": json.dumps(ids),
                                                                  "experiments": json.dumps([exp])})
    shot = tmp_path / "mlflow_ui_compare.png"
    dom = _chromium(tmp_path, f"--screenshot={shot}", "--dump-dom", compare).stdout
    assert "Comparing 4 Runs" in dom, dom[-2000:]
    for c in children:
        assert c.info.run_id in dom
    for key in ("optimizer.lr", "regularization.l2", "best/valid_error"):
        assert key in dom
    # the experiment's runs page: the training-runs view, the sweep's parent, 1 + 4 runs
    runs_page = re.sub(r"<[^>]+>", "", _chromium(tmp_path, "--dump-dom", f"{url}/#/experiments/{exp}/runs").stdout)
    assert "Training runs" in runs_page and parent.info.run_name in runs_page, runs_page[-3000:]
    assert "5 matching runs" in runs_page
    img = Image.open(shot)
    assert img.size == (1800, 1200) and len(img.convert("L").getcolors(1 << 16)) > 16  # not a blank page
    MlflowClient(store).log_artifact(parent.info.run_id, str(shot), "ui")
    print(f"screenshot: {shot}")


def _sync_playwright():
    """Playwright's sync API, or None where it is not installed (the test extra installs it; no browser is
    downloaded: it drives the system's chromium)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    return sync_playwright


@pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")
def test_mlflow_ui_in_a_browser_lists_the_children_and_draws_a_child_s_charts(grid, tmp_path):
    """A real `mlflow ui` in headless Chromium driven by Playwright: the runs list shows the sweep's children
    by name once the parent is expanded, and a child's model-metrics page draws its charts (plotly). Without
    Playwright, chromium --dump-dom: the compare view names the children and draws its plot."""
    parent, children = grid["parent"], grid["children"]
    url, exp = grid["ui"].url(), parent.info.experiment_id
    runs_page = f"{url}/#/experiments/{exp}/runs"
    charts_page = f"{url}/#/experiments/{exp}/runs/{children[0].info.run_id}/model-metrics"
    sync_playwright = _sync_playwright()
    if sync_playwright is None:  # chromium --dump-dom: the compare view (a run page's charts are drawn lazily)
        import html

        compare = f"{url}/#/compare-runs?" + urllib.parse.urlencode({
            "runs": json.dumps([c.info.run_id for c in children]), "experiments": json.dumps([exp])})
        dom = _chromium(tmp_path, "--dump-dom", compare).stdout
        text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
        assert all(c.info.run_name in text for c in children) and "js-plotly-plot" in dom, text[-2000:]
        return
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(runs_page)
            page.get_by_text(parent.info.run_name, exact=True).first.wait_for(timeout=90000)
            page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()  # the parent's +
            for child in children:
                page.get_by_text(child.info.run_name, exact=True).first.wait_for(timeout=30000)
            page.goto(charts_page)
            chart = page.locator(".js-plotly-plot").first
            chart.wait_for(timeout=90000)
            box = chart.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100, box
            page.screenshot(path=str(tmp_path / "charts.png"))
        finally:
            browser.close()
