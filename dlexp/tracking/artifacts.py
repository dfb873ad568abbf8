"""A run's checkpoint read back, by path, run id or MLflow URI (what a run saves: :mod:`dlexp.run.artifacts`).

A checkpoint is a pickle of plain containers and numpy arrays (format
``dlexp.params/1``: the model and dataset configs, image shape, classes, the
``state_dict`` as arrays, and the errors it reached), written atomically and
read only through the restricted unpickler (:mod:`dlexp.safe_pickle`). A
checkpoint is found by path, run id, or MLflow URI: ``runs:/<run id>/<path>``
(a run's artifact, or its logged model) and ``models:/<name>/<version>``,
``models:/<name>@<alias>``, ``models:/<model id>`` (the checkpoint the MLflow
model carries, :mod:`dlexp.tracking.mlmodel`).
"""
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .. import safe_pickle
from ..checks import ConfigError
from .provenance import is_run_id
from .registry import RegistryError, is_model_uri, resolve

CHECKPOINT = "best_params.pkl"
PRETRAINED = "pretrained_params.pkl"
FORMAT = "dlexp.params/1"


def fetch_checkpoint(source: str, tracking_uri=None, dest=None, artifact=f"checkpoint/{CHECKPOINT}") -> Path:
    """A local checkpoint path: ``source`` itself, or the run's ``artifact`` downloaded from MLflow.

    A download goes to ``dest``, else to a new ``dlexp-predict-*`` temp directory that the caller then
    owns; :func:`fetched_checkpoint` is the variant that removes it again.
    """
    local = _local_file(source)
    if local is not None:
        return local
    uri = _existing_store(source, tracking_uri)
    return _download_source(source, uri, artifact, dest or tempfile.mkdtemp(prefix="dlexp-predict-"))


@contextlib.contextmanager
def fetched_checkpoint(source: str, tracking_uri=None, artifact=f"checkpoint/{CHECKPOINT}") -> Iterator[Path]:
    """Yield a local checkpoint path, as :func:`fetch_checkpoint`; a download lives in a temp
    directory removed on exit (read the checkpoint inside the ``with``), so nothing is left behind."""
    local = _local_file(source)
    if local is not None:
        yield local
        return
    uri = _existing_store(source, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="dlexp-predict-") as tmp:
        yield _download_source(source, uri, artifact, tmp)


def _local_file(source: str):
    """``source`` as a path when it names an existing file; None for a run id or an MLflow URI;
    CheckpointError otherwise."""
    if is_model_uri(source):
        return None
    path = Path(source)
    if path.is_dir():
        raise safe_pickle.CheckpointError(f"{source}: is a directory, not a checkpoint file (e.g. "
                                         f"{path / CHECKPOINT})")
    if path.exists():
        return path
    if not is_run_id(source):
        raise safe_pickle.CheckpointError(f"{source!r} is neither an existing file, an MLflow run id "
                                         "(32 hex digits) nor a models:/ or runs:/ URI")
    return None


def _existing_store(source: str, tracking_uri=None) -> str:
    """The tracking URI to look ``source`` (a run id or URI) up in (as dlexp resolves it), refused
    without creating anything when no store is there."""
    from .store import check_existing, default_store

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_store()}"
    try:
        check_existing(uri)
    except ValueError as e:
        raise safe_pickle.CheckpointError(f"{e}; cannot look up {'' if is_model_uri(source) else 'run '}"
                                         f"{source}") from None
    return uri


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _download_source(source: str, uri: str, artifact: str, dest) -> Path:
    """The checkpoint ``source`` (a run id: its ``artifact``; a URI: what it names) downloaded into ``dest``."""
    if not is_model_uri(source):
        return _download(source, uri, artifact, dest)
    from .tracker import RetryingClient

    try:
        client = RetryingClient(uri, create=False)
        where = resolve(client, source, uri)
    except RegistryError:  # a name, version, alias or run that is not there: its own line
        raise
    except Exception as e:
        raise safe_pickle.CheckpointError(f"cannot read the MLflow store {uri}: {_first_line(e)}") from None
    if where.location is None:
        return _download(where.run_id, uri, where.artifact, dest)
    return _model_checkpoint(where.location.rstrip("/"), source, uri, dest)


def _model_checkpoint(location: str, source: str, uri: str, dest) -> Path:
    """The dlexp checkpoint an MLflow model carries (its ``checkpoint`` artifact; the model's files are
    at ``location``), downloaded into ``dest``."""
    import mlflow.artifacts
    from mlflow.models import Model

    try:
        with _no_progress_bar():
            mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/MLmodel", dst_path=str(dest),
                                                          tracking_uri=uri)
            pyfunc = Model.load(mlmodel).flavors.get("python_function", {})
            path = (pyfunc.get("artifacts") or {}).get("checkpoint", {}).get("path")
            if not path:
                raise safe_pickle.CheckpointError(f"{source}: not a dlexp model (no checkpoint among its artifacts)")
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{path}", dst_path=str(dest),
                                                            tracking_uri=uri))
    except safe_pickle.CheckpointError:
        raise
    except Exception as e:
        raise safe_pickle.CheckpointError(f"{source}: cannot download its files ({_first_line(e)})") from None


def _download(run_id: str, uri: str, artifact: str, dest) -> Path:
    """The run's ``artifact`` downloaded into ``dest``; one-line CheckpointError for a missing run or file."""
    from .tracker import RetryingClient

    try:
        client = RetryingClient(uri, create=False)  # a reader: never builds or migrates the store
        client.get_run(run_id)
    except Exception as e:
        if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(e).lower():
            raise safe_pickle.CheckpointError(f"no run {run_id} in the MLflow store {uri}") from None
        raise safe_pickle.CheckpointError(f"cannot read the MLflow store {uri}: {_first_line(e)}") from None
    try:
        with _no_progress_bar():
            return Path(client.download_artifacts(run_id, artifact, str(dest)))
    except Exception as e:
        raise safe_pickle.CheckpointError(f"run {run_id} in {uri} has no {artifact}: {_first_line(e)}") from None


@contextlib.contextmanager
def _no_progress_bar():
    """MLflow draws a download progress bar on stderr; a command's stderr is for its one error line."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def load_pretrained(model, source: str, tracking_uri=None) -> str:
    """Load a pretrained stack from a checkpoint path or an MLflow run id; returns where it was read
    (the path, or ``runs:/<run id>/checkpoint/pretrained_params.pkl``: the download is removed)."""
    artifact = f"checkpoint/{PRETRAINED}"
    with fetched_checkpoint(source, tracking_uri, artifact=artifact) as path:
        ckpt = safe_pickle.load(path)
        where = str(path) if Path(source).exists() else source if is_model_uri(source) else \
            f"runs:/{source}/{artifact}"
    params = ckpt.get("params") if isinstance(ckpt, dict) else None
    if not isinstance(params, dict):
        raise ConfigError(f"model.pretrained_from={source!r}: {where} is not a dlexp checkpoint (no 'params')")
    try:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"model.pretrained_from={source!r} does not fit this model: "
                          f"{str(e).strip().splitlines()[-1].strip()}") from None
    return where
