"""What an Optuna sweep needs before it starts: the sweeper installed (the ``[optuna]`` extra), and a
study storage its Optuna can open; each refused in one line, exit 2, before any run exists.

* ``hparams_search=optuna`` (or ``hydra/sweeper=optuna``) without hydra-optuna-sweeper installed:
  ``pip install 'dlexp[optuna]'``.
* ``hydra.sweeper.storage=<database URL>`` with Optuna 2 (hydra-optuna-sweeper 1.3 pins ``optuna<3``):
  Optuna 2's RDB storage cannot read its own schema version under SQLAlchemy 2, which MLflow 3 needs
  (it ends in a bare ``AssertionError`` after alembic's log). The study lives in memory; every trial is
  a child run in MLflow, and the sweep's parent run gets the study's pictures rebuilt from them
  (:mod:`dlexp.sweep.study`). With Optuna 3 or later, a storage is used as given, except the MLflow
  store's own database (both keep an ``alembic_version`` table): a file beside it, e.g.
  ``sqlite:///outputs/optuna.db``.
"""
import importlib.util
import re

PLUGIN = "hydra_plugins.hydra_optuna_sweeper"
ASKS = re.compile(r"^\+{0,2}(hparams_search=optuna\w*|hydra/sweeper=optuna)$")


def missing_sweeper(argv) -> str:
    """The one-line error for a command line that asks for Optuna without its sweeper, or None."""
    asked = next((a for a in argv if ASKS.match(a)), None)
    if asked is None:
        return None
    try:
        if importlib.util.find_spec(PLUGIN) is not None:
            return None
    except ImportError:
        pass
    return (f"{asked.lstrip('+')} needs Hydra's Optuna sweeper, which is not installed: "
            "pip install 'dlexp[optuna]' (or: pip install hydra-optuna-sweeper)")


def _major(version: str) -> int:
    return int(re.match(r"\d+", version).group(0))


def storage_problem(storage, tracking_uri: str) -> str:
    """The one-line error for ``hydra.sweeper.storage=<storage>``, or None (null: in memory)."""
    if storage is None or str(storage) in ("", "null", "None"):
        return None
    storage = str(storage)
    import optuna

    if _major(optuna.__version__) < 3 and not storage.startswith("redis"):
        import sqlalchemy

        if _major(sqlalchemy.__version__) >= 2:
            return (f"hydra.sweeper.storage={storage!r} is not allowed: Optuna {optuna.__version__} (pinned by "
                    f"hydra-optuna-sweeper) cannot open a database with SQLAlchemy {sqlalchemy.__version__}, "
                    "which MLflow 3 needs; leave it null (every trial is a run in MLflow, and the parent run "
                    "gets the study's pictures)")
    if tracking_uri and storage.rstrip("/") == str(tracking_uri).rstrip("/"):
        return (f"hydra.sweeper.storage={storage!r} is not allowed: it is the MLflow store's database; "
                "use a file beside it, e.g. sqlite:///outputs/optuna.db")
    return None
