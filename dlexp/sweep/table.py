"""A sweep's ranked table: its runs best first, as text (the terminal), Markdown and CSV.

Runs are ranked by their objective: the ``dlexp.objective`` tag each run carries (``<metric>:<direction>``,
e.g. ``best/valid_error:min``, or ``final/cost:max`` for a cost that is a likelihood; a run that failed
sets it too, at its start), else ``best/valid_error`` when any run has it, else ``final/cost`` (lowest
first). Runs logged before the metrics' current names (:mod:`dlexp.metric_names`) are read as if
logged now. Runs without the metric (failed ones) and pruned runs come last. A failed run's reason (its
``dlexp.error`` tag) is the ``error`` column of the CSV and Markdown tables, and a line under its row
in the text table.
"""
import csv
import io
import math
import re

from .. import metric_names as names
from ..tracking.contract import EARLY_TAG, ERROR_TAG, OVERRIDES_TAG, PRUNED_TAG, SKIPPED_TAG, objective_of, override_key

TABLE_CSV = "sweep_table.csv"
TEXT_COLUMNS = ("overrides", "status", "run_id", "error", "skipped_from")
TABLE_MD = "sweep_table.md"

HEADERS = {"rank": "rank", "overrides": "overrides", names.BEST_VALID: "best valid error",
           names.FINAL_COST: "final cost", "test_error": "test error", "epochs": "epochs", "seconds": "seconds",
           "status": "status", "run_id": "run", "skipped_from": "skipped from"}


def objective(children) -> tuple:
    """(metric, direction) to rank by: the runs' ``dlexp.objective`` tag (a run that started knows it
    best: the sweep's own runs for jobs that failed before theirs come last), else their metrics."""
    for run in sorted(children, key=lambda r: bool(r.data.tags.get(EARLY_TAG))):
        metric, direction = objective_of(run)
        if metric:
            return metric, direction
    if any(names.get(r.data.metrics, names.BEST_VALID) is not None for r in children) or not children:
        return names.BEST_VALID, "min"
    return names.FINAL_COST, "min"


def _override_values(run, keys) -> str:
    """The run's values of the swept keys, as ``key=value`` (from its overrides tag, else its params)."""
    tag = run.data.tags.get(OVERRIDES_TAG, "")
    # split "a=1 b=[1, 2] c=x" at the spaces that start a new key=
    parts = [p for p in re.split(r" (?=[+~]{0,2}[\w./@-]+=)", tag) if p and p != "(none)"]
    if not keys:
        return " ".join(parts)
    found = {override_key(p): p.lstrip("+~") for p in parts}
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
    m = names.renamed(run.data.metrics)
    if names.TRAIN_SECONDS in m or names.PRETRAIN_SECONDS in m:
        return m.get(names.TRAIN_SECONDS, 0.0) + m.get(names.PRETRAIN_SECONDS, 0.0)
    if run.info.end_time and run.info.start_time:
        return (run.info.end_time - run.info.start_time) / 1000
    return None


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def status(run) -> str:
    """The run's MLflow status, or PRUNED for a run the sweep's pruner stopped, or SKIPPED for a job whose
    config had FINISHED before (``trainer.skip_finished``: the run holds that run's result)."""
    if run.data.tags.get(PRUNED_TAG):
        return "PRUNED"
    if run.data.tags.get(SKIPPED_TAG) and run.info.status == "FINISHED":
        return "SKIPPED"
    return run.info.status


def direction_of(children, metric: str) -> str:
    """How ``metric`` ranks: the objective's direction when it is the objective, else lowest first."""
    objective_metric, direction = objective(children)
    return direction if metric == objective_metric else "min"


def rank(children, keys=(), metric=None) -> tuple:
    """(rows best first, metric): rank, overrides, the objective (or ``metric``), test error, epochs,
    seconds, status, run, and the reason a failed run failed."""
    if metric is None:
        metric, direction = objective(children)
    else:
        metric = names.NEW.get(metric, metric)  # an old name (final_test_error) means the current one
        direction = direction_of(children, metric)
    sign = -1 if direction == "max" else 1

    def sort_key(run):
        value = names.get(run.data.metrics, metric)
        missing = value is None or math.isnan(value)
        return (missing, status(run) == "PRUNED", 0.0 if missing else sign * value, run.info.start_time or 0)

    rows = []
    for i, run in enumerate(sorted(children, key=sort_key), 1):
        m = names.renamed(run.data.metrics)
        rows.append({
            "rank": i,
            "overrides": _override_values(run, keys),
            metric: m.get(metric),
            "test_error": m.get(names.BEST_TEST),
            "epochs": m.get(names.EPOCHS, _float(run.data.params.get("model.pretrain_epochs"))),
            "seconds": _seconds(run),
            "status": status(run),
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "error": " ".join(run.data.tags.get(ERROR_TAG, "").split()) or None,
            "skipped_from": run.data.tags.get(SKIPPED_TAG) or None,
        })
    return rows, metric


def _short_numbers(overrides: str) -> str:
    """optimizer.lr=0.0003754553966912878 -> optimizer.lr=0.0003755 (Optuna's samples, for reading)."""
    def short(m):
        text = m.group(0)
        return f"{float(text):.4g}" if len(text) > 8 else text
    return re.sub(r"(?<==)-?\d*\.\d+(?:[eE][-+]?\d+)?(?=\s|$)", short, overrides)


def fmt(key, value) -> str:
    """One cell, for reading: errors in %, epochs whole, numbers to 4 digits, ``-`` for none."""
    if key == "overrides":
        return _short_numbers(value or "")
    if key in ("epochs", "seconds") and value is not None and value == value:
        return f"{value:.0f}" if key == "epochs" else f"{value:.1f}"
    return names.shown(key, value)


def _header(column: str) -> str:
    return HEADERS.get(column, column.replace("_", " "))


def _columns(metric):
    return ["rank", "overrides", metric, "test_error", "epochs", "seconds", "status", "run_id"]


def _error_column(rows) -> list:
    """The ``error`` column, when a row has a reason; ``skipped from``, when a job was not trained again."""
    return [c for c in ("error", "skipped_from") if any(r.get(c) for r in rows)]


def _note(row):
    """The line under a row of the text table: why it failed, or where its result comes from."""
    if row.get("error"):
        return f"error: {row['error']}"
    if row.get("skipped_from"):
        return f"finished before as run {row['skipped_from']}"
    return None


def table_text(rows, metric) -> str:
    cols = _columns(metric)
    cells = [[_header(c) for c in cols]]
    cells += [[fmt(c, r[c]) if c != "run_id" else r[c][:12] for c in cols] for r in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(cols))]
    left = {"overrides", "status", "run_id"}
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(v.ljust(w) if cols[j] in left else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths)))
                     .rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
        elif _note(rows[n - 1]):
            lines.append(" " * (widths[0] + 2) + _note(rows[n - 1]))
    return "\n".join(lines)


def runs_page(uri: str, experiment_id: str):
    """Where the MLflow UI shows an experiment's runs, when the store is an MLflow server
    (``<uri>/#/experiments/<id>``; a run's page: ``.../runs/<run id>``), else None."""
    if not str(uri or "").startswith(("http://", "https://")):
        return None
    return f"{str(uri).rstrip('/')}/#/experiments/{experiment_id}"


def _md_cell(column, value, page=None) -> str:
    if column == "run_id" and page and value:
        return f"[{value}]({page}/runs/{value})"
    if column == "overrides":
        return f"`{fmt(column, value)}`" if value else ""
    if column in ("error", "skipped_from"):
        return (value or "").replace("|", "\\|")
    return fmt(column, value)


def table_markdown(rows, metric, page: str = None) -> str:
    """The table in Markdown; with ``page`` (:func:`runs_page`), each run id links to the run's page."""
    cols = _columns(metric) + _error_column(rows)
    out = ["| " + " | ".join(_header(c) for c in cols) + " |",
           "| " + " | ".join("---" if c in TEXT_COLUMNS else "---:" for c in cols) + " |"]
    for r in rows:
        out.append("| " + " | ".join(_md_cell(c, r.get(c), page) for c in cols) + " |")
    return "\n".join(out) + "\n"


def table_csv(rows, metric) -> str:
    buf = io.StringIO()
    cols = _columns(metric) + ["run_name", "error", "skipped_from"]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: "" if r.get(c) is None else r[c] for c in cols})
    return buf.getvalue()
