"""Sweeps side by side: ``dlexp-sweep compare <sweep> <sweep>...`` and the best value of ``dlexp-sweep list``.

One row a sweep: its id, parent run, status, how many runs, what it was ranked by, its best run's value
(formatted for what it is: an error rate in %, a cost or a likelihood as a number, with its direction),
test error, overrides and run id, and the sweep's fixed overrides (what else differed between the
sweeps). As text, Markdown or CSV.
"""
import csv
import io

from .. import metric_names as names
from ..metric_names import is_error
from ..tracking.contract import RANKED_BY_TAG, SWEEP_TAG, objective_of
from .runs import sweep_table
from .table import fmt

COLUMNS = ("sweep", "parent", "status", "runs", "ranked_by", "best", "test_error", "best_overrides", "best_run",
           "fixed")
HEADERS = {"ranked_by": "ranked by", "test_error": "test error", "best_overrides": "best overrides",
           "best_run": "best run"}


def parent_best(parent) -> tuple:
    """(metric, direction, value) of a sweep's best child, as its parent run recorded them."""
    metric, direction = objective_of(parent)
    metrics = names.renamed(parent.data.metrics)  # a sweep logged before the current names, read as now
    if not metric:
        metric = parent.data.tags.get(RANKED_BY_TAG) or (
            names.BEST_VALID if names.BEST_VALID in metrics or names.FINAL_COST not in metrics else names.FINAL_COST)
    metric = names.NEW.get(metric, metric)
    return metric, direction or "min", metrics.get(metric)


def best_text(metric: str, direction: str, value) -> str:
    """``best/valid_error 2.40 %``, ``final/cost 63.21 (lower is better)``, ``- `` for none."""
    if value is None:
        return f"{metric} -"
    if is_error(metric):
        return f"{metric} {fmt(metric, value)}"
    return f"{metric} {fmt(metric, value)} ({'lower' if direction == 'min' else 'higher'} is better)"


def compare_rows(client, parents) -> list:
    rows = []
    for parent in parents:
        table, metric, _ = sweep_table(client, parent)
        best = next((r for r in table if r.get(metric) is not None and r["status"] not in ("PRUNED", "FAILED")), None)
        _, direction, _ = parent_best(parent)
        rows.append({
            "sweep": parent.data.tags.get(SWEEP_TAG, "?"), "parent": parent.info.run_id,
            "status": parent.info.status, "runs": len(table), "ranked_by": f"{metric} ({direction})",
            "best": None if best is None else best[metric], "metric": metric,
            "test_error": None if best is None else best["test_error"],
            "best_overrides": "" if best is None else best["overrides"],
            "best_run": "" if best is None else best["run_id"],
            "fixed": parent.data.params.get("sweep.fixed", ""),
        })
    return rows


def _cell(row, column, width_ids=12) -> str:
    value = row[column]
    if column == "best":
        return fmt(row["metric"], value)
    if column == "test_error":
        return fmt("test_error", value)
    if column in ("parent", "best_run"):
        return value[:width_ids]
    return fmt("overrides", value) if column in ("best_overrides", "fixed") else str(value)


def compare_text(rows) -> str:
    cells = [[HEADERS.get(c, c) for c in COLUMNS]] + [[_cell(r, c) for c in COLUMNS] for r in rows]
    widths = [max(len(line[j]) for line in cells) for j in range(len(COLUMNS))]
    lines = ["  ".join(v.rjust(w) if COLUMNS[j] in ("runs", "best", "test_error") else v.ljust(w)
                       for j, (v, w) in enumerate(zip(line, widths))).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def compare_markdown(rows) -> str:
    out = ["| " + " | ".join(HEADERS.get(c, c) for c in COLUMNS) + " |",
           "| " + " | ".join("---:" if c in ("runs", "best", "test_error") else "---" for c in COLUMNS) + " |"]
    for r in rows:
        out.append("| " + " | ".join(_cell(r, c, 32).replace("|", "\\|") for c in COLUMNS) + " |")
    return "\n".join(out) + "\n"


def compare_csv(rows) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS) + ["metric"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r[k] for k in writer.fieldnames})
    return buf.getvalue()
