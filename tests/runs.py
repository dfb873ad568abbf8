"""Reading runs back from an MLflow store, for the end-to-end tests."""
from pathlib import Path

from mlflow.tracking import MlflowClient


def history(run, key, store):
    return MlflowClient(store).get_metric_history(run.info.run_id, key)


def download(run, path, store, dest):
    return Path(MlflowClient(store).download_artifacts(run.info.run_id, path, str(dest)))
