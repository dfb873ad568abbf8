"""The MLflow Model Registry: a run's model registered as a new version of a name, aliases, and
what a ``models:/`` or ``runs:/`` URI names.

    register(client, run_id, "digits-mlp")              -> "3"   (models:/digits-mlp/3)
    register(client, run_id, "digits-mlp", alias="best")         (models:/digits-mlp@best)
    resolve(client, "models:/digits-mlp@best")          -> Resolved(run_id, "<where its files are>")
    resolve(client, "runs:/<run id>/model")             -> the run's logged model (mlp-digits-<run id[:8]>)
    resolve(client, "runs:/<run id>/checkpoint/best_params.pkl") -> a file among the run's artifacts

``client`` is an MlflowClient (dlexp's retrying one). A name, version or alias that is not there
raises :class:`RegistryError`, one line naming it and what there is instead. A new version is linked
both ways, as MLflow's own registration does: the version's source is the logged model
(``models:/<model id>``) and the logged model lists the version (its ``mlflow.modelVersions`` tag, which the UI's model page reads).
"""
import contextlib
import re
import shlex
from dataclasses import dataclass
from typing import Optional

from ..checks import ConfigError
from .mlmodel import DATASET_TAG, KIND_TAG, NAME as MODEL_NAME, is_dlexp_model, mlflow_target, run_models
USAGE = "models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/latest or runs:/<run id>/<path>"


class RegistryError(ValueError):
    """A registered model, version, alias or run that is not in the store; one line."""


@dataclass
class Resolved:
    """What a URI names: an MLflow model (``location``: the artifact URI of its files) or a file among
    a run's artifacts (``artifact``, a path in the run)."""

    run_id: Optional[str]
    location: Optional[str] = None
    artifact: Optional[str] = None


def is_model_uri(text) -> bool:
    return isinstance(text, str) and text.startswith(("models:/", "runs:/"))


def check_name(name: str, key: str = "tracking.register_as") -> None:
    """A registered model name MLflow accepts and a ``models:/<name>/...`` URI can spell."""
    if not name or not name.strip():
        raise ConfigError(f"{key}={name!r} is not allowed: a non-empty name")
    bad = next((c for c in name if c in "/:@'\"" or not c.isprintable()), None)
    if bad:  # / : @ end the name in a models:/ URI; MLflow's searches cannot read a name with a quote back
        raise ConfigError(f"{key}={name!r} is not allowed: a registered model name cannot contain {bad!r} "
                          "(any of / : @ ' \" or a control character)")


def serve_command(tracking_uri: str, model_uri: str) -> str:
    """The shell command that serves ``model_uri`` (``models:/<name>/<version>``) from this store, from any
    directory: ``MLFLOW_TRACKING_URI=<the store, absolute> mlflow models serve -m <uri> --env-manager local``
    (without the variable MLflow looks for the name in ./mlruns, or creates ./mlflow.db, and fails)."""
    from .store import sqlite_path

    path = sqlite_path(tracking_uri)
    uri = f"sqlite:///{path}" if path is not None else tracking_uri
    return f"MLFLOW_TRACKING_URI={shlex.quote(uri)} mlflow models serve -m {shlex.quote(model_uri)} --env-manager local"


def _missing(e) -> bool:
    return getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(e).lower()


def run_model_id(client, run_id: str) -> str:
    """The id of the model dlexp logged for the run (the latest, if it logged more than one)."""
    models = run_models(client, run_id)
    if not models:
        raise RegistryError(f"run {run_id} has no logged model to register (tracking.log_model=false?)")
    return models[-1].model_id


def _link(client, name: str, version: str, model_id: str) -> None:
    """The version on the logged model's ``mlflow.modelVersions`` tag: MLflow's own step (the tracking
    store's ``set_model_versions_tags``, which an MLflow server runs when it creates a version and
    ``mlflow.register_model`` repeats client-side); it adds the version once, so a server's link is kept.
    It reads the tag and writes it back: in a sqlite store, under a lock beside the database, so versions of
    one model registered at once are all listed (a server links them itself)."""
    from filelock import FileLock

    from .store import sqlite_path
    from .tracker import retry_locked

    store = getattr(client, "_client", client)._tracking_client.store
    path = sqlite_path(client.tracking_uri)
    with FileLock(f"{path}.registry.lock") if path else contextlib.nullcontext():
        retry_locked(store.set_model_versions_tags, name=name, version=version, model_id=model_id)


def register(client, run_id: str, name: str, alias: str = None) -> str:
    """Register the run's logged model as a new version of ``name`` (created if new, with a description
    saying what it holds), linked both ways; with ``alias``, point that alias at the new version.
    Returns the version (a string, e.g. "3")."""
    from mlflow.exceptions import MlflowException

    check_name(name)
    model_id = run_model_id(client, run_id)
    tags = client.get_logged_model(model_id).tags
    what = f"{tags.get(KIND_TAG, 'a model')} on {tags.get(DATASET_TAG, 'its dataset')}"
    try:
        client.create_registered_model(name, description=f"dlexp: {what} (tracking.register_as={name})")
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    # a sqlite registry looks the source models:/<model id> up in the process's MLflow store, not the client's
    with mlflow_target(client.tracking_uri):
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                              description=f"{what}, run {run_id}")
    _link(client, name, str(version.version), model_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def _registered(client, name: str, store: str):
    try:
        return client.get_registered_model(name)
    except Exception as e:
        if _missing(e):
            raise RegistryError(f"no registered model {name!r} in the MLflow store {store}") from None
        raise


def _versions(client, name: str) -> list:
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def _model_version(client, name: str, ref: str, store: str):
    """The version ``ref`` (a number, ``latest`` or ``@alias``) of registered model ``name``."""
    registered = _registered(client, name, store)
    if ref.startswith("@"):
        aliases = dict(registered.aliases or {})
        if ref[1:] not in aliases:
            have = ", ".join(f"@{a}" for a in sorted(aliases)) or "none"
            raise RegistryError(f"registered model {name!r} has no alias {ref!r} (its aliases: {have})")
        return client.get_model_version_by_alias(name, ref[1:])
    versions = _versions(client, name)
    if ref == "latest" and versions:
        ref = str(versions[-1])
    if not re.fullmatch(r"[1-9][0-9]*", ref) or int(ref) not in versions:
        have = ", ".join(map(str, versions)) or "none"
        raise RegistryError(f"registered model {name!r} has no version {ref!r} (its versions: {have})")
    return client.get_model_version(name, ref)


def _resolve_models(client, rest: str, uri: str, store: str) -> Resolved:
    if re.fullmatch(r"m-[0-9a-f]{32}", rest):  # a logged model's own id: models:/m-...
        try:
            model = client.get_logged_model(rest)
            return Resolved(model.source_run_id, model.artifact_location)
        except Exception as e:
            if _missing(e):
                raise RegistryError(f"{uri}: no logged model {rest} in the MLflow store {store}") from None
            raise
    m = re.fullmatch(r"([^/@]+)(?:/([^/@]+)|(@[^/@]+))", rest)
    if not m:
        raise RegistryError(f"{uri!r} is not a model URI: expected {USAGE}")
    version = _model_version(client, m.group(1), m.group(2) or m.group(3), store)
    return Resolved(version.run_id, client.get_model_version_download_uri(m.group(1), version.version))


def _resolve_runs(client, rest: str, uri: str, store: str) -> Resolved:
    run_id, _, path = rest.partition("/")
    if not re.fullmatch(r"[0-9a-f]{32}", run_id) or not path.strip("/"):
        raise RegistryError(f"{uri!r} is not a run URI: expected runs:/<run id (32 hex digits)>/<path>")
    try:
        run = client.get_run(run_id)
    except Exception as e:
        if _missing(e):
            raise RegistryError(f"no run {run_id} in the MLflow store {store}") from None
        raise
    path = path.strip("/")
    for out in sorted(run.outputs.model_outputs if run.outputs else [], key=lambda o: -o.step):
        model = client.get_logged_model(out.model_id)
        if model.name == path or (path == MODEL_NAME and is_dlexp_model(model)):
            return Resolved(run_id, model.artifact_location)
    return Resolved(run_id, artifact=path)


def resolve(client, uri: str, store: str = "") -> Resolved:
    """What ``uri`` names in the store ``client`` reads (``store``: its URI, for messages)."""
    if uri.startswith("models:/"):
        return _resolve_models(client, uri[len("models:/"):].strip("/"), uri, store)
    if uri.startswith("runs:/"):
        return _resolve_runs(client, uri[len("runs:/"):].strip("/"), uri, store)
    raise RegistryError(f"{uri!r} is not a model URI: expected {USAGE}")
