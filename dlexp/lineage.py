"""A run's dataset inputs, as the MLflow UI shows them: one per split, with dlexp's data checksum.

Each split is an ``mlflow.data.from_numpy`` dataset named ``<dataset>_<split>`` (``digits_train``,
...) whose digest is dlexp's checksum of the data as read (``dlexp.data_checksum``; its first 32
hex digits, the most a store's digest column holds), whose source is the file or directory read
(or ``sklearn.datasets.load_digits``), logged with the context ``train``, ``valid`` or ``test``.
The splits need names of their own: MLflow keeps one input per (name, digest).
"""
import warnings

SPLITS = ("train", "valid", "test")
DIGEST_CHARS = 32  # mlflow's datasets.digest column: VARCHAR(36)
DIGITS_SOURCE = "sklearn.datasets.load_digits"


def _source(where: str):
    """The MLflow dataset source of dlexp's ``Dataset.source``: a path (MLflow makes it a local
    artifact source), or scikit-learn's loader (a code source)."""
    if where == "sklearn":
        from mlflow.data.code_dataset_source import CodeDatasetSource

        return CodeDatasetSource(tags={"mlflow.source.name": DIGITS_SOURCE})
    return str(where)


def dataset_inputs(dataset) -> list:
    """The three ``DatasetInput`` entities of a dlexp ``Dataset`` (its numpy splits)."""
    import mlflow.data
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source, digest = _source(dataset.source), dataset.checksum[:DIGEST_CHARS]
    inputs = []
    for split in SPLITS:
        part = getattr(dataset, split)
        with warnings.catch_warnings():  # a path "can be interpreted in multiple ways": two local sources
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_numpy(part.x, source=source, targets=part.y, name=f"{dataset.name}_{split}",
                                        digest=digest)
        inputs.append(DatasetInput(Dataset(**ds.to_dict()), [InputTag(MLFLOW_DATASET_CONTEXT, split)]))
    return inputs


def log_dataset_inputs(tracker, dataset) -> None:
    """Log the run's dataset inputs (nothing without a run)."""
    if tracker.run_id:
        tracker.client.log_inputs(tracker.run_id, datasets=dataset_inputs(dataset))
