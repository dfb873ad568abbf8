"""A run's figures for the report, read back from the MLflow store (nothing a run prints is parsed)."""
import math
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from dlexp import metric_names as names

from .protocols import Protocol
from .store import REPO, finished, identity, matching, run_name


def pretraining(store: str, run) -> dict:
    """Epochs, each layer's last cost and the seconds of the pretraining, from its per-epoch metrics.

    The per-epoch histories, not the run's final metrics: a run resumed after its pretraining logs no
    final pretraining metrics (``final/cost``, ``final/pretrain_seconds``) in the sitting that finishes it.
    """
    from mlflow.tracking import MlflowClient

    m, client = names.renamed(run.data.metrics), MlflowClient(store)
    costs = sorted((k for k in m if k == "pretrain/cost" or (k.startswith("pretrain/layer_") and k.endswith("/cost"))),
                   key=lambda k: int(k.split("/")[1].split("_")[1]) if "layer_" in k else 0)
    seconds = m.get(names.PRETRAIN_SECONDS)
    if seconds is None:
        seconds = sum(h.value for k in costs for h in client.get_metric_history(
            run.info.run_id, k.rsplit("/", 1)[0] + "/epoch_seconds"))
    epochs = len(client.get_metric_history(run.info.run_id, costs[0])) if costs else 0
    return {"pretrain_epochs": epochs, "costs": [m[k] for k in costs], "pretrain_seconds": seconds,
            "final_cost": m.get(names.FINAL_COST, m[costs[-1]] if costs else None)}


def stop_reason(run) -> str:
    """Why the supervised phase stopped, from the run's params and metrics."""
    params, m = run.data.params, names.renamed(run.data.metrics)
    max_epochs, epochs = int(params.get("trainer.max_epochs", 0)), int(m.get(names.EPOCHS, 0))
    if params.get("optimizer.name") == "cg":
        return f"iteration count ({max_epochs})" if epochs >= max_epochs else "CG converged"
    rule = params.get("early_stopping.name")
    if epochs < max_epochs and rule == "patience":
        return "patience exhausted"
    if epochs < max_epochs and rule == "no_improvement":
        return "no improvement"
    return f"epoch count ({max_epochs})" if rule == "none" else f"max_epochs ({max_epochs})"


def wall_seconds(run) -> float:
    """Start to end of the MLflow run (data loading and images included; for a run stopped and continued
    later, the time it was stopped too)."""
    if run.info.end_time and run.info.start_time:
        return (run.info.end_time - run.info.start_time) / 1000
    return math.nan


def image_link(run, image: str, report_dir: Path) -> str:
    """A Markdown link to the run's image artifact, relative to the report; its name only for a report in the
    repository whose store is outside it (such a link would be broken for the repository's readers; the run's id
    finds the image in the store)."""
    parsed = urlparse(run.info.artifact_uri)
    if parsed.scheme not in ("", "file"):
        return f"`{run.info.artifact_uri}/images/{image}`"
    path = Path(unquote(parsed.path)) / "images" / image
    if not path.exists():
        return f"{image} (missing)"
    if report_dir.resolve().is_relative_to(REPO) and not path.resolve().is_relative_to(REPO):
        return f"{image} (in the store)"
    return f"[{image}]({os.path.relpath(path, report_dir)})"


def row_of(run, p: Protocol, store: str, report_dir: Path) -> dict:
    """One run's figures for the report, all from the store."""
    m = names.renamed(run.data.metrics)  # runs logged before the current metric names too
    row = {"seed": run.data.params.get("trainer.seed", "?"), "run": run.info.run_id,
           "commit": run.data.tags.get("dlexp.git_commit", "?")[:10], "wall": wall_seconds(run),
           "device": run.data.tags.get("dlexp.device", "?"),
           "resumed": run.data.tags.get("dlexp.resumed_from", "the start") != "the start"}
    if p.kind != "supervised":
        row.update(pretraining(store, run))
        row["images"] = ", ".join(image_link(run, im, report_dir) for im in p.images)
    if p.kind != "unsupervised":
        row.update(valid=m.get(names.BEST_VALID), test=m.get(names.BEST_TEST), epochs=int(m.get(names.EPOCHS, 0)),
                   stop=stop_reason(run), train_seconds=m.get(names.TRAIN_SECONDS))
    return row


def collect(protocols: list, runs: list, dataset: str, quick: bool) -> dict:
    """For each protocol: its FINISHED runs (one per seed, the newest) and its other runs, by identity."""
    out = {}
    for p in protocols:
        seeds = sorted({int(r.info.run_name.rsplit("seed", 1)[1]) for r in runs
                        if r.info.run_name and r.info.run_name.startswith(run_name(p, "", quick))
                        and r.info.run_name.rsplit("seed", 1)[1].isdigit()})
        done, other = [], []
        for seed in seeds:
            name, ident = run_name(p, seed, quick), identity(p, seed, dataset, quick)
            best = finished(runs, name, ident)
            done += [best] if best else []
            other += [r for r in matching(runs, name, ident) if r.info.status != "FINISHED"]
        timing = finished(runs, run_name(p, None, quick), identity(p, None, dataset, quick, True)) \
            if p.estimate else None
        out[p.name] = (done, other, timing)
    return out
