"""``dlexp-sweep table <sweep id | sweep dir | parent run id>`` prints the table of any sweep later;
``dlexp-sweep list`` lists the sweeps of an experiment."""
import os
import sys
from pathlib import Path

from ..cliargs import OneLineParser
from .context import SWEEP_TAG
from .runs import find_parent, sweep_table
from .table import fmt, table_csv, table_markdown, table_text


def _parser() -> OneLineParser:
    ap = OneLineParser(prog="dlexp-sweep", description=main.__doc__)
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
    return ap


def _list(client, uri: str, experiment: str, limit: int) -> int:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        print(f"dlexp-sweep: error: no experiment {experiment!r} in {uri}", file=sys.stderr)
        return 2
    parents = client.search_runs([exp.experiment_id], f"tags.`{SWEEP_TAG}` != ''",
                                 order_by=["attributes.start_time DESC"], max_results=limit)
    for p in parents:
        best = p.data.metrics.get("best_valid_error", p.data.metrics.get("final_cost"))
        print(f"{p.info.run_id}  {p.info.status:8}  {p.data.tags.get(SWEEP_TAG)}  "
              f"{int(p.data.metrics.get('sweep.runs', 0))} runs  best {fmt('best_valid_error', best)}  "
              f"{p.data.params.get('sweep.params', '')}")
    return 0


def _table(client, ref: str, form: str, output) -> int:
    try:
        parent = find_parent(client, ref)
    except LookupError as e:
        print(f"dlexp-sweep: error: {e}", file=sys.stderr)
        return 2
    rows, metric, _ = sweep_table(client, parent)
    text = {"text": table_text, "md": table_markdown, "csv": table_csv}[form](rows, metric)
    if form == "text":
        print(f"Sweep {parent.data.tags.get(SWEEP_TAG, '?')} - parent run {parent.info.run_id} "
              f"({parent.info.status}), {len(rows)} runs ranked by {metric}:")
    print(text.rstrip("\n"))
    if output:
        Path(output).write_text(text if text.endswith("\n") else text + "\n")
    return 0


def main(argv=None) -> int:
    """``dlexp-sweep``: the ranked table of a sweep, or the list of sweeps, from an MLflow store."""
    from ..store import default_store
    from ..tracking import RetryingClient

    args = _parser().parse_args(argv)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{default_store()}"
    try:
        client = RetryingClient(uri, create=False)
        if args.command == "list":
            return _list(client, uri, args.experiment, args.max)
        return _table(client, args.sweep, args.format, args.output)
    except KeyboardInterrupt:
        print("dlexp-sweep: stopped (interrupted)", file=sys.stderr)
        return 130
    except ValueError as e:  # no store there, not a store, a server that is not MLflow (one line each)
        print(f"dlexp-sweep: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the store failed while being read
        print(f"dlexp-sweep: error: {uri}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return 2
