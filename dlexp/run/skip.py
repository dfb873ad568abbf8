"""``trainer.skip_finished=true``: a job whose exact config already FINISHED in the store is not trained again.

:func:`finished_result` runs first in a job (before any check that reads data): it looks the job's
config key (the ``dlexp.config_key`` tag every run carries: :func:`dlexp.run.resume.config_key` of its
flattened config, without the keys that only say how it runs) up among the experiment's FINISHED runs.
When one is there, the job returns that run's final metrics (``best/valid_error``, ``final/cost``,
... : the sweeper gets its objective) without loading data or training, and

* in a sweep, it is logged as a child run of the new sweep, FINISHED, with the old run's final metrics
  (its summary values, no curves), tagged ``dlexp.skipped_from=<old run id>``, so the table, the pictures and the MLflow
  UI show the whole grid; the table lists it as SKIPPED, the run it points to under it;
* outside a sweep, no run is made: the command says which run already holds the result.

With ``trainer.resume=auto`` as well, a job whose config has an unfinished run (KILLED, FAILED)
continues it, so running an interrupted sweep's command again finishes it.
"""
import logging
import os
import sys
from dataclasses import asdict, replace

from .. import metric_names as names
from ..tracking.contract import (COMMAND_TAG, DATA_CHECKSUM_TAG, GIT_COMMIT_TAG, OBJECTIVE_TAG, OUTPUT_DIR_TAG,
                                 OVERRIDES_TAG, PARENT_TAG, PRUNED_TAG, SKIPPED_TAG, objective_of, parent_run_id,
                                 runs_with_config_key)

log = logging.getLogger("dlexp")



def without_skip(run):
    """``run`` with ``trainer.skip_finished`` false: how a run is started does not change what it computes,
    so it does not change its config key either (runs trained with and without the flag find each other)."""
    return replace(run, trainer=replace(run.trainer, skip_finished=False)) if run.trainer.skip_finished else run


def config_key(run) -> str:
    from . import resume
    from .params import flatten

    return resume.config_key(flatten(asdict(without_skip(run))))


def find_finished(tracker, key: str):
    """The newest FINISHED run of the tracker's experiment with this config key, or None (a run a sweep's
    pruner stopped ends FINISHED too, tagged ``dlexp.pruned``: it is not a finished training)."""
    runs = runs_with_config_key(tracker.client, tracker.experiment_id, key, finished=True, limit=20)
    return next((r for r in runs if not r.data.tags.get(PRUNED_TAG)), None)


def finished_result(run, overrides: list, out):
    """The final metrics of the FINISHED run with ``run``'s config (see the module doc), or None to train."""
    if not (run.trainer.skip_finished and run.tracking.enabled):
        return None
    from ..tracking.store import check_reachable
    from ..tracking.tracker import build_tracker

    check_reachable(run.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI", ""))
    tracker = build_tracker(run.tracking)
    old = find_finished(tracker, config_key(run))
    if old is None:
        return None
    old_id, metrics = old.info.run_id, names.renamed(old.data.metrics)  # an old run's names, read as now
    parent = parent_run_id()
    run_id = _record(tracker, run, overrides, out, old, parent) if parent else old_id
    log.info("trainer.skip_finished: this config FINISHED as run %s (%s); not trained again%s", old_id,
             _summary(old), f", logged as run {run_id} of the sweep" if parent else "")
    return {**metrics, "run_id": run_id, "skipped_from": old_id, "output_dir": str(out)}


def _summary(old) -> str:
    metric = objective_of(old)[0] or names.BEST_VALID
    return f"{metric} {names.shown(metric, names.get(old.data.metrics, metric))}"


def _record(tracker, run, overrides, out, old, parent) -> str:
    """The skipped job as a FINISHED child of the sweep, pointing at the run that holds its result."""
    from .params import logged_params
    from ..tracking.contract import run_name

    tags = {PARENT_TAG: parent, SKIPPED_TAG: old.info.run_id,
            OVERRIDES_TAG: " ".join(overrides) or "(none)", OUTPUT_DIR_TAG: str(out.resolve()),
            COMMAND_TAG: " ".join(sys.argv)}
    for key in (OBJECTIVE_TAG, DATA_CHECKSUM_TAG, GIT_COMMIT_TAG):
        if key in old.data.tags:
            tags[key] = old.data.tags[key]
    run_id = tracker.start(run_name(run, overrides), logged_params(without_skip(run)), tags)
    # the old run's summary values (no curves: a single point would draw as one)
    tracker.log_metrics({k: v for k, v in names.renamed(old.data.metrics).items() if names.is_summary(k)}, 0)
    tracker.end("FINISHED")
    return run_id
