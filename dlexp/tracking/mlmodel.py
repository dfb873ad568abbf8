"""The MLflow model of a run, logged beside the tutorial-style checkpoint: a pyfunc "model from code".

:func:`log_model` logs ``model`` (a classifier's best parameters, or an encoder's pretrained ones)
as an MLflow 3 logged model linked to the run: MLflow copies :mod:`dlexp.tracking.pyfunc_model` (the code
MLflow runs to load and predict), the checkpoint as the ``checkpoint`` artifact, and dlexp's model
classes with the restricted checkpoint reader as ``code/dlexp`` (so it loads where only mlflow,
torch and numpy are installed, and nothing is unpickled by ``pickle.load``). The signature is
inferred by MLflow running the model on the input example -- the first rows of the test split,
float32 (N, C*H*W) in [0, 1]. MLflow then checks that the example is served (loading the saved model
as ``mlflow models serve`` does and predicting the example's JSON): once a process for each kind of
model and input width, since later models of that kind differ only in their checkpoint, which the
signature's inference has just run (~10 ms a job of a sweep). Requirements are given (inferring them
costs ~10 s a run).

Chosen over the PyTorch flavour's ``pt2`` (``torch.export``) format because exporting costs ~2 s
in every process (importing ``torch._dynamo``), and over TorchScript (deprecated in torch 2.x):
logging this model costs ~0.7 s in a fresh process (half of it MLflow checking the requirements
against the installed packages, once a process) and ~0.15-0.25 s for the next runs of a sweep.
"""
import contextlib
import functools
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # dlexp/
CODE = Path(__file__).resolve().parent / "pyfunc_model.py"
# what pyfunc_model imports from dlexp: the package, the model classes and the checkpoint reader
MODEL_CODE = ("__init__.py", "checks.py", "safe_pickle.py", "models")
NAME = "model"           # what runs:/<run id>/model names: the run's dlexp model, whatever its name
KIND_TAG, DATASET_TAG = "dlexp.model", "dlexp.dataset"  # on a logged model: what it is (mlp, digits)
EXAMPLE_ROWS = 5
_SERVED = set()  # (kind, input width) whose input example MLflow has served in this process


def requirements() -> list:
    """pip requirements of the logged model: what pyfunc_model imports, at the versions here."""
    import mlflow
    import numpy
    import torch

    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={numpy.__version__}"]


def model_name(kind: str, dataset: str, run_id: str) -> str:
    """A logged model's name, after its run: ``mlp-digits-1a2b3c4d`` (the run id's first 8 digits)."""
    return f"{kind}-{dataset}-{run_id[:8]}"


def is_dlexp_model(logged) -> bool:
    """A LoggedModel dlexp logged: tagged with its kind (or, in older stores, named ``model``)."""
    return KIND_TAG in (logged.tags or {}) or logged.name == NAME


def run_models(client, run_id: str) -> list:
    """The LoggedModels dlexp logged for the run, oldest step first."""
    run = client.get_run(run_id)
    outputs = sorted(run.outputs.model_outputs if run.outputs else [], key=lambda o: o.step)
    return [m for m in (client.get_logged_model(o.model_id) for o in outputs) if is_dlexp_model(m)]


@functools.lru_cache(maxsize=1)
def _staging() -> tempfile.TemporaryDirectory:
    """A ``dlexp`` folder with only what the model needs, for MLflow's ``code_paths``: made once a
    process, in a temporary directory removed when the process exits."""
    tmp = tempfile.TemporaryDirectory(prefix="dlexp-model-code-")
    dest = Path(tmp.name) / "dlexp"
    dest.mkdir()
    for name in MODEL_CODE:
        src = PACKAGE / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return tmp


@contextlib.contextmanager
def mlflow_target(uri: str, experiment_id: str = None):
    """MLflow's model logging and loading find the store and the experiment the fluent way (dlexp
    keeps no active MLflow run): point both at the run's for the call, quietly; restored afterwards."""
    values = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    if experiment_id is not None:
        values["MLFLOW_EXPERIMENT_ID"] = str(experiment_id)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.WARNING)  # "Inferring model signature from input example" ...
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Add type hints to the `predict` method ..."
            yield
    finally:
        mlflow_log.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Pyfunc:
    """``mlflow.pyfunc`` as the flavor ``Model.log`` saves with, taking the ``validate_serving_input``
    that ``Model.log`` reads from its keyword arguments and then hands on (pyfunc's own ``save_model``
    refuses it)."""

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(validate_serving_input=True, **kwargs):
        import mlflow.pyfunc

        return mlflow.pyfunc.save_model(**kwargs)


def log_model(tracker, checkpoint_path, example, step: int = 0, kind: str = None, dataset: str = "data"):
    """Log the MLflow model of ``checkpoint_path`` to the tracker's run, named after the run
    (:func:`model_name`) and tagged with ``kind`` and ``dataset``; returns MLflow's ModelInfo
    (``model_uri`` = ``models:/<model id>``, ``model_id``), or None without a run (tracking=none).

    ``example``: rows (N, C*H*W) float32, the input example and the data the signature is inferred from.
    ``kind``: the model's name (``mlp``...): its example is served once a process (None: every time).
    """
    if not tracker.run_id:
        return None
    from mlflow.models import Model

    served = (kind, example.shape[1:])
    tags = {KIND_TAG: kind or "model", DATASET_TAG: dataset}
    with mlflow_target(tracker.uri, tracker.experiment_id):
        name = model_name(kind or "model", dataset, tracker.run_id)
        info = Model.log(artifact_path=None, name=name, flavor=_Pyfunc, run_id=tracker.run_id, step=step,
                         python_model=str(CODE), artifacts={"checkpoint": str(checkpoint_path)},
                         code_paths=[str(Path(_staging().name) / "dlexp")], input_example=example[:EXAMPLE_ROWS],
                         pip_requirements=requirements(), tags=tags,
                         validate_serving_input=kind is None or served not in _SERVED)
    if kind is not None:
        _SERVED.add(served)
    return info


def earlier(tracker, step: int):
    """The MLflow model this run logged at ``step`` before it was stopped and resumed, or None.

    MLflow copies the run's metrics at ``step`` onto every model logged there (points in the run's
    histories, tagged with the model): logging the same model again after a resume would add a second
    copy, so a resumed run that had logged it (READY) keeps that one. One left PENDING (stopped while it
    was logged) is marked FAILED and logged again.
    """
    from mlflow.entities import LoggedModelStatus

    run = tracker.client.get_run(tracker.run_id)
    for output in (run.outputs.model_outputs if run.outputs else []):
        if output.step != step:
            continue
        model = tracker.client.get_logged_model(output.model_id)
        if not is_dlexp_model(model):
            continue
        if model.status == LoggedModelStatus.READY:
            return model
        if model.status == LoggedModelStatus.PENDING:
            tracker.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
    return None


def load(model_uri: str, tracking_uri: str = None):
    """The MLflow model at ``model_uri`` (``models:/...``, ``runs:/...``, a path) as a pyfunc model;
    ``runs:/<run id>/model`` is the run's dlexp model (``models:/<its model id>``)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    run_id, _, path = model_uri.removeprefix("runs:/").partition("/")
    if model_uri.startswith("runs:/") and path.strip("/") == NAME:
        models = run_models(MlflowClient(tracking_uri), run_id)
        model_uri = f"models:/{models[-1].model_id}" if models else model_uri
    with mlflow_target(tracking_uri):
        return mlflow.pyfunc.load_model(model_uri)
