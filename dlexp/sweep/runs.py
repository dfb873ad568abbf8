"""Reading a sweep from MLflow: its parent run (by run id, sweep id or sweep directory), its children,
and its ranked table."""
from pathlib import Path

from ..tracking.contract import PARENT_FILE, SWEEP_TAG, children_of
from ..tracking.provenance import is_run_id
from .table import rank


def find_parent(client, ref: str):
    """A sweep's parent run from its run id, its sweep id (tag), or its sweep directory."""
    from mlflow.entities import ViewType

    path = Path(ref) / PARENT_FILE
    if path.is_file():
        ref = path.read_text().strip()
    if is_run_id(ref):
        try:
            return client.get_run(ref)
        except Exception:
            pass
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    quoted = ref.replace("'", "\\'")
    for i in range(0, len(experiments), 100):
        runs = client.search_runs(experiments[i:i + 100], f"tags.`{SWEEP_TAG}` = '{quoted}'",
                                  run_view_type=ViewType.ALL, order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            return runs[0]
    raise LookupError(f"no sweep {ref!r}: not a parent run id, a sweep id or a sweep directory")


def swept_keys(parent) -> list:
    """The keys a sweep swept, as its parent run recorded them."""
    return [k for k in parent.data.params.get("sweep.keys", "").split(",") if k]


def sweep_table(client, parent, metric=None):
    """(rows, metric, children) of a sweep's parent run; children in the rows' order (best first)."""
    children = children_of(client, parent)
    rows, metric = rank(children, swept_keys(parent), metric)
    order = {row["run_id"]: i for i, row in enumerate(rows)}
    return rows, metric, sorted(children, key=lambda c: order[c.info.run_id])
