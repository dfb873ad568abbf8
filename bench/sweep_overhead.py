"""``python -m bench.sweep_overhead``: what a serial in-process sweep costs beyond its training (issue 13).

    python -m bench.sweep_overhead                              # this checkout, 5 repetitions
    python -m bench.sweep_overhead --before /tmp/dlexp-old      # and an older copy of the code, side by side
    python -m bench.sweep_overhead --variant "no images:tracking.filters_image=false" --output bench/SWEEPS.md

For each variant (this checkout; ``--before DIR``: the code in DIR, put first on PYTHONPATH; each
``--variant NAME:OVERRIDES``: this checkout with more overrides) it times, in alternation, several
times, each in a fresh process against an existing store in its own directory:

* one run:     ``dlexp dataset=digits model=logreg trainer.max_epochs=20 ...``
* a 9-job grid: the same with ``-m optimizer.lr=0.1,0.01,0.001 regularization.l2=0,1e-4,1e-3``
  (the basic sweeper and launcher: one process, jobs one after another)

and reports medians: the overhead a job = (wall of the sweep - wall of one run) / 8, which cancels the
start-up both pay (Python, torch, MLflow imports, the store), and the training seconds the runs logged.
Then a breakdown of one sweep of this checkout: the same sweep in one process with timers around the
named parts of a job (where its time goes besides training), per job.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .timing import _TICK as TICK, _system_busy, n_cpus, wait_quiet

REPO = Path(__file__).resolve().parents[1]
BASE = ["dataset=digits", "model=logreg", "trainer.max_epochs=20", "trainer.progress=none", "trainer.threads=1",
        "regularization=l2"]
GRID = ["optimizer.lr=0.1,0.01,0.001", "regularization.l2=0,1e-4,1e-3"]
WITHOUT = ("model-logging", "lineage", "hydra-logs")  # other work's per-run additions, replaced by nothing
WITHOUT_NAME = "without the MLflow model, dataset inputs and log uploads of a run"
NO_PICTURES = "++hydra.callbacks.mlflow_sweep.plots=false"


def _env(code: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(code), str(REPO)])
    return env


RUNNER = REPO / "bench" / "sweep_run.py"  # a script: the dlexp it imports is the one first on PYTHONPATH


def _command(args: list, without=(), breakdown=False) -> list:
    flags = [f for part in without for f in ("--without", part)] + (["--breakdown"] if breakdown else [])
    return [sys.executable, str(RUNNER), *flags, "--", *args]


def _wall(code: Path, cwd: Path, args: list, without=()) -> tuple:
    """(wall s, CPU s of the process and its children, foreign load: the share of the machine's CPU that
    other processes took meanwhile) of one dlexp command."""
    busy, cpu = _system_busy(), _children_cpu()
    t = time.perf_counter()
    r = subprocess.run(_command(args, without), cwd=cwd, env=_env(code), capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed in {cwd}:\n{r.stderr[-3000:]}")
    used = _children_cpu() - cpu
    after = _system_busy()
    foreign = 0.0 if busy is None or after is None else max(0.0, (after - busy) / TICK - used) / (wall * n_cpus())
    return wall, used, foreign


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _train_seconds(cwd: Path) -> float:
    """Training seconds of the newest sweep's children in ``cwd``'s store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dlexp")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=10)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags][:9]
    from dlexp.metric_names import TRAIN_SECONDS, get

    return sum(get(r.data.metrics, TRAIN_SECONDS, 0.0) for r in children)


def measure(variants: dict, reps: int) -> dict:
    """{variant: {"one": [walls], "nine": [walls], "train": [s]}}, alternating variants and run kinds."""
    dirs = {name: Path(tempfile.mkdtemp(prefix="dlexp-bench-sweep-")) for name in variants}
    for name, (code, extra, without) in variants.items():  # warm-up: the store exists, caches are warm
        _wall(code, dirs[name], BASE + extra, without)
    out = {name: {"one": [], "nine": [], "train": []} for name in variants}
    for rep in range(reps):
        for name, (code, extra, without) in variants.items():
            wait_quiet(timeout=20)  # a shared machine: start each pair in a quiet moment if one comes
            out[name]["one"].append(_wall(code, dirs[name], BASE + extra, without))
            out[name]["nine"].append(_wall(code, dirs[name], ["-m", *BASE, *extra, *GRID], without))
            out[name]["train"].append(_train_seconds(dirs[name]))
            (w1, c1, f1), (w9, c9, f9) = out[name]["one"][-1], out[name]["nine"][-1]
            print(f"  rep {rep + 1}/{reps} {name}: one run {w1:.2f} s ({c1:.2f} s CPU, {f1:.0%} foreign load), "
                  f"9-job sweep {w9:.2f} s ({c9:.2f} s CPU, {f9:.0%})", file=sys.stderr, flush=True)
    return out


def per_job(reps: int = 3) -> dict:
    """This checkout's overhead a job, for ``python -m bench``'s extras: medians over ``reps`` pairs of
    (one run, 9-job sweep), each in a fresh process against an existing store."""
    r = measure({"this checkout": (REPO, [], ())}, reps)["this checkout"]
    pairs = list(zip(r["one"], r["nine"]))
    return {"one": statistics.median(o[0] for o, _ in pairs), "nine": statistics.median(n[0] for _, n in pairs),
            "per_job": statistics.median((n[0] - o[0]) / 8 for o, n in pairs),
            "per_job_cpu": statistics.median((n[1] - o[1]) / 8 for o, n in pairs),
            "foreign": statistics.median(max(o[2], n[2]) for o, n in pairs), "reps": reps,
            "command": f"dlexp -m {' '.join(BASE)} {' '.join(GRID)}"}


QUIET = 0.25  # a pair of measurements counts as quiet when others took under this share of the CPU


def overhead_table(results: dict) -> str:
    """Per variant: medians of the walls, of the overhead a job (wall and CPU), and of the overhead over the
    repetitions where other processes took little of the machine (quiet), with how many there were."""
    lines = ["| variant | one run, wall (s) | 9-job sweep, wall (s) | training in the sweep (s) | overhead a job, "
             "wall (s) | overhead a job, quiet repetitions, wall (s) | overhead a job, CPU (s) | foreign load |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        pairs = list(zip(r["one"], r["nine"]))
        wall = statistics.median((n[0] - o[0]) / 8 for o, n in pairs)
        cpu = statistics.median((n[1] - o[1]) / 8 for o, n in pairs)
        quiet = [(n[0] - o[0]) / 8 for o, n in pairs if max(o[2], n[2]) < QUIET]
        quiet_text = f"**{statistics.median(quiet):.2f}** ({len(quiet)} of {len(pairs)})" if quiet else \
            f"- (0 of {len(pairs)})"
        load = statistics.median(max(o[2], n[2]) for o, n in pairs)
        lines.append(f"| {name} | {statistics.median(o[0] for o, _ in pairs):.2f} | "
                     f"{statistics.median(n[0] for _, n in pairs):.2f} | {statistics.median(r['train']):.2f} | "
                     f"**{wall:.2f}** | {quiet_text} | {cpu:.2f} | {load:.0%} |")
    return "\n".join(lines)


def breakdown(code: Path, extra: list, without=()) -> dict:
    """bench/sweep_run.py --breakdown's JSON: {part: {seconds, calls, first}}, "wall"."""
    cwd = Path(tempfile.mkdtemp(prefix="dlexp-bench-breakdown-"))
    _wall(code, cwd, BASE + extra, without)
    r = subprocess.run(_command(["-m", *BASE, *extra, *GRID], without, breakdown=True), cwd=cwd, env=_env(code),
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"bench: breakdown failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def breakdown_table(parts: dict) -> str:
    """Per part: calls, its first call (imports and caches a process pays once, as one run does), the
    others' mean, and what a job pays (the calls after the first, over 9 jobs)."""
    wall = parts.pop("wall")
    opened = parts.get("store opened (client, experiment)", {}).get("first", 0.0)
    lines = ["| part | calls | first call (ms) | later calls (ms each) | ms a job beyond one run |",
             "|---|---|---|---|---|"]
    for name, p in sorted(parts.items(), key=lambda kv: -(kv[1]["seconds"] - kv[1]["first"])):
        later = (p["seconds"] - p["first"]) / max(1, p["calls"] - 1)
        per_job = (p["seconds"] - p["first"]) / 9 if not name.startswith("sweep:") else p["seconds"] / 8
        if name == "sweep: parent run started":  # less the process's first store opening: one run pays it too
            per_job = (p["seconds"] - opened) / 8
        lines.append(f"| {name} | {p['calls']} | {1000 * p['first']:.1f} | {1000 * later:.1f} | {1000 * per_job:.1f} |")
    lines.append(f"| (the whole sweep in one process, after imports: wall) | | | | {1000 * wall:.0f} ms in all |")
    return "\n".join(lines)


def breakdown_text() -> str:
    return "\n".join([
        "Where a job's time goes (this checkout, one 9-job sweep in one process, timers around the parts; parts "
        "nest: training is inside the task; `sweep:` parts are the sweep's own, shared by its 8 extra jobs; the "
        "first call of a part pays its imports and caches, as one run does):", "",
        breakdown_table(breakdown(REPO, [])), "", f"The same {WITHOUT_NAME}:", "",
        breakdown_table(breakdown(REPO, [], WITHOUT))])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sweep_overhead", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--before", help="a copy of older dlexp code (its root: dlexp/ and conf/) to compare with")
    ap.add_argument("--variant", action="append", default=[], help="NAME:OVERRIDES, this checkout with them")
    ap.add_argument("--output", help="write the report (Markdown) to this file")
    ap.add_argument("--breakdown-only", action="store_true", help="only the breakdown tables (a few minutes)")
    args = ap.parse_args(argv)
    if args.breakdown_only:
        print(breakdown_text())
        return 0
    variants = {}
    if args.before:
        variants["before (" + Path(args.before).name + ")"] = (Path(args.before).resolve(), [], ())
    variants["this checkout"] = (REPO, [], ())
    variants["this checkout, " + WITHOUT_NAME] = (REPO, [], WITHOUT)
    variants["this checkout, " + WITHOUT_NAME + ", and no sweep pictures"] = (REPO, [NO_PICTURES], WITHOUT)
    for spec in args.variant:
        name, _, overrides = spec.partition(":")
        variants[f"this checkout, {name}"] = (REPO, overrides.split(), ())
    results = measure(variants, args.reps)
    report = [f"Median of {args.reps} repetitions, alternating; `{' '.join(BASE)}`, grid `{' '.join(GRID)}`; "
              f"the machine's {n_cpus()} CPUs were shared (foreign load: the share of them other processes took "
              f"during a pair of measurements, the larger of the two; quiet: under {QUIET:.0%}).", "",
              overhead_table(results), "", breakdown_text()]
    text = "\n".join(report) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
