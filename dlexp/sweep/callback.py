"""``MlflowSweep``, the Hydra callback (``hydra.callbacks.mlflow_sweep`` in ``conf/config.yaml``):

* ``on_multirun_start`` (the launching process, before any job) gives Hydra's config loader the fast
  composition of :mod:`dlexp.sweep.compose`, then composes and validates every
  job's config (:mod:`dlexp.sweep.precheck`): a bad value in a sweep list ends the command with one
  line and exit 2 before any job or run exists (Hydra turns a callback's exception into a warning, so
  this one exits itself). Then it creates the parent run through :mod:`dlexp.tracking.tracker`, so it resolves
  the store exactly as the jobs do (``tracking.uri``, then ``$MLFLOW_TRACKING_URI``, then
  ``sqlite:///outputs/mlflow.db``) and a fresh sqlite store is created once, before parallel jobs open
  it. The run id goes to ``<sweep dir>/mlflow_parent_run_id``, where every job finds it
  (:func:`dlexp.tracking.contract.parent_run_id`).
* ``on_job_start`` (in the job's process): in a submitit job, the preemption signal saves the run and
  requeues the job (:mod:`dlexp.run.requeue`); Optuna's ExperimentalWarnings stay off stderr.
* ``on_job_end`` (in the job's process) records how the job ended (:mod:`dlexp.sweep.jobs`). A failed
  job (divergence, a data error, out of memory, any exception) is a grid outcome: it prints one line,
  gets a FAILED child run if it failed before its run existed (:mod:`dlexp.sweep.failures`), and
  becomes a completed job whose value no sweeper can rank, so the basic sweeper goes on and Optuna's
  marks the trial FAILED and goes on. A run stopped by the sweep's pruner
  (:class:`dlexp.train.result.Pruned`) becomes a completed job whose value is its objective so far.
* ``on_multirun_end`` collects the children, ranks them by their objective (:mod:`dlexp.sweep.table`),
  prints the table, logs it to the parent as ``sweep_table.csv`` / ``sweep_table.md`` (and as the run's
  description), draws the sweep's pictures into the parent's ``images/`` (:mod:`dlexp.sweep.plots`;
  an Optuna sweep's optimisation history and parameter importances, :mod:`dlexp.sweep.study`;
  matplotlib is imported in a thread while the jobs run; ``++hydra.callbacks.mlflow_sweep.plots=false``
  turns them off), logs the best child's metrics to the parent, and ends it FINISHED, or FAILED if no
  job finished (a skipped job, ``trainer.skip_finished``, counts as finished); then says on stderr how
  many jobs failed (the ``dlexp`` command exits 1 when all did, from
  :func:`dlexp.sweep.jobs.multirun_outcome`). A sweep that dies before its end still ends its parent
  (FAILED), from an ``atexit`` hook.
* Ctrl-C / SIGTERM: while the sweep is open, :mod:`dlexp.interrupt` waits for its children to stop being
  RUNNING before the launching process lets its workers be killed; then :func:`stop_open_sweeps` (from
  the ``dlexp`` command) cancels SLURM's jobs, ends any child still RUNNING KILLED
  (:mod:`dlexp.sweep.interrupted`) and the parent KILLED, tagged ``dlexp.stopped`` = ``k of n jobs
  finished``. With ``hydra/launcher=slurm*`` and no accounting, submitit's failing sacct polls (and
  their noise) are not made (:mod:`dlexp.sweep.sacct`).
"""
import atexit
import logging
import sys
import threading
from pathlib import Path

from hydra.experimental.callback import Callback

from .. import interrupt, metric_names as names
from ..longlived import freeze_long_lived
from ..tracking import contract
from ..tracking.contract import (BEST_OVERRIDES_TAG, BEST_RUN_TAG, COMMAND_TAG, GIT_COMMIT_TAG, KEYS_FILE,
                                 OBJECTIVE_TAG, OVERRIDES_TAG, PARENT_FILE, RANKED_BY_TAG, REGISTERED_TAG, ROLE_TAG,
                                 STOPPED_TAG, SWEEP_DIR_TAG, SWEEP_TAG, override_key, parent_run_id, sweep_overrides)
from ..tracking.provenance import git_commit, source_tags
from . import failures, interrupted, jobs, precheck, sacct
from .runs import sweep_table
from .table import TABLE_CSV, TABLE_MD, direction_of, fmt, runs_page, table_csv, table_markdown, table_text

log = logging.getLogger("dlexp")


def _short(target) -> str:
    """hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher -> JoblibLauncher."""
    return str(target or "").rsplit(".", 1)[-1]


def _parent_params(config, swept, fixed, keys, sweep_dir) -> dict:
    """The sweep's config as the parent run's params: sweeper, launcher, what is swept and fixed."""
    launcher, sweeper = config.hydra.launcher, config.hydra.sweeper
    params = {
        "sweep.sweeper": _short(sweeper.get("_target_")),
        "sweep.launcher": _short(launcher.get("_target_")),
        "sweep.params": " ".join(swept) or "(none)",
        "sweep.fixed": " ".join(o for o in fixed if not o.startswith("hydra")) or "(none)",
        "sweep.keys": ",".join(keys),
        "sweep.dir": str(sweep_dir),
    }
    for key in ("n_jobs", "n_trials", "direction", "array_parallelism", "partition"):
        for node in (launcher, sweeper):
            if key in node and node.get(key) is not None:
                params[f"sweep.{key}"] = node.get(key)
    return params


def _write_config(config, path: Path) -> None:
    """The composed config and the sweep's hydra sweeper, launcher and overrides, as one YAML file."""
    from omegaconf import OmegaConf

    hydra = {"sweeper": OmegaConf.to_container(config.hydra.sweeper),
             "launcher": OmegaConf.to_container(config.hydra.launcher),
             "overrides": OmegaConf.to_container(config.hydra.overrides)}
    path.write_text(OmegaConf.to_yaml(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
                    + OmegaConf.to_yaml({"hydra": hydra}))


class MlflowSweep(Callback):
    """Hydra callback: a multirun is one MLflow parent run, with a ranked table at its end.

    Extra keys of the callback's node (``pruner``: read by :func:`dlexp.run.pruning.pruner_for` in
    each job) are accepted and ignored here.
    """

    def __init__(self, print_table: bool = True, plots: bool = True, **_):
        self.print_table = print_table
        self.plots = plots
        self.tracker = None
        self.sweep_dir = None
        self.keys = []
        self.register_as = None
        self.n_jobs = None
        self._open = False
        self._warm = None  # the thread preparing the pictures while the jobs run
        self.total = None  # how many jobs the sweep is to run (trials, for Optuna), if known
        self.slurm = False  # its jobs are SLURM's (hydra/launcher=slurm*), not this machine's processes

    def __getstate__(self):
        """Launchers pickle the callbacks into each job (joblib, submitit): the parent's client stays here."""
        return {**self.__dict__, "tracker": None, "_open": False, "_warm": None}

    def _children_running(self) -> bool:
        """Whether a child run of the parent is RUNNING (what a stopped sweep waits for its workers to end)."""
        return bool(self.tracker.client.search_runs(
            [self.tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{self.tracker.run_id}' and "
            "attributes.status = 'RUNNING'", max_results=1))

    # the launching process --------------------------------------------------
    def on_multirun_start(self, config, **kwargs) -> None:
        _fast_composition()
        _check_cluster_or_exit(config)
        self.n_jobs = _check_jobs_or_exit(config)
        self.total = self.n_jobs  # Optuna: its trials, not its choices
        _check_storage_or_exit(config)
        _quiet_optuna(config)
        self.slurm = str(config.hydra.launcher.get("_target_", "")).endswith(".SlurmLauncher")
        if self.slurm:
            sacct.quiet_if_no_accounting()
        _OPEN.append(self)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        swept, fixed = sweep_overrides(config)
        self.keys = list(dict.fromkeys(override_key(o) for o in swept))
        jobs.start(self.sweep_dir)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        (self.sweep_dir / KEYS_FILE).write_text("".join(k + "\n" for k in self.keys))  # the jobs' run names
        tracking = config.get("tracking")
        if tracking is None or not tracking.get("enabled", True):
            return
        self._start_parent(config, swept, fixed, tracking)

    def _register(self, run_id: str) -> dict:
        """``tracking.register_as``: the best child's model as a new version, with the alias ``best``."""
        from ..tracking.registry import RegistryError, register, serve_command

        try:
            version = register(self.tracker.client, run_id, self.register_as, alias="best")
        except RegistryError as e:
            print(f"dlexp: error: could not register the sweep's best run {run_id}: {e}", file=sys.stderr)
            return {}
        log.info("registered the best run as models:/%s@best (version %s); serve it with: %s", self.register_as,
                 version, serve_command(self.tracker.uri, f"models:/{self.register_as}@best"))
        return {REGISTERED_TAG: f"models:/{self.register_as}@best (version {version})"}

    def _start_parent(self, config, swept, fixed, tracking) -> None:
        """The sweep's parent run, its id in the sweep dir for the jobs, its config as an artifact."""
        from omegaconf import OmegaConf

        from ..tracking.store import resolve_uri
        from ..tracking.tracker import Tracker

        params = _parent_params(config, swept, fixed, self.keys, self.sweep_dir)
        sweep_id = str(self.sweep_dir)
        tags = {
            **source_tags(),  # the UI's "Created by" / source columns, as a single run's
            SWEEP_TAG: sweep_id,
            SWEEP_DIR_TAG: str(self.sweep_dir.resolve()),
            ROLE_TAG: "parent",
            OVERRIDES_TAG: " ".join(config.hydra.overrides.task) or "(none)",
            COMMAND_TAG: " ".join(sys.argv),
            GIT_COMMIT_TAG: git_commit(),
        }
        model = OmegaConf.select(config, "model.name", default="?")
        dataset = OmegaConf.select(config, "dataset.name", default="?")
        name = contract.parent_name(str(model), str(dataset), self.keys, self.n_jobs)
        self.register_as = tracking.get("register_as")
        self.tracker = Tracker(resolve_uri(tracking.get("uri")), tracking.get("experiment", "dlexp"))
        run_id = self.tracker.start(name, params, tags)
        self._open = True
        atexit.register(self._abort)
        interrupt.wait_for(self._children_running)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        (self.sweep_dir / PARENT_FILE).write_text(run_id + "\n")
        _write_config(config, self.sweep_dir / "sweep_config.yaml")
        self.tracker.log_artifact(self.sweep_dir / "sweep_config.yaml")
        log.info("MLflow sweep: parent run %s in %s (sweep id %s)", run_id, self.tracker.uri, sweep_id)
        freeze_long_lived()  # the store and MLflow, before the pictures' imports and the first job
        if self.plots:
            self._warm = threading.Thread(target=_warm_up, args=(self.tracker.client, run_id), daemon=True,
                                          name="dlexp-sweep-pictures")
            self._warm.start()

    def on_multirun_end(self, config, **kwargs) -> None:
        if self._open:
            self._finish(aborted=False)
        _forget(self)
        outcome = jobs.multirun_outcome()
        if outcome and 0 < outcome[0] < outcome[1]:  # all failed: the dlexp command says so, and exits 1
            print(f"dlexp: {outcome[0]} of {outcome[1]} jobs failed (see the table)", file=sys.stderr, flush=True)

    def _abort(self) -> None:
        """atexit: the sweep stopped before its end (a job raised, Ctrl-C): end the parent anyway."""
        if self._open:
            try:
                self._finish(aborted=True)
            except Exception as e:  # at exit, never raise
                print(f"dlexp: could not end the sweep's parent run: {e}", file=sys.stderr)

    def stop(self, why: str) -> str:
        """Ctrl-C / SIGTERM (the workers already stopped, :func:`stop_open_sweeps`): SLURM's jobs cancelled and
        waited for, a child still RUNNING ended KILLED, the parent KILLED; returns ``k of n jobs finished``."""
        _forget(self)
        if self._open and self.slurm:
            interrupted.cancel_cluster_jobs(self.sweep_dir, self._children_running)
        ended = jobs.records(self.sweep_dir)
        finished = sum(r["status"] == jobs.COMPLETED for r in ended)
        text = f"{finished} of {self.total} jobs finished" if self.total else f"{finished} jobs finished"
        if self._open:
            interrupted.end_running_children(self.tracker, why)
            self._finish(aborted=True, stopped=f"{text} ({why})")
        return text

    def _finish(self, aborted: bool, stopped: str = None) -> None:
        """The table, pictures and metrics logged to the parent, then its end (open until then: a Ctrl-C while
        the table is drawn still ends it, KILLED)."""
        tracker = self.tracker
        parent = tracker.client.get_run(tracker.run_id)
        rows, metric, children = sweep_table(tracker.client, parent)
        counts = {s: sum(r["status"] == s for r in rows)
                  for s in ("FINISHED", "FAILED", "KILLED", "PRUNED", "SKIPPED", "RUNNING")}
        for name in ("optimization_results.yaml", "multirun.yaml"):
            if (self.sweep_dir / name).is_file():
                tracker.log_artifact(self.sweep_dir / name)
        md = table_markdown(rows, metric, runs_page(tracker.uri, parent.info.experiment_id))
        (self.sweep_dir / TABLE_CSV).write_text(table_csv(rows, metric))
        (self.sweep_dir / TABLE_MD).write_text(md)
        tracker.log_artifact(self.sweep_dir / TABLE_CSV)
        tracker.log_artifact(self.sweep_dir / TABLE_MD)
        self._log_pictures(parent, rows, children)
        summary = {"sweep.runs": len(rows), **{f"sweep.{s.lower()}": n for s, n in counts.items()}}
        tags = {"mlflow.note.content": f"Sweep `{tracker.run_id}`, ranked by {metric}:\n\n{md}",
                OBJECTIVE_TAG: contract.objective_tag(metric, direction_of(children, metric))}
        best = next((r for r in rows if r[metric] is not None and r["status"] != "PRUNED"), None)
        if best is not None:
            best_run = next(c for c in children if c.info.run_id == best["run_id"])
            # its summary values (best/, final/: numbers in the UI), not its curves' last points, which
            # would draw as an extra series beside the children's curves
            summary.update({k: v for k, v in names.renamed(best_run.data.metrics).items() if names.is_summary(k)})
            tags.update({BEST_RUN_TAG: best["run_id"], BEST_OVERRIDES_TAG: best["overrides"] or "(none)",
                         RANKED_BY_TAG: metric})
            if self.register_as:
                tags.update(self._register(best["run_id"]))
        tracker.log_metrics(summary, 0)
        tracker.set_tags({**tags, **({STOPPED_TAG: stopped} if stopped else {})})
        # failed jobs are outcomes of the sweep; a sweep that stopped early, or where no job finished, failed
        failed = aborted or not (counts["FINISHED"] or counts["PRUNED"] or counts["SKIPPED"]) or counts["RUNNING"] > 0
        self._open = False
        if stopped:  # by the user, resumable: KILLED, with how far it got; its table is in the run
            tracker.end("KILLED")
            return
        tracker.end("FAILED" if failed else "FINISHED")
        if self.print_table:
            self._print(rows, metric, best, "FAILED" if failed else "FINISHED")

    def _log_pictures(self, parent, rows, children) -> None:
        """The heatmap / line plot and the overlaid curves (:mod:`dlexp.sweep.plots`) in the parent's images/."""
        if not self.plots:
            return
        if self._warm is not None:
            self._warm.join(timeout=60)
        try:
            from .plots import pictures
            from .study import study_pictures

            out = self.sweep_dir / "images"
            for path in pictures(self.tracker.client, parent, rows, children, self.keys, out):
                self.tracker.log_artifact(path, "images")
            for path in study_pictures(parent, children, self.keys, out):
                self.tracker.log_artifact(path, "images")
        except Exception as e:  # a picture is not worth a failed sweep
            log.warning("could not draw the sweep's pictures: %s: %s", type(e).__name__, e)

    def _print(self, rows, metric, best, status: str) -> None:
        tracker, out = self.tracker, sys.stdout
        print(f"\nSweep {self.sweep_dir} - parent run {tracker.run_id} ({status}), "
              f"{len(rows)} runs ranked by {metric}:", file=out)
        print(table_text(rows, metric), file=out)
        if best is not None:
            print(f"best: {fmt('overrides', best['overrides']) or best['run_name']} (run {best['run_id']})", file=out)
        print(f"table: {self.sweep_dir / TABLE_MD}; later: dlexp-sweep table {tracker.run_id} "
              f"--tracking-uri {tracker.uri}", file=out, flush=True)

    # the job's process ---------------------------------------------------------
    def on_job_start(self, config, **kwargs) -> None:
        """In a submitit job (SLURM, or its local executor), a preemption saves the run and requeues the job
        (:mod:`dlexp.run.requeue`); Optuna's experimental-feature warnings stay off stderr."""
        from ..run import requeue

        requeue.take_over()
        _quiet_optuna_warnings()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        """Record the job's end; a failed or pruned job becomes a completed one, so the sweep goes on.
        (Hydra calls this after a single run too: that one is the ``dlexp`` command's to report.)"""
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        from ..train.result import Pruned

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return
        num, overrides = hc.job.num, list(job_return.overrides or [])
        error = getattr(job_return, "_return_value", None)
        if job_return.status != JobStatus.FAILED:
            jobs.record(hc.sweep.dir, num, jobs.COMPLETED, " ".join(overrides))
        elif isinstance(error, Pruned):
            job_return.status, job_return.return_value = JobStatus.COMPLETED, error.value
            jobs.record(hc.sweep.dir, num, jobs.PRUNED, " ".join(overrides), str(error))
            log.info("run pruned: %s", error)
        else:
            why = failures.reason(error)
            job_return.status, job_return.return_value = JobStatus.COMPLETED, failures.FailedJob(why)
            jobs.record(hc.sweep.dir, num, jobs.FAILED, " ".join(overrides), why)
            print(failures.error_line(num, failures.shown_overrides(overrides, self.keys), why), file=sys.stderr,
                  flush=True)
            self._record_failed_run(config, overrides, f"{type(error).__name__}: {' '.join(str(error).split())}")

    def _record_failed_run(self, config, overrides, why: str) -> None:
        """A FAILED child run for a job that failed before its run existed; never fails the job's end."""
        parent = parent_run_id()
        if not parent:  # tracking off, or no parent
            return
        try:
            failures.record_failed_run(config, parent, overrides, why)
        except Exception as e:  # e.g. the store is what failed: the line on stderr and the record stay
            log.warning("could not record the failed job in MLflow: %s", e)


_OPEN = []  # this process's sweeps that have started and not ended


def _forget(sweep) -> None:
    if sweep in _OPEN:
        _OPEN.remove(sweep)
    if sweep.tracker is not None:
        interrupt.forget(sweep._children_running)


def stop_open_sweeps(why: str) -> list:
    """Ctrl-C / SIGTERM: each open sweep of this process ended KILLED; what each says (``k of n jobs finished``)."""
    return [sweep.stop(why) for sweep in list(_OPEN)]


def _warm_up(client, run_id: str) -> None:
    """In a thread while the jobs run (they wait on the store, the GIL is free): matplotlib imported with its
    font, MLflow's metric-history query compiled, so the pictures at the end cost only their drawing."""
    try:
        from .plots import warm_up

        warm_up()
        client.get_metric_history(run_id, names.VALID_ERROR)
    except Exception as e:  # the pictures will say what is wrong, if anything
        log.debug("pictures warm-up: %s", e)


def _fast_composition() -> None:
    """Each job's config from one composition per set of config groups (:mod:`dlexp.sweep.compose`)."""
    from hydra.core.global_hydra import GlobalHydra

    from . import compose

    if GlobalHydra.instance().is_initialized():
        compose.install(GlobalHydra.instance().config_loader())


def _quiet_optuna(config) -> None:
    """Optuna logs its study's creation on stderr, which is for errors: warnings and up only; and its
    ExperimentalWarnings (a sampler option, a pruner, trials added by hand) are not errors either."""
    if "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower():
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _quiet_optuna_warnings()


def _quiet_optuna_warnings() -> None:
    if "optuna" in sys.modules:  # imported by the sweeper or a pruner: never import it for this
        import warnings

        from optuna.exceptions import ExperimentalWarning

        warnings.filterwarnings("ignore", category=ExperimentalWarning)


def _check_cluster_or_exit(config) -> None:
    """``hydra/launcher=slurm*`` needs SLURM's commands (submitit submits with ``sbatch``): without them
    the command ends here, in one line with exit 2, before the parent run or any job exists."""
    import shutil

    target = str(config.hydra.launcher.get("_target_", ""))
    if target.endswith(".SlurmLauncher") and not (shutil.which("sbatch") and shutil.which("srun")):
        print("dlexp: error: hydra/launcher=slurm needs a SLURM cluster: no sbatch / srun on PATH; "
              "allowed here: hydra/launcher=slurm_local (the same jobs through submitit's local executor), "
              "joblib or basic", file=sys.stderr, flush=True)
        raise SystemExit(2)


def _check_storage_or_exit(config) -> None:
    """``hydra.sweeper.storage``: a study storage this Optuna cannot open ends the command here, in one
    line with exit 2, before the parent run exists (:mod:`dlexp.sweep.optuna_setup`)."""
    if "optuna" not in str(config.hydra.sweeper.get("_target_", "")).lower():
        return
    import os

    from ..tracking.store import default_store
    from .optuna_setup import storage_problem

    tracking = config.get("tracking") or {}
    uri = tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_store()}"
    problem = storage_problem(config.hydra.sweeper.get("storage"), uri)
    if problem:
        print(f"dlexp: error: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)


def _check_jobs_or_exit(config):
    """Every job's config composed and validated; a bad one ends the command here, with one line and
    exit 2 (Hydra would turn an exception raised by a callback into a warning and run the jobs). Returns
    how many jobs the sweep will run (the basic sweeper's grid, a sampler's ``n_trials``) or None."""
    from ..config import ConfigError

    try:
        n = precheck.check_jobs(config)
    except ConfigError as e:
        print(f"dlexp: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except Exception as e:  # a fault of the check itself: each job still validates its own config
        log.warning("could not check the sweep's jobs before they start: %s: %s", type(e).__name__, e)
        return None
    log.debug("the configs of the sweep's %d jobs are valid", n)
    basic = str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper")
    return n if basic else config.hydra.sweeper.get("n_trials")
