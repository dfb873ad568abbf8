"""Sweeps: one MLflow parent run per multirun, its jobs nested under it, and a ranked table.

* :mod:`.context` - a job's sweep: its parent run id (``<sweep dir>/mlflow_parent_run_id``), the tag
  names, and the command line's swept and fixed overrides.
* :mod:`.callback` - ``MlflowSweep``, the Hydra callback (``hydra.callbacks.mlflow_sweep`` in
  ``conf/config.yaml``): checks every job's config and creates the parent run before the jobs, records
  each job's end (a failed job does not stop the sweep), ranks and logs the children at the end.
* :mod:`.precheck` - ``check_jobs(config)``: every job of a multirun composed and validated before the
  first one trains.
* :mod:`.jobs` - how the jobs ended, recorded in the sweep dir by each job; ``multirun_outcome()``:
  ``(failed, total)`` of this process's last multirun, for the ``dlexp`` command's exit status.
* :mod:`.failures` - a failed job: its value for the sweeper, its line on stderr, and its FAILED child
  run when it failed before its own run existed.
* :mod:`.table` - ranking by each run's objective (its ``dlexp.objective`` tag) and the table as text,
  Markdown and CSV.
* :mod:`.runs` - a sweep read back from MLflow: its parent, its children, its table.
* :mod:`.pruning` - ``pruner_for(client)``: the run's listener that stops a run falling behind the
  sweep's finished runs (an Optuna pruner named by ``hydra.callbacks.mlflow_sweep.pruner``).
* :mod:`.grid` - a sweep's runs as a grid (each run's value of each key, one cell per combination);
  :mod:`.pivot` - the grid as a matrix (``dlexp-sweep table --pivot KEY1,KEY2``); :mod:`.plots` - the
  pictures logged to the parent at the end (heatmap of two keys, line of one, overlaid curves);
  :mod:`.compare` - sweeps side by side, and each sweep's best value formatted for what it is.
* :mod:`.skip` - ``trainer.skip_finished``: a job whose config FINISHED before returns that result.
* :mod:`.requeue` - on SLURM (submitit), a preempted or timed-out job saves its state, is requeued and
  resumes.
* :mod:`.compose` - the jobs' configs composed once per set of config groups (Hydra composes each job
  from scratch, twice).
* :mod:`.cli` - ``dlexp-sweep table <sweep id | sweep dir | parent run id> [--pivot K1,K2] [--metric M]``
  prints the table (or the pivot) of any sweep later; ``dlexp-sweep list`` lists the sweeps of an
  experiment; ``dlexp-sweep compare <sweep>...`` lines up several sweeps' best runs.
"""
from ..run.pruning import pruner_for
from ..tracking.contract import (CALLBACK_KEY, OBJECTIVE_TAG, PARENT_FILE, PARENT_TAG, PRUNED_TAG, SKIPPED_TAG,
                                 SWEEP_TAG, parent_run_id, sweep_overrides)
from .callback import MlflowSweep
from .cli import main
from .jobs import multirun_outcome
from .runs import children_of, find_parent, sweep_table
from .table import TABLE_CSV, TABLE_MD, objective, rank, table_csv, table_markdown, table_text

__all__ = ["MlflowSweep", "main", "multirun_outcome", "parent_run_id", "sweep_overrides", "pruner_for",
           "children_of", "find_parent", "sweep_table", "objective", "rank", "table_text", "table_markdown",
           "table_csv", "SWEEP_TAG", "PARENT_TAG", "PARENT_FILE", "OBJECTIVE_TAG", "PRUNED_TAG", "SKIPPED_TAG",
           "CALLBACK_KEY", "TABLE_CSV", "TABLE_MD"]
