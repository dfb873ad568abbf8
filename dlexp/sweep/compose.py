"""A sweep's job configs composed once per set of config groups, not twice per job.

Hydra composes every job of a multirun from scratch, twice (the sweeper's check of each batch, then the
launcher): a defaults list, a few hundred YAML merges, ~80-100 ms a time, which on a small data set is
most of a job's cost. Only the config-group overrides (``model=mlp``, ``hydra/launcher=joblib``,
``+experiment=...``) change what is merged; a grid over values (``optimizer.lr=0.1,0.01``) composes
the same tree each time and then applies its values. :func:`install` gives this multirun's config
loader (an instance: Hydra's class is left alone) a ``load_sweep_config`` that

* composes, through Hydra itself, each distinct set of config-group overrides once (the *base*);
* builds a job's config from a copy of its base as Hydra's ``_load_configuration_impl`` does after
  composing: the value overrides applied in their order (``ConfigLoaderImpl._apply_overrides_to_config``),
  ``hydra.overrides.hydra`` / ``.task`` listed, ``hydra.job.override_dirname`` rebuilt;
* hands anything it does not handle (a sweep override, a failing override) to Hydra unchanged, so
  errors read as Hydra's;
* returns, once, a job's config composed ahead by the sweep's check of every job (:func:`keep`), to
  Hydra's basic sweeper, which composes each job again only to see that it composes.

The result equals Hydra's composition (tests/test_sweep_compose.py compares them). The loader travels
to joblib workers and submitit jobs by pickle: its class is importable there, its cache stays here.
"""
import copy

from .. import private_api

READY_MAX = 64  # job configs composed ahead and not yet asked for, kept at most (a big grid: the first ones)


class FastSweepLoader(private_api.hydra_config_loader()):
    """Hydra's loader, composing a sweep's jobs from one base per set of config-group overrides."""

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_dlexp_")}

    def load_sweep_config(self, master_config, sweep_overrides):
        ready = self.__dict__.get("_dlexp_ready")
        if ready:
            cfg = ready.pop(_job_key(master_config, sweep_overrides), None)
            if cfg is not None:
                return cfg
        try:
            cfg = _compose(self, master_config, list(sweep_overrides))
        except Exception:  # Hydra says what is wrong, in its own words
            cfg = None
        return cfg if cfg is not None else super().load_sweep_config(master_config, sweep_overrides)


def install(loader) -> None:
    """Give ``loader`` (this multirun's config loader) the fast ``load_sweep_config``."""
    if type(loader) is private_api.hydra_config_loader():
        loader.__class__ = FastSweepLoader


def _job_key(master, sweep_overrides) -> tuple:
    overrides = master.hydra.overrides
    return tuple(overrides.hydra), tuple(overrides.task), tuple(sweep_overrides)


def keep(loader, master, sweep_overrides, cfg) -> None:
    """Give ``cfg``, composed by ``loader`` for this job, to the loader's next ``load_sweep_config`` of the
    same job (Hydra's basic sweeper checks each job by composing it, then discards it): once; nothing is
    kept for a loader that is not a :class:`FastSweepLoader`, nor beyond :data:`READY_MAX` jobs."""
    if isinstance(loader, FastSweepLoader):
        ready = loader.__dict__.setdefault("_dlexp_ready", {})
        if len(ready) < READY_MAX:
            ready[_job_key(master, sweep_overrides)] = cfg


def _selects_group(loader, override) -> bool:
    groups = loader.__dict__.setdefault("_dlexp_groups", {})
    key = override.key_or_group
    if key not in groups:
        groups[key] = override.package is not None or "/" in key or bool(loader.get_group_options(key))
    return groups[key]


def _parse(loader, overrides: list) -> list:
    """Hydra's parse of each override (its grammar is slow: ~1 ms an override), once per text."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = loader.__dict__.setdefault("_dlexp_parsed", {})
    new = [text for text in overrides if text not in parsed]
    if new:
        parsed.update(zip(new, OverridesParser.create().parse_overrides(new)))
    return [parsed[text] for text in overrides]


def _compose(loader, master, sweep_overrides: list):
    """The job's config from its base, or None to let Hydra compose it."""
    from omegaconf import OmegaConf, open_dict

    hydra_overrides = list(OmegaConf.to_container(master.hydra.overrides.hydra))
    parsed = _parse(loader, hydra_overrides + sweep_overrides)
    if any(o.is_sweep_override() for o in parsed):
        return None
    jobs = parsed[len(hydra_overrides):]
    groups = tuple(o.input_line for o in jobs if _selects_group(loader, o))
    bases = loader.__dict__.setdefault("_dlexp_bases", {})
    key = (tuple(hydra_overrides), groups)
    if key not in bases:
        bases[key] = private_api.hydra_config_loader().load_sweep_config(loader, master, list(groups))
    cfg = copy.deepcopy(bases[key])
    private_api.apply_overrides([o for o in jobs if not _selects_group(loader, o)], cfg)
    app = [o for o in parsed if not o.is_hydra_override()]
    with open_dict(cfg.hydra):
        cfg.hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in app]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = private_api.overrides_dirname(app, dirname.kv_sep, dirname.item_sep,
                                                                       dirname.exclude_keys)
    OmegaConf.copy_cache(from_config=master, to_config=cfg)
    return cfg
