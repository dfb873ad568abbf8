"""``python bench/sweep_run.py [--without PART]... [--breakdown] -- <dlexp arguments>``: ``dlexp``, in this process.

Run as a script (not ``-m bench...``), so the ``dlexp`` it imports is the one first on PYTHONPATH (an
older copy, for a before / after comparison). ``--without model-logging`` (or ``lineage``,
``hydra-logs``) replaces that part of a run by nothing, where the code has it, to measure a run
without it. ``--breakdown`` wraps the named parts of a job (Hydra's composition and job set-up, config
checks, data, the MLflow calls by kind, checkpoint, images, training, provenance) and of the sweep (the
check of every job, the parent run, the table and pictures) in timers, runs ``dlexp`` with the given
arguments, and prints one JSON line {part: {"seconds", "calls", "first" (its first call's seconds)},
"wall": seconds}. Parts nest (training is inside the job); "Hydra: job set-up" is Hydra's ``run_job``
less the task inside it. Used by :mod:`bench.sweep_overhead`.
"""
import collections
import functools
import importlib
import json
import sys
import time

TOTAL = collections.defaultdict(float)
CALLS = collections.Counter()
FIRST = {}  # part -> seconds of its first call (imports, caches: paid once a process)
_stack = []

PARTS = [  # (module, attribute, part); the first found of a part's alternatives is wrapped
    ("hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_sweep_config", "Hydra: compose job configs"),
    ("dlexp.sweep.compose", "FastSweepLoader.load_sweep_config", "Hydra: compose job configs"),
    ("hydra.core.utils", "run_job", "(job in all)"),
    ("dlexp.cli", "_job", "(task)"),
    ("dlexp.config", "validate", "config validation"),
    ("dlexp.run.preflight", "load_dataset", "data loading"),
    ("dlexp.run.preflight", "to_device", "data to device"),
    ("dlexp.run.preflight", "build_model", "model built"),
    ("dlexp.tracking.tracker", "Tracker.__init__", "store opened (client, experiment)"),
    ("dlexp.run.lifecycle", "git_commit", "provenance (git commit, versions)"),
    ("dlexp.run.lifecycle", "versions", "provenance (git commit, versions)"),
    ("dlexp.run.artifacts", "save_checkpoint", "checkpoint written"),
    ("dlexp.run.artifacts", "save_images", "images (drawn and logged)"),
    ("dlexp.run.phases", "fit_sgd", "training"),
    ("dlexp.sweep.callback", "_check_jobs_or_exit", "sweep: every job's config checked first"),
    ("dlexp.sweep.callback", "MlflowSweep._start_parent", "sweep: parent run started"),
    ("dlexp.sweep.callback", "MlflowSweep._finish", "sweep: table, pictures, parent ended"),
    ("dlexp.sweep.callback", "MlflowSweep.on_job_end", "job end recorded"),
    ("dlexp.tracking.mlmodel", "log_model", "MLflow model logged (dlexp.tracking.mlmodel)"),
    ("dlexp.tracking.lineage", "log_dataset_inputs", "dataset inputs logged (dlexp.tracking.lineage)"),
    ("dlexp.run.lifecycle", "_close", "Hydra's log and .hydra/ uploaded"),
]
WITHOUT = {"model-logging": ("dlexp.run.phases", "log_model"), "lineage": ("dlexp.tracking.lineage", "log_dataset_inputs"),
           "hydra-logs": ("dlexp.run.lifecycle", "_close")}
CLIENT = {"create_run": "MLflow: run created (+ tags)", "set_terminated": "MLflow: run ended",
          "log_artifact": "MLflow: artifacts copied", "get_run": "MLflow: run read",
          "get_experiment_by_name": "MLflow: experiment looked up", "search_runs": "MLflow: runs searched"}


def _timed(fn, part):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        label = part(*args, **kwargs) if callable(part) else part
        t = time.perf_counter()
        _stack.append(label)
        try:
            return fn(*args, **kwargs)
        finally:
            _stack.pop()
            if label not in _stack:  # a part inside itself counts once
                TOTAL[label] += time.perf_counter() - t
                CALLS[label] += 1
                FIRST.setdefault(label, time.perf_counter() - t)
    return timed


def _batch_kind(self, run_id, metrics=(), params=(), tags=(), **_):
    kinds = [k for k, v in (("params", params), ("tags", tags), ("metrics", metrics)) if v]
    return f"MLflow: log_batch ({' + '.join(kinds) or 'nothing'})"


def _wrap(module, attr, part) -> bool:
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return False
    *owners, name = attr.split(".")
    for owner in owners:
        obj = getattr(obj, owner, None)
    if obj is None or name not in getattr(obj, "__dict__", {}):
        return False
    setattr(obj, name, _timed(getattr(obj, name), part))
    return True


def _nothing(*args, **kwargs):
    return None


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    flags, dlexp_args = argv[:split], argv[split + 1:]
    for name in [flags[i + 1] for i, f in enumerate(flags) if f == "--without"]:
        module, attr = WITHOUT[name]
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(mod, attr):
            setattr(mod, attr, _nothing)
    if "--breakdown" in flags:
        _wrap_all()
    from dlexp import cli

    sys.argv = ["dlexp", *dlexp_args]
    t = time.perf_counter()
    try:
        cli.main()
    except SystemExit as e:
        if e.code:
            raise
    if "--breakdown" in flags:
        _report(time.perf_counter() - t)


def _wrap_all() -> None:
    for module, attr, part in PARTS:
        _wrap(module, attr, part)
    from mlflow.tracking import MlflowClient

    for name, part in CLIENT.items():
        setattr(MlflowClient, name, _timed(getattr(MlflowClient, name), part))
    MlflowClient.log_batch = _timed(MlflowClient.log_batch, _batch_kind)


def _report(wall: float) -> None:
    parts = {k: {"seconds": v, "calls": CALLS[k], "first": FIRST[k]} for k, v in TOTAL.items()}
    job, task = parts.pop("(job in all)", None), parts.pop("(task)", None)
    if job and task:
        parts["Hydra: job set-up (dirs, .hydra/*.yaml, logging)"] = {
            "seconds": job["seconds"] - task["seconds"], "calls": job["calls"], "first": job["first"] - task["first"]}
    parts["wall"] = wall
    print(json.dumps(parts))


if __name__ == "__main__":
    main()
