"""A run's dataset inputs, as the MLflow UI shows them: one per split, with dlexp's data checksum.

Each split is an ``mlflow.data.from_numpy`` dataset named ``<dataset>_<split>`` (``digits_train``,
...) whose digest is dlexp's checksum of the data as read (``dlexp.data_checksum``; its first 32
hex digits, the most a store's digest column holds), whose source is the file or directory read
(or ``sklearn.datasets.load_digits``), logged with the context ``train``, ``valid`` or ``test``.
The splits need names of their own: MLflow keeps one input per (name, digest).
"""
import time
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


def log_dataset_inputs(tracker, dataset, tries: int = 5) -> None:
    """Log the run's dataset inputs (nothing without a run).

    MLflow's SQL store looks the experiment's datasets up, then inserts the missing ones, in one
    transaction: runs of one experiment logging the same new dataset at the same moment (a parallel
    sweep's jobs) race, and all but one fail on the store's unique (experiment, name, digest) key,
    their transaction rolled back. Tried again, the dataset is there and only the run's link is added.
    """
    if not tracker.run_id:
        return
    from mlflow.exceptions import MlflowException

    inputs = dataset_inputs(dataset)
    for attempt in range(tries):
        try:
            tracker.client.log_inputs(tracker.run_id, datasets=inputs)
            return
        except MlflowException as e:
            if attempt == tries - 1 or not _lost_race(e):
                raise
            time.sleep(0.05 * (attempt + 1))


def _lost_race(error) -> bool:
    """A unique-key violation on insert (sqlite, PostgreSQL, MySQL): another run inserted it first."""
    text = str(error).lower()
    return "unique constraint" in text or "duplicate key" in text or "duplicate entry" in text
