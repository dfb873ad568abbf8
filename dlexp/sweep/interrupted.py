"""A sweep stopped by Ctrl-C / SIGTERM, in its launching process (after :mod:`dlexp.interrupt` has stopped
and killed the processes it started): nothing of it left running.

* :func:`cancel_cluster_jobs`: a SLURM sweep's jobs run on the cluster, not under this process: they are
  cancelled (``scancel``: SLURM sends each job SIGTERM, its run saves its state and ends KILLED) and
  waited for, at most :data:`dlexp.interrupt.GRACE_S`.
* :func:`end_running_children`: a child run whose process was killed before it could end it (a worker
  killed while its run was being created) ends KILLED too, so none is left RUNNING for the table to rank;
  ``trainer.resume=auto`` continues it (from its last saved state, if any).
"""
import logging
import re
import shutil
import subprocess
import time

from .. import interrupt
from ..tracking.contract import PARENT_TAG, STOPPED_TAG

log = logging.getLogger("dlexp")


def cancel_cluster_jobs(sweep_dir, busy) -> None:
    """``scancel`` the SLURM jobs of the sweep (their ids: ``<sweep dir>/.submitit/<job id>``), then wait
    while ``busy()`` (a child run still RUNNING)."""
    ids = sorted({p.name.split("_")[0] for p in (sweep_dir / ".submitit").glob("*")
                  if re.fullmatch(r"\d+(_\d+)?", p.name)})
    if not ids or not shutil.which("scancel"):
        return
    try:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("could not cancel the sweep's SLURM jobs %s: %s", " ".join(ids), e)
        return
    deadline = time.monotonic() + interrupt.GRACE_S
    while time.monotonic() < deadline and busy():
        time.sleep(0.5)


def end_running_children(tracker, why: str) -> None:
    """Every child of the tracker's (parent) run still RUNNING: KILLED, tagged with why."""
    running = tracker.client.search_runs([tracker.experiment_id], f"tags.`{PARENT_TAG}` = '{tracker.run_id}' and "
                                         "attributes.status = 'RUNNING'", max_results=1000)
    for run in running:
        tracker.client.set_tag(run.info.run_id, STOPPED_TAG, f"stopped with its sweep ({why})")
        tracker.client.set_terminated(run.info.run_id, "KILLED")
        log.info("run %s ended KILLED with its sweep", run.info.run_id)
