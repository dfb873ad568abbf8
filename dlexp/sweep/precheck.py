"""Every job of a sweep composed and validated before the first one trains.

A bad value in a sweep list (``optimizer.lr=0.1,-1``, ``model=mlp,nope``, ``optimizer.batch_size=20,abc``)
would otherwise surface only when its job comes, after the jobs before it have trained.
:func:`check_jobs` (called by the callback's ``on_multirun_start``, in the launching process, before the
parent run exists) enumerates the jobs as the sweeper will:

* the basic sweeper: its own cartesian product (``BasicSweeper.split_arguments``), numbered as Hydra
  numbers the jobs (``hydra.job.num``, from 0);
* any other sweeper (Optuna's): each discrete value of each swept key, and the bounds of each interval
  (a float interval's upper end may be refused if just below it is not: Optuna samples [low, high)), one
  key at a time with the others at their first value;

and composes each job with Hydra's config loader and validates it with :func:`dlexp.config.validate`.
It raises :class:`~dlexp.config.ConfigError` for the first bad job: ``<override> (job 1 of 2): <why>``.

Composing is Hydra's slow part (~80 ms a config): the multirun's loader (:mod:`.compose`) composes
each set of config-group overrides (``model=``, ``experiment=``...) once and applies a job's plain value
overrides to a copy, so a 16-job grid over values costs one composition; each job's config is then
handed to the basic sweeper's own check of the job, which would compose it again.
"""
import math
import re

from ..tracking.contract import override_key


def _arguments(config) -> list:
    """The sweeper's input, as it builds it: ``hydra.sweeper.params`` then the command line's overrides."""
    params = config.hydra.sweeper.get("params") or {}
    return [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)


def _bounds(override) -> list:
    """An interval's values to check: (value, value to check instead if it is refused) for each bound.
    Optuna samples a float interval in [low, high): a refused upper end is checked again just below it."""
    sweep = override.value()
    start, end = sweep.start, sweep.end
    if isinstance(start, int) and isinstance(end, int):
        return [(str(start), None), (str(end), None)]
    return [(repr(float(start)), None), (repr(float(end)), repr(math.nextafter(float(end), float(start))))]


def _swept(overrides) -> dict:
    """key -> the text of its sweep, for the swept keys that no plain override fixes (the Optuna sweeper
    drops a fixed key from its search space)."""
    fixed = {o.get_key_element() for o in overrides if not o.is_sweep_override()}
    return {o.get_key_element(): o for o in overrides if o.is_sweep_override() and o.get_key_element() not in fixed}


def _search_space_jobs(overrides) -> list:
    """(job, job to check instead if it is refused): one per value (or bound) of each swept key, the other
    swept keys at their first value, the plain overrides as given."""
    swept = _swept(overrides)
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    values = {k: [(v, None) for v in o.sweep_string_iterator()] if o.is_discrete_sweep() else _bounds(o)
              for k, o in swept.items()}
    first = {k: v[0][0] for k, v in values.items()}
    jobs = {tuple(fixed + [f"{k}={v}" for k, v in first.items()]): None}
    for key, candidates in values.items():
        for value, instead in candidates:
            job = tuple(fixed + [f"{k}={value if k == key else first[k]}" for k in values])
            jobs.setdefault(job, instead and fixed + [f"{k}={instead if k == key else first[k]}" for k in values])
    return list(jobs.items())


def _grid_jobs(overrides) -> list:
    """The basic sweeper's jobs, in its order (job numbers), as (job, None)."""
    from .. import private_api
    from ..config import ConfigError

    for o in overrides:
        if o.is_sweep_override() and not o.is_discrete_sweep():
            raise ConfigError(f"{o.input_line}: the basic sweeper takes lists (a,b), choice() and range(); "
                              "an interval needs a sampler (hparams_search=optuna)")
    return [(job, None) for job in private_api.split_arguments(overrides)]


def _hydra_error(e: BaseException):
    """A Hydra / OmegaConf composition error as a one-line ConfigError (the ``dlexp`` command's wording)."""
    from ..composition import hydra_message
    from ..config import ConfigError

    return ConfigError(hydra_message(e))


class _Composer:
    """Each job's config composed by this multirun's config loader (:mod:`.compose`: one composition per
    set of config-group overrides) and validated; kept for the sweeper's own check of the job."""

    def __init__(self, master, loader):
        self.master, self.loader = master, loader

    def check(self, job: list) -> None:
        """Raise ConfigError if this job's config cannot be composed or does not validate."""
        from ..config import ConfigError, validate
        from ..run.params import check_overrides
        from .compose import keep

        try:
            cfg = self.loader.load_sweep_config(self.master, job)
        except ConfigError:
            raise
        except Exception as e:  # Hydra's and OmegaConf's composition errors
            raise _hydra_error(e) from None
        run = validate(cfg)
        check_overrides(run.model.name, job)  # e.g. optimizer.lr for model=da: refused
        keep(self.loader, self.master, job, cfg)

    def accepts(self, job: list) -> bool:
        from ..config import ConfigError

        try:
            self.check(job)
        except ConfigError:
            return False
        return True


def _culprit(job: list, swept: set, message: str) -> str:
    """The job's override to name: a swept one the message names, else one it names, else the swept ones."""
    def named(o):
        return re.search(rf"(?<![\w.]){re.escape(override_key(o))}(?![\w.])", message) is not None

    for candidates in ([o for o in job if override_key(o) in swept and named(o)], [o for o in job if named(o)],
                       [o for o in job if override_key(o) in swept]):
        if candidates:
            return " ".join(candidates)
    return " ".join(job) or "the sweep's config"


def _where(basic: bool, num: int, n: int, key: str, sources: dict) -> str:
    if basic:
        return f"job {num} of {n}"
    return f"a value of {sources[key]}" if key in sources else "a fixed value of the sweep"


def check_jobs(config) -> int:
    """Compose and validate every job of the multirun ``config``; returns how many were checked.
    Raises ConfigError ``<override> (job i of n): <why>`` for the first bad one."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ..config import ConfigError

    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    overrides = parser.parse_overrides(_arguments(config))
    basic = str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper")
    jobs = _grid_jobs(overrides) if basic else _search_space_jobs(overrides)
    sources = {override_key(k): o.input_line for k, o in _swept(overrides).items()}
    composer = _Composer(config, loader)
    for num, (job, instead) in enumerate(jobs):
        job = list(job)
        try:
            composer.check(job)
        except ConfigError as e:
            if instead is not None and composer.accepts(instead):
                continue
            culprit = _culprit(job, set(sources), str(e))
            where = _where(basic, num, len(jobs), override_key(culprit.split(" ")[0]), sources)
            raise ConfigError(f"{culprit} ({where}): {e}") from None
    return len(jobs)
