"""What a fidelity run is and where it is kept: its identity (the overrides that decide its result), its
name, the MLflow store and the runs in it."""
import sys
from pathlib import Path

from .protocols import Protocol

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "fidelity"
VOLATILE = ("trainer.threads=", "trainer.progress=", "trainer.resume=", "tracking.")  # how a run runs, not what
QUICK = ("trainer.max_epochs=2", "dataset.max_train=2000", "dataset.max_valid=1000", "dataset.max_test=1000")


def identity(p: Protocol, seed, dataset: str, quick: bool, estimate: bool = False) -> list:
    """The overrides that decide a run's result: a stored run with exactly these is this (protocol, seed)."""
    if estimate:
        e = p.estimate
        rows = 200 if quick else e.rows
        return merge(e.overrides, [f"dataset={dataset}", "trainer.seed=1", f"dataset.max_train={rows}",
                                   "dataset.max_valid=1000", "dataset.max_test=1000", "model.pretrain_epochs=1",
                                   "trainer.max_epochs=1"])
    extra = list(p.digits if dataset == "digits" else ())
    if quick:
        quick_set = QUICK if p.kind != "unsupervised" else [o for o in QUICK if not o.startswith("trainer.max_epochs")]
        extra += [*quick_set, *p.quick] + (["model.pretrain_epochs=1"] if p.kind != "supervised" else [])
    return merge(p.overrides, [f"dataset={dataset}", f"trainer.seed={seed}", *extra])


def merge(*groups) -> list:
    """Overrides in order, a later value of a key replacing an earlier one in its place (one value a key)."""
    out = {}
    for override in (o for group in groups for o in group):
        out[override.split("=", 1)[0]] = override
    return list(out.values())


def run_name(p: Protocol, seed, quick: bool) -> str:
    """``fidelity/<protocol>/seed<s>`` (``fidelity-quick/...`` for quick runs, ``.../estimate`` for timing runs)."""
    return f"{EXPERIMENT}{'-quick' if quick else ''}/{p.name}/" + ("estimate" if seed is None else f"seed{seed}")


def command(ident: list, name: str, store: str, threads) -> list:
    """The dlexp subprocess: the identity plus how to run it (store, name, progress, threads, resume)."""
    how = [f"tracking.uri={store}", f"tracking.experiment={EXPERIMENT}", f"tracking.run_name={name}",
           "trainer.progress=log", "trainer.resume=auto"] + ([f"trainer.threads={threads}"] if threads else [])
    return [sys.executable, "-m", "dlexp.cli", *ident, *how]


def stored_identity(run) -> list:
    """A stored run's overrides without the ones that only say how it ran."""
    return [o for o in run.data.tags.get("dlexp.overrides", "").split() if not o.startswith(VOLATILE)]


# ------------------------------------------------------------------ the store
def default_store(quick: bool) -> str:
    """Where the runs go without --store: outputs/fidelity(-quick)/mlflow.db in the repository."""
    return absolute_store(str(REPO / "outputs" / ("fidelity-quick" if quick else "fidelity") / "mlflow.db"))


def absolute_store(uri: str) -> str:
    """A path or sqlite URI made absolute, so the runs (in another working directory) find the same file."""
    if "://" not in uri:
        return "sqlite:///" + str(Path(uri).resolve())
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def sqlite_file(store: str):
    """The file of a sqlite store URI (None for any other store)."""
    return Path(store[len("sqlite:///"):]) if store.startswith("sqlite:///") else None


def work_dir(store: str) -> Path:
    """Where the runs' own output folders go: beside a sqlite store, else outputs/fidelity."""
    db = sqlite_file(store)
    return db.parent if db else REPO / "outputs" / "fidelity"


def stored_runs(store: str) -> list:
    """Every run of the fidelity experiment in the store (none if neither exists yet)."""
    db = sqlite_file(store)
    if db and not db.exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def matching(runs: list, name: str, ident: list) -> list:
    """The stored runs of this name and identity, newest first."""
    hits = [r for r in runs if r.info.run_name == name and stored_identity(r) == ident]
    return sorted(hits, key=lambda r: r.info.start_time or 0, reverse=True)


def finished(runs: list, name: str, ident: list):
    """The newest FINISHED run of this name and identity, or None."""
    return next((r for r in matching(runs, name, ident) if r.info.status == "FINISHED"), None)
