"""The run/sweep contract: what a run, its sweep and the readers of the store agree on.

* Tag names, and where a job finds its sweep: the sweep's parent run id is written to
  ``<sweep dir>/mlflow_parent_run_id`` by the launching process (:class:`dlexp.sweep.callback.MlflowSweep`)
  before any job starts; every job finds it there (:func:`parent_run_id`) wherever it runs (joblib worker,
  SLURM node, ...), and tags its run ``mlflow.parentRunId``; :func:`children_of` reads them back.
* Run names that say what varied, short enough for the MLflow UI's runs list (:func:`run_name`):

  * a single run: its model and dataset, then its overrides (``mlp/digits lr=0.1``);
  * a sweep's child: its values of the swept keys only (``lr=0.01 l2=1e-4``);
  * a sweep's parent: what it sweeps, and how many jobs (``mlp/digits lr x l2 (9)``).

  A key is shown by its last part (``optimizer.lr`` -> ``lr``) unless two shown keys share it; a number
  to 4 significant digits, in the shorter of plain and scientific notation (Optuna's
  ``0.00037545539669128784`` -> ``3.755e-4``). ``tracking.run_name`` still names a run as given.
"""
import re
from pathlib import Path

from .. import metric_names as names

PARENT_FILE = "mlflow_parent_run_id"
KEYS_FILE = "mlflow_sweep_keys"  # the swept keys, one a line: what a job's run is named by (:func:`run_name`)
SWEEP_TAG = "dlexp.sweep_id"
PARENT_TAG = "mlflow.parentRunId"
OBJECTIVE_TAG = "dlexp.objective"  # "<metric>:<direction>", set by each run: what a sweep ranks it by
PRUNED_TAG = "dlexp.pruned"
ERROR_TAG = "dlexp.error"  # why a run FAILED (set by the run code, or by the sweep for a job without a run)
SKIPPED_TAG = "dlexp.skipped_from"  # a job not trained again (trainer.skip_finished): the run holding its result
EARLY_TAG = "dlexp.failed_before_run"  # a run the sweep made for a job that failed before its own run existed
COMMAND_TAG = "dlexp.command"  # the command line that made the run
OVERRIDES_TAG = "dlexp.overrides"  # the run's overrides, space-separated
CONFIG_KEY_TAG = "dlexp.config_key"  # a hash of what the run computes: equal keys, equal runs (trainer.skip_finished)
DATA_CHECKSUM_TAG = "dlexp.data_checksum"  # sha256 of the data the run read
DATA_SOURCE_TAG = "dlexp.data_source"  # where that data came from
DEVICE_TAG = "dlexp.device"  # the device it trained on
CPU_THREADS_TAG = "dlexp.cpu_threads"  # torch's CPU threads and how they wait (dlexp/threads.py)
GIT_COMMIT_TAG = "dlexp.git_commit"  # the code's commit
VERSIONS_TAG = "dlexp.versions"  # package versions
TORCH_VERSION_TAG = "dlexp.torch_version"  # torch's version
OUTPUT_DIR_TAG = "dlexp.output_dir"  # the run's directory (Hydra's output dir)
PRETRAINED_FROM_TAG = "dlexp.pretrained_from"  # the checkpoint its weights started from
REGISTERED_TAG = "dlexp.registered_model"  # <name>/<version> it was registered as
RESUMED_FROM_TAG = "dlexp.resumed_from"  # the saved state it resumed from
BEST_RUN_TAG = "dlexp.best_run_id"  # a sweep's parent: its best child
BEST_OVERRIDES_TAG = "dlexp.best_overrides"  # a sweep's parent: its best child's overrides
RANKED_BY_TAG = "dlexp.ranked_by"  # a sweep's parent: the metric its children are ranked by
SWEEP_DIR_TAG = "dlexp.sweep_dir"  # a sweep's parent: its directory
ROLE_TAG = "dlexp.sweep"  # a sweep's parent: 'parent'
STOPPED_TAG = "dlexp.stopped"  # a sweep stopped by Ctrl-C / SIGTERM: why, and how many jobs finished
STEP_TAG = "dlexp.step"  # the unit its curves' steps count (tracking.step)
CALLBACK_KEY = "mlflow_sweep"  # hydra.callbacks.<key> in conf/config.yaml


def parent_run_id():
    """The parent run of the sweep this job belongs to, or None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    path = Path(hc.sweep.dir) / PARENT_FILE
    return path.read_text().strip() if path.exists() else None


def swept_keys() -> list:
    """The keys the sweep this job belongs to sweeps (written beside the parent run's id), or []."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return []
    path = Path(HydraConfig.get().sweep.dir) / KEYS_FILE
    return path.read_text().split() if path.exists() else []


def callback_config() -> dict:
    """This job's ``hydra.callbacks.mlflow_sweep`` node (empty when there is none)."""
    from hydra.core.hydra_config import HydraConfig

    callbacks = HydraConfig.get().get("callbacks") or {}
    return callbacks.get(CALLBACK_KEY) or {}


def sweep_overrides(config):
    """(swept, fixed): the command line's and the sweeper's ``params`` overrides, as strings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    swept, fixed = [], []
    params = config.hydra.sweeper.get("params") or {}
    candidates = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    for text in candidates:
        try:
            override = parser.parse_override(text)
        except Exception:  # not ours to judge: the sweeper reports bad overrides
            fixed.append(text)
            continue
        (swept if override.is_sweep_override() else fixed).append(text)
    return swept, fixed


def override_key(override: str) -> str:
    """``+optimizer.lr=0.1`` -> ``optimizer.lr``."""
    return override.split("=", 1)[0].lstrip("+~")


def children_of(client, parent) -> list:
    """Every run nested under ``parent`` (any status, deleted ones too), in pages of 1000."""
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                                  run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


HIDDEN = ("tracking.", "trainer.progress", "trainer.threads", "trainer.checkpoint_every", "trainer.resume",
          "trainer.skip_finished", "hydra.", "hydra/")  # how a run is shown, tracked or run, not what it computes
MAX_LENGTH = 240


def short_value(text: str) -> str:
    """A float to 4 significant digits, in its shorter spelling; anything else (ints, words, lists) as is."""
    text = str(text)
    if not re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][-+]?\d+)", text):
        return text
    x = float(text)
    plain = f"{x:.4g}"
    if "e" in plain:
        plain = f"{x:.12f}".rstrip("0")
    mantissa, _, exponent = f"{x:.3e}".partition("e")
    sci = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return plain if len(plain) <= len(sci) else sci


def _split(override: str):
    key, _, value = override.lstrip("+~").partition("=")
    return key, value


def short_keys(keys) -> dict:
    """key -> its last dotted part, unless another of ``keys`` has the same last part (then the key)."""
    keys = list(keys)
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def shown(overrides) -> str:
    """``key=value`` overrides, keys and numbers shortened."""
    pairs = [_split(o) for o in overrides]
    names = short_keys(k for k, _ in pairs)
    return " ".join(f"{names[k]}={short_value(v)}" for k, v in pairs)


def single_name(model: str, dataset: str, overrides) -> str:
    """``mlp/digits lr=0.1``: a run outside a sweep."""
    rest = [o for o in overrides if "=" in o and not o.lstrip("+~").startswith(HIDDEN + ("model=", "dataset="))]
    return " ".join([f"{model}/{dataset}", shown(rest)]).strip()[:MAX_LENGTH]


def child_name(overrides, swept_keys) -> str:
    """``lr=0.01 l2=1e-4``: a sweep's job, by its values of the swept keys (in the sweep's key order)."""
    by_key = {_split(o)[0]: o for o in overrides}
    return shown([by_key[k] for k in swept_keys if k in by_key])[:MAX_LENGTH]


def parent_name(model: str, dataset: str, swept_keys, n_jobs=None) -> str:
    """``mlp/digits lr x l2 (9)``: a sweep, by what it sweeps (model or dataset left out when swept)."""
    head = "/".join(str(v) for k, v in (("model", model), ("dataset", dataset)) if k not in swept_keys)
    what = " x ".join(short_keys(swept_keys).values()) or "sweep"
    return " ".join(p for p in (head, what, f"({n_jobs})" if n_jobs else "") if p)[:MAX_LENGTH]


def run_name(run, overrides) -> str:
    """The name of ``run`` (a RunConfig) with these overrides: the user's ``tracking.run_name``, else a
    sweep child's or a single run's."""
    if run.tracking.run_name:
        return run.tracking.run_name
    keys = swept_keys()
    if keys:
        return child_name(overrides, keys) or single_name(run.model.name, run.dataset.name, overrides)
    return single_name(run.model.name, run.dataset.name, overrides)


def objective_tag(metric: str, direction: str) -> str:
    """The value of a run's ``dlexp.objective`` tag: ``<metric>:<min|max>``, what a sweep ranks it by."""
    return f"{metric}:{direction}"


def objective_of(run) -> tuple:
    """(metric, direction) from a run's ``dlexp.objective`` tag (an old metric name read as the current one),
    or (None, None) when it has none."""
    metric, _, direction = run.data.tags.get(OBJECTIVE_TAG, "").rpartition(":")
    if not metric or direction not in ("min", "max"):
        return None, None
    return names.NEW.get(metric, metric), direction


def runs_with_config_key(client, experiment_id: str, key: str, finished: bool, limit: int = 50) -> list:
    """The runs of an experiment with this config key (``dlexp.config_key``: equal keys, equal runs), newest
    first: the FINISHED ones by end time (``trainer.skip_finished``), or every one by start time (resume)."""
    where = f"tags.`{CONFIG_KEY_TAG}` = '{key}'" + (" and attributes.status = 'FINISHED'" if finished else "")
    order = "attributes.end_time DESC" if finished else "attributes.start_time DESC"
    return client.search_runs([experiment_id], where, order_by=[order], max_results=limit)
