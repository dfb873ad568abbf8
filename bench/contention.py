"""``python -m bench.contention``: a run's speed when the machine's cores are busy with other processes, with
libgomp's default spin and with dlexp's (dlexp/threads.py), side by side in one sitting.

    python -m bench.contention                      # digits: mlp and logreg, a few minutes on 2 cores
    python -m bench.contention --dataset mnist      # MNIST subsets: mlp, logreg and LeNet

Each workload runs as a ``dlexp`` subprocess (``trainer.threads`` unset: a thread a core) under each setting,
in turn, ``--repeats`` times: on idle cores, then beside one other ``dlexp`` run a core (``trainer.threads=1``,
as several runs at once are), then beside one busy Python loop a core; its seconds an epoch are read back from
the store (``perf/epoch_seconds``, the mean over its epochs; the table shows the median over the repeats).
"libgomp default" is ``GOMP_SPINCOUNT=300000``, libgomp's own value when neither it nor ``OMP_WAIT_POLICY`` is
set; "dlexp" sets nothing, so dlexp's own choice (3,000) applies. Idle cores must be idle: other work on the
machine makes the idle rows busy ones.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from dlexp.threads import USER_KEYS

REPO = Path(__file__).resolve().parent.parent
SETTINGS = (("libgomp default", {"GOMP_SPINCOUNT": "300000"}), ("dlexp", {}))
WORKLOADS = {
    "digits": (("mlp, batch 20", ["experiment=tutorial_mlp", "trainer.max_epochs=5"]),
               ("logreg, batch 600", ["experiment=tutorial_logreg", "trainer.max_epochs=10"])),
    "mnist": (("mlp, batch 20", ["experiment=tutorial_mlp", "trainer.max_epochs=1", "dataset.max_train=5000"]),
              ("logreg, batch 600", ["experiment=tutorial_logreg", "trainer.max_epochs=5"]),
              ("LeNet, batch 500", ["experiment=tutorial_lenet", "trainer.max_epochs=1", "dataset.max_train=5000"])),
}


LOADS = {  # what keeps each core busy beside the measured run
    "idle": None,
    "a dlexp run a core": ["-m", "dlexp.cli", "experiment=tutorial_mlp", "dataset=digits", "trainer.threads=1",
                           "early_stopping=none", "trainer.max_epochs=100000", "tracking=none",
                           "trainer.progress=none"],
    "a busy loop a core": ["-c", "while True: pass"],
}


@contextmanager
def busy_cores(load, cwd: str):
    """One process of ``load`` a core while the block runs (none for None); each in a session of its own, as
    a program started from another terminal is (Linux schedules sessions as groups)."""
    procs = [subprocess.Popen([sys.executable, *load], cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
             for _ in range(os.cpu_count() or 1)] if load else []
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def seconds_an_epoch(store: str, cwd: str, name: str, overrides: list, dataset: str, env: dict) -> float:
    """One dlexp run of ``overrides``; the mean of its per-epoch seconds, from the store."""
    from mlflow.tracking import MlflowClient

    cmd = [sys.executable, "-m", "dlexp.cli", *overrides, f"dataset={dataset}", f"tracking.uri={store}",
           f"tracking.run_name={name}", "trainer.progress=none"]
    clean = {k: v for k, v in os.environ.items() if k not in USER_KEYS}
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                       env={**clean, **env, "PYTHONPATH": str(REPO)}, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"bench.contention: error: {name} failed: {r.stderr.strip().splitlines()[-1:]}")
    client = MlflowClient(store)
    run = client.search_runs([e.experiment_id for e in client.search_experiments()],
                             f"attributes.run_name = '{name}'")[0]
    return statistics.fmean(m.value for m in client.get_metric_history(run.info.run_id, "perf/epoch_seconds"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.contention", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits", choices=sorted(WORKLOADS))
    ap.add_argument("--repeats", type=int, default=3, help="runs a workload and setting (the median is shown)")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        for k, (cores, load) in enumerate(LOADS.items()):
            with busy_cores(load, tmp):
                for label, overrides in WORKLOADS[args.dataset]:
                    times = [[], []]
                    for rep in range(args.repeats):  # the settings in turn, so a slow moment hits both
                        for i, (_, env) in enumerate(SETTINGS):
                            name = f"{label.split(',')[0]}-{k}-{i}-{rep}"
                            times[i].append(seconds_an_epoch(store, tmp, name, overrides, args.dataset, env))
                    s = [statistics.median(t) for t in times]
                    rows.append((label, cores, *s))
                    print(f"{label:18} {cores}: " + ", ".join(
                        f"{name} {v:.3f} s/epoch" for (name, _), v in zip(SETTINGS, s)), flush=True)
    print(f"\n{os.cpu_count()} cores, dataset {args.dataset}, trainer.threads unset, the median of {args.repeats} "
          "runs\n")
    print("| workload | cores | libgomp default s/epoch | dlexp s/epoch | default / dlexp |")
    print("| --- | --- | --- | --- | --- |")
    for label, cores, default, ours in rows:
        print(f"| {label} | {cores} | {default:.3f} | {ours:.3f} | {default / ours:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
