"""``python -m bench.side_by_side``: the tutorials' own code and dlexp on the same data, same epochs, one table.

    python -m bench.side_by_side --data ~/.cache/dlexp/mnist/mnist.pkl.gz             # every row below
    python -m bench.side_by_side --rows logreg,mlp:2 --data ...                         # a part, mlp 2 epochs

Each row runs the original (``../shared/peers/seedcode``'s ``run.sh``: the tutorial's code, unchanged, on
PyTensor) and then dlexp (``experiment=tutorial_<x>``, one thread, the same epochs) on the same
``mnist.pkl.gz``, and prints what each says at the end: validation and test error of the best model for the
classifiers, the last epoch's training cost for the dA and the RBM. mlp and LeNet start dlexp from the
original's own initial weights (``model.init_seed``: numpy's RandomState as mlp.py / convolutional_mlp.py
draw them) and neither shuffles, so their errors can be compared epoch for epoch; logreg is deterministic
(zero weights). The dA (corruption 0.3) and the RBM draw their noise from Theano's generator on one side and
torch's on the other: only their costs' level can agree. The table goes to ``--out`` (bench/SIDE_BY_SIDE.md).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .original import seedcode

REPO = Path(__file__).resolve().parent.parent
# row: (peer model, default epochs, dlexp overrides, ... one tuple a dlexp run; "{e}" is the epoch count)
ROWS = {
    "logreg": ("logreg", 1000, ("experiment=tutorial_logreg", "trainer.max_epochs={e}")),
    "mlp": ("mlp", 3, ("experiment=tutorial_mlp", "model.init_seed=1234", "trainer.max_epochs={e}")),
    "lenet": ("lenet5", 1, ("experiment=tutorial_lenet", "model.init_seed=23455", "trainer.max_epochs={e}")),
    "da": ("dA", 15, ("experiment=tutorial_da", "model.corruption_level=0.0", "model.pretrain_epochs={e}"),
           ("experiment=tutorial_da", "model.pretrain_epochs={e}")),  # dA.py trains corruption 0, then 0.3
    "rbm": ("rbm", 1, ("experiment=tutorial_rbm", "model.pretrain_epochs={e}")),
}


def run_peer(model: str, epochs: int, data: Path) -> dict:
    """The tutorial's code through the peer's harness: its PEER_RESULT JSON, plus the wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        start = time.perf_counter()
        done = subprocess.run([str(seedcode() / "run.sh"), model, str(epochs), str(data)], capture_output=True,
                              text=True, env=dict(os.environ, PEER_JSON=str(out)))
        if done.returncode != 0 or not out.exists():
            return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
        result = json.loads(out.read_text())
    result["seconds"] = time.perf_counter() - start
    return result


def run_dlexp(overrides: list, data: Path, store: str) -> dict:
    """One dlexp run on ``data``: its MLflow run's metrics and wall seconds."""
    from mlflow.tracking import MlflowClient

    name = f"side-by-side/{time.time_ns()}"
    cmd = [sys.executable, "-m", "dlexp.cli", *overrides, "dataset=mnist", f"dataset.path={data}",
           "trainer.threads=1", "trainer.progress=none", f"tracking.uri={store}", "tracking.experiment=side-by-side",
           f"tracking.run_name={name}"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("side-by-side").experiment_id],
                             f"attributes.run_name = '{name}'")[0]
    name = next((n for n in ("valid/error", "valid_error") if n in run.data.metrics), None)
    history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step) if name else []
    return {"metrics": run.data.metrics, "valid": [100 * m.value for m in history],
            "seconds": time.perf_counter() - start}


def agreement(peer: dict, ours: dict) -> str:
    """How many of the epochs' validation errors are the same on both sides (to the tutorial's 4 decimals)."""
    theirs = [e.get("valid_error_pct") for e in peer["phases"][-1]]
    same = sum(a is not None and abs(a - round(b, 4)) < 1e-3 for a, b in zip(theirs, ours["valid"]))
    return f"{same} of {len(theirs)}"


def first(metrics: dict, *names):
    """The first of ``names`` that the run logged (metric names of older and newer dlexp)."""
    return next((metrics[n] for n in names if n in metrics), None)


def peer_cells(result: dict) -> tuple:
    if "error" in result:
        return ("failed: " + " ".join(result["error"]),) * 2
    final, epochs = result.get("final") or {}, result["phases"][-1]
    if "best_valid_error_pct" in final:
        return (f"{final['best_valid_error_pct']:.4f} % / {final['test_error_pct']:.4f} %",
                f"{len(epochs)} epochs, {result['seconds']:.0f} s")
    costs = "; ".join(f"{e['cost']:.2f}" for e in (p[-1] for p in result["phases"]) if "cost" in e)
    return f"cost {costs}", f"{len(epochs)} epochs, {result['seconds']:.0f} s"


def dlexp_cells(results: list, supervised: bool) -> tuple:
    failed = [r for r in results if "error" in r]
    if failed:
        return ("failed: " + " ".join(failed[0]["error"]),) * 2
    if not supervised:
        costs = "; ".join(f"{first(r['metrics'], 'pretrain/cost'):.2f}" for r in results)
        return f"cost {costs}", f"{sum(r['seconds'] for r in results):.0f} s"
    result = results[0]
    m = result["metrics"]
    if supervised:
        valid, test = first(m, "valid/best_error", "best_valid_error"), first(m, "test/error", "final_test_error")
        epochs = first(m, "epoch", "train/epoch", "epochs")
    return (f"{100 * valid:.4f} % / {100 * test:.4f} %",
            f"{'' if epochs is None else f'{epochs:.0f} epochs, '}{result['seconds']:.0f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.side_by_side", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the tutorials' mnist.pkl.gz")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated MODEL[:EPOCHS] of " + ", ".join(ROWS))
    ap.add_argument("--out", default=str(REPO / "bench" / "SIDE_BY_SIDE.md"))
    args = ap.parse_args(argv)
    data = Path(args.data).expanduser().resolve()
    if not (seedcode() / "run.sh").exists() or not data.is_file():
        print(f"bench.side_by_side: error: need {seedcode() / 'run.sh'} and {data}", file=sys.stderr)
        return 2
    lines = ["| model | epochs asked | original: best valid / test | original: ran | dlexp: best valid / test "
             "| dlexp: ran | epochs with the same valid error |", "| --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/side.db"
        for item in filter(None, args.rows.split(",")):
            key, _, n = item.partition(":")
            peer_model, default, *runs = ROWS[key]
            epochs = int(n or default)
            peer = run_peer(peer_model, epochs, data)
            ours = [run_dlexp([o.format(e=epochs) for o in overrides], data, store) for overrides in runs]
            supervised = key in ("logreg", "mlp", "lenet")
            same = agreement(peer, ours[0]) if supervised and "error" not in peer and "error" not in ours[0] else "—"
            row = [key, str(epochs), *peer_cells(peer), *dlexp_cells(ours, supervised), same]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("# The tutorials' code and dlexp side by side on the tutorials' MNIST\n\n"
                              f"`python -m bench.side_by_side --rows {args.rows} --data <mnist.pkl.gz>`: "
                              + __doc__.split("\n\n")[2].replace("\n", " ") + "\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
