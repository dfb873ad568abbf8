"""``dlexp-sweep``: a sweep's ranked table or pivot, the list of sweeps, and sweeps compared.

    dlexp-sweep table <sweep> [--pivot KEY1[,KEY2]] [--metric M] [--format text|md|csv] [--output F]
    dlexp-sweep list [--experiment E] [--max N]
    dlexp-sweep compare <sweep> <sweep>... [--format text|md|csv] [--output F]

``--output`` never writes over the store, its artifacts or (without ``--force``) any existing file
(:mod:`dlexp.output`).

``<sweep>``: the parent run id, the sweep id (its sweep dir as logged), or the sweep directory.
A mistake (no such sweep, a key or metric no run has) ends with one line ``dlexp-sweep: error: ...``
and exit 2.
"""
import os
import sys

from ..entry import OneLineParser
from ..output import check_output, write_output
from ..tracking.contract import PARENT_TAG, SWEEP_TAG
from .compare import best_text, compare_csv, compare_markdown, compare_rows, compare_text, parent_best
from .grid import key_value
from .pivot import pivot, pivot_csv, pivot_markdown, pivot_text
from .runs import find_parent, swept_keys, sweep_table
from .table import direction_of, runs_page, table_csv, table_markdown, table_text

FORMATS = ("text", "md", "csv")


class SweepError(ValueError):
    """A mistake on the command line: one line, exit 2."""


def _parser() -> OneLineParser:
    ap = OneLineParser(prog="dlexp-sweep", description=main.__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="the ranked table of one sweep, or its pivot")
    t.add_argument("sweep", help="the parent run id, the sweep id (its sweep dir as logged), or the sweep directory")
    t.add_argument("--pivot", metavar="KEY1[,KEY2]", help="the grid as a matrix: rows KEY1's values, columns "
                                                          "KEY2's, cells the metric (a key's last part will do: lr)")
    t.add_argument("--metric", help="the metric to rank by / fill the cells with (default: the sweep's objective)")
    c = sub.add_parser("compare", help="several sweeps' best runs side by side")
    c.add_argument("sweeps", nargs="+", help="parent run ids, sweep ids or sweep directories")
    for p in (t, c):
        p.add_argument("--format", choices=FORMATS, default="text")
        p.add_argument("--output", help="write the table to this file too (atomically; never the store, its "
                                        "artifacts or an existing file without --force)")
        p.add_argument("--force", action="store_true", help="let --output replace an existing file")
    ls = sub.add_parser("list", help="the sweeps of an experiment, newest first")
    ls.add_argument("--experiment", default="dlexp")
    ls.add_argument("--max", type=int, default=20)
    for p in (t, ls, c):
        p.add_argument("--tracking-uri", help="the MLflow store (default: $MLFLOW_TRACKING_URI, else "
                                              "sqlite:///outputs/mlflow.db)")
    return ap


def _list(client, uri: str, experiment: str, limit: int) -> int:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SweepError(f"no experiment {experiment!r} in {uri}")
    parents = client.search_runs([exp.experiment_id], f"tags.`{SWEEP_TAG}` != ''",
                                 order_by=["attributes.start_time DESC"], max_results=limit)
    for p in parents:
        print(f"{p.info.run_id}  {p.info.status:8}  {p.data.tags.get(SWEEP_TAG)}  "
              f"{int(p.data.metrics.get('sweep.runs', 0))} runs  best: {best_text(*parent_best(p))}  "
              f"{p.data.params.get('sweep.params', '')}")
    return 0


def _parent(client, ref: str):
    """The sweep's parent run; a job's run or a single run is refused, naming its sweep if it has one."""
    try:
        run = find_parent(client, ref)
    except LookupError as e:
        raise SweepError(str(e)) from None
    parent = run.data.tags.get(PARENT_TAG)
    if parent:
        raise SweepError(f"{ref}: run {run.info.run_id} is a job (child run) of the sweep whose parent run is "
                         f"{parent}; dlexp-sweep table {parent}")
    if SWEEP_TAG not in run.data.tags:
        raise SweepError(f"{ref}: run {run.info.run_id} is a single run, not a sweep's parent run (dlexp-sweep "
                         "list shows the sweeps)")
    return run


def _resolve_key(children, key: str, parent) -> str:
    """``key`` as the runs know it: itself, or the one param key ending in ``.key``."""
    if any(key_value(c, key) is not None for c in children):
        return key
    params = {k for c in children for k in c.data.params}
    matches = sorted({k[:-5] if k.endswith(".name") else k for k in params if k.endswith("." + key)})
    if len(matches) == 1:
        return matches[0]
    swept = ", ".join(swept_keys(parent)) or "none"
    hint = f"one of {', '.join(matches)}" if matches else f"swept: {swept}"
    raise SweepError(f"--pivot {key}: not a key of the runs of sweep {parent.info.run_id} ({hint})")


def _check_metric(children, metric, parent) -> None:
    if metric and children and not any(metric in c.data.metrics for c in children):
        known = sorted({k for c in children for k in c.data.metrics if not k.startswith("sweep.")})
        raise SweepError(f"--metric {metric}: no run of sweep {parent.info.run_id} logged it; one of "
                         f"{', '.join(known[:20])}{', ...' if len(known) > 20 else ''}")


def _title(parent, rows, what: str) -> str:
    return (f"Sweep {parent.data.tags.get(SWEEP_TAG, '?')} - parent run {parent.info.run_id} "
            f"({parent.info.status}), {len(rows)} runs {what}:")


def _table(client, args) -> tuple:
    """(title or None, the table) of one sweep."""
    parent = _parent(client, args.sweep)
    rows, metric, children = sweep_table(client, parent, args.metric)
    _check_metric(children, args.metric, parent)
    if not args.pivot:
        if args.format == "md":
            text = table_markdown(rows, metric, runs_page(client.tracking_uri, parent.info.experiment_id))
        else:
            text = {"text": table_text, "csv": table_csv}[args.format](rows, metric)
        return _title(parent, rows, f"ranked by {metric}") if args.format == "text" else None, text
    keys = [k.strip() for k in args.pivot.split(",") if k.strip()]
    if not 1 <= len(keys) <= 2:
        raise SweepError(f"--pivot {args.pivot}: one key (rows) or two (rows,columns)")
    keys = [_resolve_key(children, k, parent) for k in keys]
    p = pivot(children, keys, metric, direction_of(children, metric))
    text = {"text": pivot_text, "md": pivot_markdown, "csv": pivot_csv}[args.format](p)
    by = f"{metric} by {' x '.join(keys)}"
    return _title(parent, rows, by) if args.format == "text" else None, text


def _compare(client, args) -> tuple:
    rows = compare_rows(client, [_parent(client, ref) for ref in args.sweeps])
    return None, {"text": compare_text, "md": compare_markdown, "csv": compare_csv}[args.format](rows)


def _emit(title, text: str, output) -> None:
    """Print the title and the table; ``output`` (checked before any work) gets the table alone."""
    if title:
        print(title)
    print(text.rstrip("\n"))
    if output:
        text = text if text.endswith("\n") else text + "\n"
        write_output(output, lambda f: f.write(text), "w")


def main(argv=None) -> int:
    """``dlexp-sweep``: the ranked table (or pivot) of a sweep, the list of sweeps, sweeps compared."""
    from ..tracking.store import default_store
    from ..tracking.tracker import RetryingClient

    args = _parser().parse_args(argv)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_store()}"
    try:
        if getattr(args, "output", None):
            check_output(args.output, args.force, uri)
        client = RetryingClient(uri, create=False)
        if args.command == "list":
            return _list(client, uri, args.experiment, args.max)
        _emit(*(_table if args.command == "table" else _compare)(client, args), args.output)
        return 0
    except KeyboardInterrupt:
        print("dlexp-sweep: stopped (interrupted)", file=sys.stderr)
        return 130
    except ValueError as e:  # a mistake; no store there, not a store, a server that is not MLflow (one line each)
        print(f"dlexp-sweep: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the store failed while being read
        print(f"dlexp-sweep: error: {uri}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return 2
