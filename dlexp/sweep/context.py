"""A job's sweep context: which sweep it belongs to, and what the sweep's command line swept.

The sweep's parent run id is written to ``<sweep dir>/mlflow_parent_run_id`` by the launching process
(:class:`dlexp.sweep.callback.MlflowSweep`) before any job starts; every job finds it there
(:func:`parent_run_id`) wherever it runs (joblib worker, SLURM node, ...), and tags its run
``mlflow.parentRunId``.
"""
from pathlib import Path

PARENT_FILE = "mlflow_parent_run_id"
KEYS_FILE = "mlflow_sweep_keys"  # the swept keys, one a line: what a job's run is named by (dlexp.run_names)
SWEEP_TAG = "dlexp.sweep_id"
PARENT_TAG = "mlflow.parentRunId"
OBJECTIVE_TAG = "dlexp.objective"  # "<metric>:<direction>", set by each run: what a sweep ranks it by
PRUNED_TAG = "dlexp.pruned"
ERROR_TAG = "dlexp.error"  # why a run FAILED (set by the run code, or by the sweep for a job without a run)
SKIPPED_TAG = "dlexp.skipped_from"  # a job not trained again (trainer.skip_finished): the run holding its result
EARLY_TAG = "dlexp.failed_before_run"  # a run the sweep made for a job that failed before its own run existed
CALLBACK_KEY = "mlflow_sweep"  # hydra.callbacks.<key> in conf/config.yaml


def parent_run_id():
    """The parent run of the sweep this job belongs to, or None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    path = Path(hc.sweep.dir) / PARENT_FILE
    return path.read_text().strip() if path.exists() else None


def swept_keys() -> list:
    """The keys the sweep this job belongs to sweeps (written beside the parent run's id), or []."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return []
    path = Path(HydraConfig.get().sweep.dir) / KEYS_FILE
    return path.read_text().split() if path.exists() else []


def callback_config() -> dict:
    """This job's ``hydra.callbacks.mlflow_sweep`` node (empty when there is none)."""
    from hydra.core.hydra_config import HydraConfig

    callbacks = HydraConfig.get().get("callbacks") or {}
    return callbacks.get(CALLBACK_KEY) or {}


def sweep_overrides(config):
    """(swept, fixed): the command line's and the sweeper's ``params`` overrides, as strings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    swept, fixed = [], []
    params = config.hydra.sweeper.get("params") or {}
    candidates = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    for text in candidates:
        try:
            override = parser.parse_override(text)
        except Exception:  # not ours to judge: the sweeper reports bad overrides
            fixed.append(text)
            continue
        (swept if override.is_sweep_override() else fixed).append(text)
    return swept, fixed


def override_key(override: str) -> str:
    """``+optimizer.lr=0.1`` -> ``optimizer.lr``."""
    return override.split("=", 1)[0].lstrip("+~")
