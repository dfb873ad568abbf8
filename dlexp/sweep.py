"""Sweeps: one MLflow parent run per multirun, its jobs nested under it, and a ranked table.

``MlflowSweep`` is a Hydra callback (``hydra.callbacks.mlflow_sweep`` in ``conf/config.yaml``):

* ``on_multirun_start`` (the launching process, before any job) creates the parent run through
  :mod:`dlexp.tracking`, so it resolves the store exactly as the jobs do (``tracking.uri``, then
  ``$MLFLOW_TRACKING_URI``, then ``sqlite:///outputs/mlflow.db``) and a fresh sqlite store is created
  once, before parallel jobs open it. The run id goes to ``<sweep dir>/mlflow_parent_run_id``, where
  every job finds it (:func:`parent_run_id`) wherever it runs (joblib worker, SLURM node, ...), and
  tags its run ``mlflow.parentRunId``.
* ``on_multirun_end`` collects the children, ranks them by best validation error (or, for models
  without a supervised stage, by their final pretraining cost), prints the table, logs it to the
  parent as ``sweep_table.csv`` / ``sweep_table.md`` (and as the run's description), logs the best
  child's metrics to the parent, and ends it FINISHED, or FAILED if a child failed. A sweep that dies
  before its end still ends its parent (FAILED), from an ``atexit`` hook.
* ``on_job_end`` (in the job's process) turns a run stopped by the sweep's pruner into a completed job
  whose value is its best validation error so far, so the sweeper (Optuna's or the basic one) carries on.

Pruning (``hydra.callbacks.mlflow_sweep.pruner``: an Optuna pruner to instantiate, e.g.
``optuna.pruners.MedianPruner``): at each validation a job reports ``valid_error`` to an Optuna trial
whose study holds the validation curves of the sweep's finished runs, read from MLflow; when the
pruner says so, the run stops, is marked KILLED and tagged ``dlexp.pruned``.

``dlexp-sweep table <sweep id | sweep dir | parent run id>`` prints the table of any sweep later;
``dlexp-sweep list`` lists the sweeps of an experiment.
"""
import argparse
import atexit
import csv
import io
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra < 1.1
    Callback = object

log = logging.getLogger("dlexp")

PARENT_FILE = "mlflow_parent_run_id"
SWEEP_TAG = "dlexp.sweep_id"
PARENT_TAG = "mlflow.parentRunId"
CALLBACK_KEY = "mlflow_sweep"
TABLE_CSV = "sweep_table.csv"
TABLE_MD = "sweep_table.md"


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


# ------------------------------------------------------------------ the config
def _short(target) -> str:
    """hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher -> JoblibLauncher."""
    return str(target or "").rsplit(".", 1)[-1]


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


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------- the table
def objective(children) -> tuple:
    """(metric, direction) to rank by: best_valid_error, or final_cost for pretraining-only models."""
    if any("best_valid_error" in r.data.metrics for r in children) or not children:
        return "best_valid_error", "min"
    # an RBM trained with PCD reports the log pseudo-likelihood (higher is better); other costs are losses
    rbm_pcd = all(r.data.params.get("model.name") == "rbm" and r.data.params.get("model.persistent") == "True"
                  for r in children)
    return "final_cost", "max" if rbm_pcd else "min"


def _override_values(run, keys) -> str:
    """The run's values of the swept keys, as ``key=value`` (from its overrides tag, else its params)."""
    tag = run.data.tags.get("dlexp.overrides", "")
    # split "a=1 b=[1, 2] c=x" at the spaces that start a new key=
    parts = [p for p in re.split(r" (?=[+~]{0,2}[\w./@-]+=)", tag) if p and p != "(none)"]
    if not keys:
        return " ".join(parts)
    found = {_key(p): p.lstrip("+~") for p in parts}
    shown = []
    for k in keys:
        if k in found:
            shown.append(found[k])
        elif k in run.data.params:
            shown.append(f"{k}={run.data.params[k]}")
        elif f"{k}.name" in run.data.params:  # a config group: model=mlp
            shown.append(f"{k}={run.data.params[f'{k}.name']}")
    return " ".join(shown)


def _seconds(run):
    m = run.data.metrics
    if "train_seconds" in m or "pretrain_seconds" in m:
        return m.get("train_seconds", 0.0) + m.get("pretrain_seconds", 0.0)
    if run.info.end_time and run.info.start_time:
        return (run.info.end_time - run.info.start_time) / 1000
    return None


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _status(run) -> str:
    if run.data.tags.get("dlexp.pruned"):
        return "PRUNED"
    return run.info.status


def rank(children, keys=()) -> tuple:
    """Rows best first: rank, overrides, the objective, test error, epochs, seconds, status, run."""
    metric, direction = objective(children)
    sign = -1 if direction == "max" else 1

    def sort_key(run):
        value = run.data.metrics.get(metric)
        missing = value is None or math.isnan(value)
        return (missing, _status(run) == "PRUNED", 0.0 if missing else sign * value, run.info.start_time or 0)

    rows = []
    for i, run in enumerate(sorted(children, key=sort_key), 1):
        m = run.data.metrics
        rows.append({
            "rank": i,
            "overrides": _override_values(run, keys),
            metric: m.get(metric),
            "test_error": m.get("final_test_error"),
            "epochs": m.get("epochs", _float(run.data.params.get("model.pretrain_epochs"))),
            "seconds": _seconds(run),
            "status": _status(run),
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
        })
    return rows, metric


def _short_numbers(overrides: str) -> str:
    """optimizer.lr=0.0003754553966912878 -> optimizer.lr=0.0003755 (Optuna's samples, for reading)."""
    def short(m):
        text = m.group(0)
        return f"{float(text):.4g}" if len(text) > 8 else text
    return re.sub(r"(?<==)-?\d*\.\d+(?:[eE][-+]?\d+)?(?=\s|$)", short, overrides)


def _fmt(key, value) -> str:
    if key == "overrides":
        return _short_numbers(value or "")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in ("best_valid_error", "test_error"):
        return f"{100 * value:.2f} %"
    if key == "epochs":
        return f"{value:.0f}"
    if key == "seconds":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


HEADERS = {"rank": "rank", "overrides": "overrides", "best_valid_error": "best valid error",
           "final_cost": "final cost", "test_error": "test error", "epochs": "epochs", "seconds": "seconds",
           "status": "status", "run_id": "run"}


def _columns(metric):
    return ["rank", "overrides", metric, "test_error", "epochs", "seconds", "status", "run_id"]


def table_text(rows, metric) -> str:
    cols = _columns(metric)
    cells = [[HEADERS[c] for c in cols]]
    cells += [[_fmt(c, r[c]) if c != "run_id" else r[c][:12] for c in cols] for r in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(cols))]
    left = {"overrides", "status", "run_id"}
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(v.ljust(w) if cols[j] in left else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths)))
                     .rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table_markdown(rows, metric) -> str:
    cols = _columns(metric)
    out = ["| " + " | ".join(HEADERS[c] for c in cols) + " |",
           "| " + " | ".join("---" if c in ("overrides", "status", "run_id") else "---:" for c in cols) + " |"]
    for r in rows:
        out.append("| " + " | ".join((f"`{_fmt(c, r[c])}`" if r[c] else "") if c == "overrides" else _fmt(c, r[c])
                                     for c in cols) + " |")
    return "\n".join(out) + "\n"


def table_csv(rows, metric) -> str:
    buf = io.StringIO()
    cols = _columns(metric) + ["run_name"]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: "" if r[c] is None else r[c] for c in cols})
    return buf.getvalue()


# ------------------------------------------------------------ reading a sweep
def children_of(client, parent) -> list:
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                                  run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_parent(client, ref: str):
    """A sweep's parent run from its run id, its sweep id (tag), or its sweep directory."""
    from mlflow.entities import ViewType

    path = Path(ref) / PARENT_FILE
    if path.is_file():
        ref = path.read_text().strip()
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        try:
            return client.get_run(ref)
        except Exception:
            pass
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    for i in range(0, len(experiments), 100):
        quoted = ref.replace("'", "\\'")
        runs = client.search_runs(experiments[i:i + 100], f"tags.`{SWEEP_TAG}` = '{quoted}'",
                                  run_view_type=ViewType.ALL, order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            return runs[0]
    raise LookupError(f"no sweep {ref!r}: not a parent run id, a sweep id or a sweep directory")


def sweep_table(client, parent):
    """(rows, metric, children) of a sweep's parent run."""
    children = children_of(client, parent)
    keys = [k for k in parent.data.params.get("sweep.keys", "").split(",") if k]
    rows, metric = rank(children, keys)
    return rows, metric, children


# ----------------------------------------------------------------- the callback
class MlflowSweep(Callback):
    """Hydra callback: a multirun is one MLflow parent run, with a ranked table at its end."""

    def __init__(self, pruner=None, print_table: bool = True, **_):
        self.print_table = print_table
        self.tracker = None
        self.sweep_dir = None
        self.keys = []
        self._open = False

    def __getstate__(self):
        """Launchers pickle the callbacks into each job (joblib, submitit): the parent's client stays here."""
        return {**self.__dict__, "tracker": None, "_open": False}

    # the launching process --------------------------------------------------
    def on_multirun_start(self, config, **kwargs) -> None:
        tracking = config.get("tracking")
        if tracking is None or not tracking.get("enabled", True):
            return
        from omegaconf import OmegaConf

        from .tracking import Tracker, resolve_uri

        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        swept, fixed = sweep_overrides(config)
        self.keys = list(dict.fromkeys(_key(o) for o in swept))
        launcher, sweeper = config.hydra.launcher, config.hydra.sweeper
        params = {
            "sweep.sweeper": _short(sweeper.get("_target_")),
            "sweep.launcher": _short(launcher.get("_target_")),
            "sweep.params": " ".join(swept) or "(none)",
            "sweep.fixed": " ".join(o for o in fixed if not o.startswith("hydra")) or "(none)",
            "sweep.keys": ",".join(self.keys),
            "sweep.dir": str(self.sweep_dir),
        }
        for key in ("n_jobs", "n_trials", "direction", "array_parallelism", "partition"):
            for node in (launcher, sweeper):
                if key in node and node.get(key) is not None:
                    params[f"sweep.{key}"] = node.get(key)
        sweep_id = str(self.sweep_dir)
        tags = {
            SWEEP_TAG: sweep_id,
            "dlexp.sweep_dir": str(self.sweep_dir.resolve()),
            "dlexp.sweep": "parent",
            "dlexp.overrides": " ".join(config.hydra.overrides.task) or "(none)",
            "dlexp.command": " ".join(sys.argv),
            "dlexp.git_commit": git_commit(),
        }
        model = OmegaConf.select(config, "model.name", default="?")
        dataset = OmegaConf.select(config, "dataset.name", default="?")
        name = " ".join(["sweep", str(model), str(dataset), *swept])[:240]
        self.tracker = Tracker(resolve_uri(tracking.get("uri")), tracking.get("experiment", "dlexp"))
        run_id = self.tracker.start(name, params, tags)
        self._open = True
        atexit.register(self._abort)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        (self.sweep_dir / PARENT_FILE).write_text(run_id + "\n")
        config_file = self.sweep_dir / "sweep_config.yaml"
        config_file.write_text(OmegaConf.to_yaml(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
                               + OmegaConf.to_yaml({"hydra": {"sweeper": OmegaConf.to_container(sweeper),
                                                              "launcher": OmegaConf.to_container(launcher),
                                                              "overrides": OmegaConf.to_container(
                                                                  config.hydra.overrides)}}))
        self.tracker.log_artifact(config_file)
        log.info("MLflow sweep: parent run %s in %s (sweep id %s)", run_id, self.tracker.uri, sweep_id)

    def on_multirun_end(self, config, **kwargs) -> None:
        if self._open:
            self._finish(aborted=False)

    def _abort(self) -> None:
        """atexit: the sweep stopped before its end (a job raised, Ctrl-C): end the parent anyway."""
        if self._open:
            try:
                self._finish(aborted=True)
            except Exception as e:  # at exit, never raise
                print(f"dlexp: could not end the sweep's parent run: {e}", file=sys.stderr)

    def _finish(self, aborted: bool) -> None:
        self._open = False
        tracker = self.tracker
        client = tracker.client
        parent = client.get_run(tracker.run_id)
        rows, metric, children = sweep_table(client, parent)
        counts = {s: sum(r["status"] == s for r in rows) for s in ("FINISHED", "FAILED", "KILLED", "PRUNED", "RUNNING")}
        for name in ("optimization_results.yaml", "multirun.yaml"):
            if (self.sweep_dir / name).is_file():
                tracker.log_artifact(self.sweep_dir / name)
        text = table_text(rows, metric)
        md = table_markdown(rows, metric)
        (self.sweep_dir / TABLE_CSV).write_text(table_csv(rows, metric))
        (self.sweep_dir / TABLE_MD).write_text(md)
        tracker.log_artifact(self.sweep_dir / TABLE_CSV)
        tracker.log_artifact(self.sweep_dir / TABLE_MD)
        summary = {"sweep.runs": len(rows), **{f"sweep.{s.lower()}": n for s, n in counts.items()}}
        tags = {"mlflow.note.content": f"Sweep `{tracker.run_id}`, ranked by {metric}:\n\n{md}"}
        best = next((r for r in rows if r[metric] is not None and r["status"] != "PRUNED"), None)
        if best is not None:
            best_run = next(c for c in children if c.info.run_id == best["run_id"])
            summary.update(best_run.data.metrics)
            tags.update({"dlexp.best_run_id": best["run_id"], "dlexp.best_overrides": best["overrides"] or "(none)",
                         "dlexp.ranked_by": metric})
        tracker.log_metrics(summary, 0)
        tracker.set_tags(tags)
        # a pruned run was stopped on purpose; a failed, killed (Ctrl-C, SIGTERM) or still running one was not
        failed = aborted or not rows or any(counts[s] for s in ("FAILED", "KILLED", "RUNNING"))
        tracker.end("FAILED" if failed else "FINISHED")
        if self.print_table:
            out = sys.stdout
            print(f"\nSweep {self.sweep_dir} - parent run {tracker.run_id} ({'FAILED' if failed else 'FINISHED'}), "
                  f"{len(rows)} runs ranked by {metric}:", file=out)
            print(text, file=out)
            if best is not None:
                print(f"best: {_fmt('overrides', best['overrides']) or best['run_name']} (run {best['run_id']})",
                      file=out)
            print(f"table: {self.sweep_dir / TABLE_MD}; later: dlexp-sweep table {tracker.run_id} "
                  f"--tracking-uri {tracker.uri}", file=out, flush=True)

    # the job's process ---------------------------------------------------------
    def on_job_end(self, config, job_return, **kwargs) -> None:
        """A run stopped by the pruner is a completed job: its value is its best validation error so far."""
        from hydra.core.utils import JobStatus

        error = getattr(job_return, "_return_value", None)
        if job_return.status == JobStatus.FAILED and type(error).__name__ == "TrialPruned":
            job_return.status = JobStatus.COMPLETED
            job_return.return_value = getattr(error, "value", float("inf"))
            log.info("run pruned: %s", error)


# -------------------------------------------------------------------- pruning
def pruner_for(tracker):
    """In a sweep whose callback names a ``pruner``: a hook ``hook(metrics, step)`` for the tracker."""
    from hydra.core.hydra_config import HydraConfig

    parent = parent_run_id()
    if not parent:
        return None
    callbacks = HydraConfig.get().get("callbacks") or {}
    spec = (callbacks.get(CALLBACK_KEY) or {}).get("pruner")
    if not spec:
        return None
    return OptunaPruning(spec, tracker, parent)


class OptunaPruning:
    """Ask an Optuna pruner whether this run falls behind the sweep's finished runs at this step."""

    def __init__(self, spec, tracker, parent: str):
        self.spec, self.tracker, self.parent = spec, tracker, parent
        self.trial = None
        self.best = float("inf")

    def _start(self):
        import optuna
        from hydra.utils import instantiate

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", pruner=instantiate(self.spec))
        client = self.tracker.client
        siblings = children_of(client, client.get_run(self.parent))
        for run in siblings:
            if run.info.status != "FINISHED" or "best_valid_error" not in run.data.metrics:
                continue
            history = client.get_metric_history(run.info.run_id, "valid_error")
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE, value=run.data.metrics["best_valid_error"],
                params={}, distributions={}, intermediate_values={h.step: h.value for h in history}))
        self.trial = study.ask()

    def __call__(self, metrics: dict, step: int) -> None:
        import optuna

        if self.trial is None:
            self._start()
        value = float(metrics["valid_error"])
        self.best = min(self.best, value)
        self.trial.report(value, step)
        if self.trial.should_prune():
            error = optuna.TrialPruned(f"valid_error {value:.4f} at step {step} behind the sweep's finished runs")
            error.value = self.best
            raise error


# ------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    """``dlexp-sweep``: the ranked table of a sweep, or the list of sweeps, from an MLflow store."""
    from .tracking import RetryingClient, resolve_uri

    ap = argparse.ArgumentParser(prog="dlexp-sweep", description=main.__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="the ranked table of one sweep")
    t.add_argument("sweep", help="the parent run id, the sweep id (its sweep dir as logged), or the sweep directory")
    t.add_argument("--format", choices=("text", "md", "csv"), default="text")
    t.add_argument("--output", help="write the table to this file too")
    ls = sub.add_parser("list", help="the sweeps of an experiment, newest first")
    ls.add_argument("--experiment", default="dlexp")
    ls.add_argument("--max", type=int, default=20)
    for p in (t, ls):
        p.add_argument("--tracking-uri", help="the MLflow store (default: $MLFLOW_TRACKING_URI, else "
                                              "sqlite:///outputs/mlflow.db)")
    args = ap.parse_args(argv)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        db = Path("outputs") / "mlflow.db"
        if not db.exists():
            print(f"dlexp-sweep: error: no store: {db} does not exist (give --tracking-uri)", file=sys.stderr)
            return 2
        uri = resolve_uri()
    client = RetryingClient(uri)
    if args.command == "list":
        exp = client.get_experiment_by_name(args.experiment)
        if exp is None:
            print(f"dlexp-sweep: error: no experiment {args.experiment!r} in {uri}", file=sys.stderr)
            return 2
        parents = client.search_runs([exp.experiment_id], f"tags.`{SWEEP_TAG}` != ''",
                                     order_by=["attributes.start_time DESC"], max_results=args.max)
        for p in parents:
            best = p.data.metrics.get("best_valid_error", p.data.metrics.get("final_cost"))
            print(f"{p.info.run_id}  {p.info.status:8}  {p.data.tags.get(SWEEP_TAG)}  "
                  f"{int(p.data.metrics.get('sweep.runs', 0))} runs  best {_fmt('best_valid_error', best)}  "
                  f"{p.data.params.get('sweep.params', '')}")
        return 0
    try:
        parent = find_parent(client, args.sweep)
    except LookupError as e:
        print(f"dlexp-sweep: error: {e}", file=sys.stderr)
        return 2
    rows, metric, _ = sweep_table(client, parent)
    text = {"text": table_text, "md": table_markdown, "csv": table_csv}[args.format](rows, metric)
    if args.format == "text":
        print(f"Sweep {parent.data.tags.get(SWEEP_TAG, '?')} - parent run {parent.info.run_id} "
              f"({parent.info.status}), {len(rows)} runs ranked by {metric}:")
    print(text.rstrip("\n"))
    if args.output:
        Path(args.output).write_text(text if text.endswith("\n") else text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
