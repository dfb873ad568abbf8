"""The tracking wing: everything that reads or writes the MLflow store.

tracker (a run's MLflow client, retrying a locked store), store (the store itself: URIs, creation, locks),
contract (what runs and sweeps agree on: tag names, run names, the objective, the config key),
metric_names, lineage, provenance, mlmodel and pyfunc_model (the MLflow model), registry, artifacts
(checkpoints fetched back).
"""
