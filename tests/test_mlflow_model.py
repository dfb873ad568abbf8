"""Models that leave dlexp: the MLflow model of a run, the registry, serving, lineage and provenance.

Every case runs real processes on a real MLflow store made by a short real training: ``dlexp`` itself,
``dlexp-predict``, ``mlflow models serve`` on 127.0.0.1, and the model loaded by MLflow in a process
where dlexp's own dependencies (Hydra, scikit-learn, ...) cannot be imported. What is checked is what
a user reads back with ``MlflowClient`` or gets from the commands.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.models import convert_input_example_to_serving_input
from mlflow.models.utils import _validate_serving_input  # what MLflow runs when it logs a model
from mlflow.tracking import MlflowClient

from dlexp.tracking import mlmodel, registry as model_registry
from dlexp.config import DatasetConfig
from dlexp.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
NAME = "digits-mlp"


def run_dlexp(cwd, store, *overrides, env=None, python=sys.executable):
    r = subprocess.run([python, "-m", "dlexp.cli", "dataset=digits", f"tracking.uri={store}", "trainer.progress=none",
                        *overrides], cwd=cwd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def run_predict(store, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dlexp.predict", *map(str, args), "--tracking-uri", store],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def one_error(r, *needles) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("dlexp-predict: error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def latest_run(store, experiment="dlexp"):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An MLP trained 3 epochs on digits, registered as NAME, with a tag and a description."""
    cwd = tmp_path_factory.mktemp("mlmodel")
    store = f"sqlite:///{cwd / 'mlflow.db'}"
    r = run_dlexp(cwd, store, "model=mlp", "model.hidden_sizes=[32]", "trainer.max_epochs=3",
                  f"tracking.register_as={NAME}", "++tracking.tags={team:vision}", "tracking.description=a digits MLP")
    (cwd / "dlexp.out").write_text(r.stdout + r.stderr)  # what the user read: the serve command among it
    return cwd, store, latest_run(store)


@pytest.fixture(scope="module")
def rows(trained):
    """The test split of digits as the dataset gives it, and as a .npy file."""
    x = load_dataset(DatasetConfig(name="digits")).test.x
    np.save(trained[0] / "rows.npy", x)
    return x, trained[0] / "rows.npy"


def predicted_labels(store, source, inputs, out):
    r = run_predict(store, source, "--inputs", inputs, "--output", out)
    assert r.returncode == 0, r.stderr
    return np.load(out)


@pytest.fixture(scope="module")
def by_run(trained, rows):
    """The labels ``dlexp-predict <run id> --inputs`` gives the test rows (the run's checkpoint)."""
    return predicted_labels(trained[1], trained[2].info.run_id, rows[1], trained[0] / "by_run.npy")


def test_logged_model_loads_with_pyfunc_and_predicts_as_dlexp_predict(trained, rows, by_run):
    cwd, store, run = trained
    assert len(run.outputs.model_outputs) == 1
    model = mlmodel.load(f"runs:/{run.info.run_id}/model", tracking_uri=store)  # mlflow.pyfunc.load_model
    sig = model.metadata.signature
    assert sig.inputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 64)}}]
    assert [o["name"] for o in sig.outputs.to_dict()] == ["label", "probabilities"]
    assert model.metadata.saved_input_example_info["type"] == "ndarray"
    answer = model.predict(rows[0])
    assert answer["probabilities"].shape == (len(rows[0]), 10)
    np.testing.assert_allclose(answer["probabilities"].sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(answer["label"], by_run)
    # the run's test error, as dlexp-predict reports it on the same split
    r = run_predict(store, f"runs:/{run.info.run_id}/model")
    wrong = int((answer["label"] != load_dataset(DatasetConfig(name="digits")).test.y).sum())
    assert r.returncode == 0 and f"({wrong}/250)" in r.stdout, (r.stdout, r.stderr)


def test_logged_model_has_the_runs_summary_metrics(trained):
    """The model page in the UI shows the run's summary values (best/, final/: logged at step 0, where the
    model is logged), each once; no point of a curve (those are at steps from 1)."""
    _, store, run = trained
    client = MlflowClient(store)
    output = run.outputs.model_outputs[0]
    model = client.get_logged_model(output.model_id)
    summary = {"best/valid_error", "best/iteration", "final/epochs", "best/test_error", "final/iterations",
               "final/train_seconds"}
    assert output.step == 0 and all(m.step == 0 for m in model.metrics)
    assert sorted((m.key, m.value) for m in model.metrics) == sorted((k, run.data.metrics[k]) for k in summary)
    for key in summary:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0]


def test_registered_version_is_linked_both_ways_and_the_model_is_named_after_its_run(trained):
    """What the UI's pages read: the logged model (named mlp-digits-<run id[:8]>) lists its version
    (``mlflow.modelVersions``), the version names the model, the registered model says what it holds."""
    _, store, run = trained
    client = MlflowClient(store)
    model_id = run.outputs.model_outputs[0].model_id
    model = client.get_logged_model(model_id)  # (mlflow.set_tracking_uri would point later tests here too)
    assert model.name == f"mlp-digits-{run.info.run_id[:8]}"
    linked = json.loads(model.tags["mlflow.modelVersions"])
    assert [v for v in linked if v["name"] == NAME] == [{"name": NAME, "version": "1"}]
    (version,) = client.search_model_versions(f"name = '{NAME}'")
    assert (version.source, version.run_id, str(version.version)) == (f"models:/{model_id}", run.info.run_id, "1")
    assert "mlp on digits" in client.get_registered_model(NAME).description


def test_eight_registrations_at_once_each_get_a_version_and_all_are_linked(trained, tmp_path):
    """8 processes register the same run's model as one name at the same moment: versions 1..8, each once,
    and the logged model lists all 8 (its link is read and written back under the store's lock)."""
    _, store, run = trained
    code = ("import sys, time; from pathlib import Path; from dlexp.tracking import registry as model_registry; "
            "from dlexp.tracking.tracker import RetryingClient; client = RetryingClient(sys.argv[1], create=False); "
            "d = Path(sys.argv[3]); (d / sys.argv[4]).touch(); "
            "exec('while len(list(d.iterdir())) < 8: time.sleep(0.01)'); "
            "print(model_registry.register(client, sys.argv[2], 'digits-mlp-8'))")
    procs = [subprocess.Popen([sys.executable, "-c", code, store, run.info.run_id, str(tmp_path), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    assert sorted(int(o) for o, _ in outs) == list(range(1, 9))
    client = MlflowClient(store)
    linked = json.loads(client.get_logged_model(run.outputs.model_outputs[0].model_id).tags["mlflow.modelVersions"])
    assert sorted(int(v["version"]) for v in linked if v["name"] == "digits-mlp-8") == list(range(1, 9))


def test_registered_version_and_alias_resolve_for_dlexp_predict(trained, rows, by_run, tmp_path):
    cwd, store, run = trained
    client = MlflowClient(store)
    v1 = client.get_model_version(NAME, "1")
    assert v1.run_id == run.info.run_id and run.data.tags["dlexp.registered_model"] == f"models:/{NAME}/1"
    # what a sweep does with its best child: a new version of a name, with the alias best
    version = model_registry.register(client, run.info.run_id, f"{NAME}-best", alias="best")
    assert version == "1" and str(client.get_model_version_by_alias(f"{NAME}-best", "best").version) == "1"
    for i, source in enumerate((f"models:/{NAME}/1", f"models:/{NAME}-best@best")):  # new files: no --force
        np.testing.assert_array_equal(predicted_labels(store, source, rows[1], tmp_path / f"m{i}.npy"), by_run)


@pytest.mark.parametrize("source, needles", [
    ("models:/nosuch/1", ["no registered model 'nosuch'"]),
    (f"models:/{NAME}/99", [f"{NAME!r} has no version '99'", "its versions: 1"]),
    (f"models:/{NAME}@champion", [f"{NAME!r} has no alias '@champion'"]),
    (f"models:/{NAME}", ["is not a model URI", "models:/<name>/<version>"]),
])
def test_bad_model_uri_is_one_line(trained, source, needles):
    one_error(run_predict(trained[1], source), *needles)


def test_inputs_of_another_width_are_refused_in_one_line(trained, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((3, 784), np.float32))
    one_error(run_predict(trained[1], f"models:/{NAME}/1", "--inputs", tmp_path / "wide.npy"),
              "has shape (3, 784)", "8x8 inputs (64 values)")


def free_port():
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    except OSError as e:
        pytest.skip(f"cannot bind a port on 127.0.0.1: {e}")


def post(url, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.loads(answer.read())


def test_mlflow_serves_the_registered_model_with_dlexp_predict_labels(trained, rows, by_run, tmp_path):
    """The serve command dlexp printed when it registered the model, run as printed (from another directory,
    MLFLOW_TRACKING_URI unset): labels as dlexp-predict's; a row of another width or with NaN: HTTP 400."""
    cwd, store, run = trained
    printed = re.search(r"serve it with: (.*)", (cwd / "dlexp.out").read_text()).group(1)
    assert printed.endswith(f"mlflow models serve -m models:/{NAME}/1 --env-manager local"), printed
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)  # the printed command sets it; mlflow is this environment's
    server = subprocess.Popen(["bash", "-c", f"{printed} -h 127.0.0.1 -p {port}"], cwd=tmp_path,
                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
        answer = post(f"http://127.0.0.1:{port}/invocations", {"inputs": rows[0].tolist()})
        assert answer["predictions"]["label"] == by_run.tolist()
        with pytest.raises(urllib.error.HTTPError) as refused:  # a row of another width: refused by the schema
            post(f"http://127.0.0.1:{port}/invocations", {"inputs": rows[0][:2, :10].tolist()})
        assert refused.value.code == 400
        nan_row = rows[0][:2].copy()
        nan_row[1, 3] = np.nan
        with pytest.raises(urllib.error.HTTPError) as refused:  # not label 0 with HTTP 200
            post(f"http://127.0.0.1:{port}/invocations", {"inputs": nan_row.tolist()})
        assert refused.value.code == 400 and "hold NaN or Inf (first: row 1)" in refused.value.read().decode()
        assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn it started, nothing else
        server.wait(timeout=30)
        log.close()


def test_dataset_inputs_carry_dlexp_checksum(trained):
    run = trained[2]
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["digits_test", "digits_train", "digits_valid"]
    checksum = run.data.tags["dlexp.data_checksum"]
    for split in ("train", "valid", "test"):
        ds = inputs[f"digits_{split}"]
        assert checksum.startswith(ds.dataset.digest) and len(ds.dataset.digest) == 32
        assert {t.key: t.value for t in ds.tags}["mlflow.data.context"] == split
        assert "sklearn.datasets.load_digits" in ds.dataset.source
    assert json.loads(inputs["digits_train"].dataset.profile)["features_shape"] == [1297, 64]


def test_run_shows_tags_description_and_hydra_files(trained):
    cwd, store, run = trained
    tags = run.data.tags
    assert tags["team"] == "vision" and tags["mlflow.note.content"] == "a digits MLP"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    assert tags["mlflow.source.git.commit"] == tags["dlexp.git_commit"]
    client = MlflowClient(store)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"dlexp.log", ".hydra", "checkpoint", "images"} <= top
    hydra = {a.path for a in client.list_artifacts(run.info.run_id, ".hydra")}
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"} <= hydra
    log_text = Path(client.download_artifacts(run.info.run_id, "dlexp.log", str(cwd))).read_text()
    assert f"registered model '{NAME}' version 1" in log_text


BLOCKER = """
import importlib.abc, sys
BLOCKED = {"hydra", "omegaconf", "sklearn", "scipy", "PIL", "tqdm"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Block())
import json, mlflow, numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(np.load(sys.argv[2]))
print(json.dumps({"keys": sorted(out), "shape": list(next(iter(out.values())).shape),
                  "dlexp": sys.modules["dlexp"].__file__}))
"""


def load_bare(model_dir, rows_file, cwd):
    """Load and run an MLflow model in a process that cannot import Hydra, scikit-learn, SciPy, ..."""
    r = subprocess.run([sys.executable, "-c", BLOCKER, str(model_dir), str(rows_file)], cwd=cwd, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_model_loads_with_only_mlflow_torch_numpy(trained, rows, tmp_path):
    cwd, store, run = trained
    model_dir = MlflowClient(store).get_model_version_download_uri(NAME, "1").removeprefix("file://")
    copy = shutil.copytree(model_dir, tmp_path / "model")  # as another machine would have it
    out = load_bare(copy, rows[1], tmp_path)
    assert out["keys"] == ["label", "probabilities"] and out["shape"] == [250]
    assert out["dlexp"].startswith(str(copy / "code"))  # the model's own copy of the model classes


def test_unsupervised_model_logs_its_encoder_and_step_images(tmp_path, rows):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dlexp(tmp_path, store, "model=da", "model.n_hidden=20", "model.pretrain_epochs=2", "model.image_every=1")
    run = latest_run(store)
    client = MlflowClient(store)
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    for key in ("filters", "reconstructions"):
        assert f"images/{key}.png" in images  # the final picture, as before
        assert [p for p in images if p.startswith(f"images/{key}+step+1+")]  # and one a step
        assert [p for p in images if p.startswith(f"images/{key}+step+2+")]
    assert run.data.tags["mlflow.loggedImages"] == "True"
    [output] = run.outputs.model_outputs
    location = client.get_logged_model(output.model_id).artifact_location.removeprefix("file://")
    out = load_bare(location, rows[1], tmp_path)
    assert out["keys"] == ["features"] and out["shape"] == [250, 20]


def test_system_metrics_on_request(tmp_path):
    pytest.importorskip("psutil")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dlexp(tmp_path, store, "model=mlp", "model.hidden_sizes=[16]", "trainer.max_epochs=30", "early_stopping=none",
              "tracking.system_metrics=true", env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"})
    metrics = latest_run(store).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics


def test_installed_copy_records_its_commit(tmp_path):
    """``pip install .`` (not editable) into a folder, then a run from there: the commit is the one built."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True).stdout.split()
    src = tmp_path / "src"
    for name in files:  # the working tree as it is, without build residue or .git
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--target", str(target), str(src)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "GIT_DIR": str(ROOT / ".git")})
    if r.returncode != 0:
        pytest.skip(f"pip cannot build dlexp offline here: {r.stderr.strip().splitlines()[-1:]}")
    assert (target / "dlexp" / "_version.py").is_file()
    work = tmp_path / "work"
    work.mkdir()
    store = f"sqlite:///{work / 'mlflow.db'}"
    run_dlexp(work, store, "trainer.max_epochs=1", env={"PYTHONPATH": str(target)})
    run = latest_run(store)
    assert run.data.tags["mlflow.source.git.commit"] == head
    assert run.data.tags["dlexp.git_commit"] == head
    where = subprocess.run([sys.executable, "-c", "import dlexp; print(dlexp.__file__)"], cwd=work,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(target)})
    assert where.stdout.strip().startswith(str(target))  # the run used the installed copy, not the checkout


def test_sweep_registers_its_best_child_as_best(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "-m", "dataset=digits", f"tracking.uri={store}",
                        "trainer.progress=none", "model=logreg", "trainer.max_epochs=2", "optimizer.lr=0.5,0.0001",
                        "tracking.register_as=digits-sweep"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(store)
    best = client.get_model_version_by_alias("digits-sweep", "best")
    parent = client.get_run(client.get_run(best.run_id).data.tags["mlflow.parentRunId"])
    assert parent.data.tags["dlexp.best_run_id"] == best.run_id
    assert len(client.search_model_versions("name = 'digits-sweep'")) == 1  # the jobs did not register
    linked = client.get_logged_model(best.source.removeprefix("models:/")).tags["mlflow.modelVersions"]
    assert json.loads(linked) == [{"name": "digits-sweep", "version": "1"}]
    # every child's model loads and predicts (MLflow's serving check of the input example ran for the first)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    x = load_dataset(DatasetConfig(name="digits")).test.x[:7]
    assert len(children) == 2
    for child in children:
        model = mlmodel.load(f"runs:/{child.info.run_id}/{mlmodel.NAME}", store)
        assert model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 64)
        assert model.predict(x)["label"].shape == (7,)
        with mlmodel.mlflow_target(store):  # its input example is served (MLflow checked the first one's only)
            name = mlmodel.model_name("logreg", "digits", child.info.run_id)  # MLflow's runs:/ resolves names
            served = _validate_serving_input(f"runs:/{child.info.run_id}/{name}",
                                             convert_input_example_to_serving_input(x))
        assert np.asarray(served["label"]).shape == (7,)


def test_log_model_false_keeps_the_checkpoint_only(tmp_path):
    """``tracking.log_model=false``: the run has its checkpoint (dlexp-predict reads it) and no MLflow model;
    asking to register a model that will not be logged is refused in one line before any run."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dlexp(tmp_path, store, "model=logreg", "trainer.max_epochs=2", "tracking.log_model=false")
    run = latest_run(store)
    client = MlflowClient(store)
    assert run.info.status == "FINISHED" and not run.outputs.model_outputs
    assert not client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/best_params.pkl"]
    out = tmp_path / "labels.npy"
    r = run_predict(store, run.info.run_id, "--dataset", "digits", "--output", out)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "dataset=digits", f"tracking.uri={store}",
                        "tracking.log_model=false", "tracking.register_as=x"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    [line] = r.stderr.strip().splitlines()
    assert r.returncode == 2 and line.startswith("dlexp: error: tracking.register_as='x'"), r.stderr
    assert "tracking.log_model=true" in line and len(client.search_runs([run.info.experiment_id])) == 1
