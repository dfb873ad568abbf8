"""Sweeps: one MLflow parent run per multirun, its jobs nested under it."""
from pathlib import Path

PARENT_FILE = "mlflow_parent_run_id"


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
