"""A sweep's failed job: a grid outcome to record, not a reason to stop the sweep.

* :class:`FailedJob` is the return value a failed job is given (its JobReturn turned COMPLETED), so the
  sweeper goes on: the basic sweeper only reads it, and the Optuna sweeper cannot cast it to a float,
  which makes it tell the trial FAIL and carry on with the study. (A NaN would not do: Optuna 2.10
  refuses to complete a trial with NaN, and hydra-optuna-sweeper then also passes the NaN with the FAIL
  state, which raises and ends the study with its trial left RUNNING.)
* :func:`error_line` is the one line the job prints on stderr.
* :func:`record_failed_run` gives a job that failed before its MLflow run existed (a missing data file,
  an unusable device) a FAILED child run under the sweep's parent, with the reason in ``dlexp.error``,
  so the table lists every job. A job whose run had started was already ended FAILED by the run code.
"""
import logging
from pathlib import Path

from .. import metric_names as names
from ..tracking import contract
from ..tracking.contract import (EARLY_TAG, ERROR_TAG, OBJECTIVE_TAG, OUTPUT_DIR_TAG, OVERRIDES_TAG, PARENT_TAG,
                                 override_key, swept_keys)

log = logging.getLogger("dlexp")

HIDDEN = ("tracking.", "trainer.progress", "hydra.", "hydra/")  # not worth showing in a line or a run name


class FailedJob:
    """The return value of a failed job: its reason, and no value a sweeper could rank."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"failed job ({self.reason})"

    __str__ = __repr__


def reason(error: BaseException) -> str:
    """One line: dlexp's own errors as they are, anything else with its type."""
    from ..errors import message

    return " ".join(message(error).split())


def error_line(num, overrides: str, why: str) -> str:
    return f"dlexp: error: job {num} ({overrides or 'no overrides'}): {why}"


def shown_overrides(overrides, keys) -> str:
    """The job's values of the swept keys (all its overrides but tracking and display ones without keys)."""
    strip = [o for o in overrides if not o.lstrip("+~").startswith(HIDDEN)]
    if keys:
        swept = [o for o in strip if override_key(o) in keys]
        return " ".join(swept or strip)
    return " ".join(strip)


def _objective(config) -> str:
    """What the job's run would have been ranked by: from its model's class, without building it (an RBM's
    direction depends on its config: a run that never started says ``min``)."""
    from omegaconf import OmegaConf

    from ..models import REGISTRY

    model = REGISTRY.get(OmegaConf.select(config, "model.name", default=None))
    return contract.objective_tag(names.BEST_VALID if model is None or model.supervised else names.FINAL_COST, "min")


def _has_run(client, parent, output_dir: str) -> bool:
    """Whether the run code made a run for this job (its ``dlexp.output_dir`` is the job's)."""
    from ..tracking.contract import children_of

    return any(c.data.tags.get(OUTPUT_DIR_TAG) == output_dir for c in children_of(client, parent))


def record_failed_run(config, parent_id: str, overrides: list, why: str) -> None:
    """A FAILED child for a job that failed before its run existed (none if the run code made one)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from ..tracking.tracker import build_tracker

    output_dir = str(Path(HydraConfig.get().runtime.output_dir).resolve())
    tracker = build_tracker(config.tracking)
    parent = tracker.client.get_run(parent_id)
    if _has_run(tracker.client, parent, output_dir):
        return
    model = OmegaConf.select(config, "model.name", default="?")
    dataset = OmegaConf.select(config, "dataset.name", default="?")
    name = (OmegaConf.select(config, "tracking.run_name", default=None)  # as the run code names its runs
            or contract.child_name(overrides, swept_keys()) or contract.single_name(str(model), str(dataset), overrides))
    tags = {PARENT_TAG: parent_id, ERROR_TAG: why, EARLY_TAG: "true", OBJECTIVE_TAG: _objective(config),
            OVERRIDES_TAG: " ".join(overrides) or "(none)", OUTPUT_DIR_TAG: output_dir}
    tracker.start(name, {}, tags)
    tracker.end("FAILED")
    log.info("job failed before its run started: FAILED run %s under the sweep's parent", tracker.run_id)
