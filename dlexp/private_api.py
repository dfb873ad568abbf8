"""Every private API dlexp uses, each behind one function that first checks that the installed package is a
version the use was written and tested against. An upgrade that may have changed the private part ends in
one line naming the supported versions, before any work, instead of an AttributeError deep inside a run.
``pyproject.toml`` pins the same ranges.

=================  ==========================================================  =============================
package            what dlexp uses, and why                                    function
=================  ==========================================================  =============================
hydra-core         ``hydra._internal.utils.run_and_report``: Hydra's error     :func:`report_hydra_errors_with`
                   report, replaced by dlexp's one line
hydra-core         ``ConfigLoaderImpl`` (``_apply_overrides_to_config``,       :func:`hydra_config_loader`,
                   ``get_overrides_dirname``): a sweep's jobs composed from    :func:`apply_overrides`,
                   one cached base                                             :func:`overrides_dirname`
hydra-core         ``BasicSweeper.split_arguments``: the basic sweeper's jobs  :func:`split_arguments`
                   in its order, for the check of every job before the first
submitit           ``JobEnvironment._usr_sig``, a ``SignalHandler``'s          :func:`preemption_signal`,
                   ``_delayed``: a preempted job requeued with its resume      :func:`delayed_job`
mlflow             ``mlflow.store.db.utils._get_latest_schema_revision``: a    :func:`mlflow_schema`
                   sqlite store's tables and schema revision, checked once
torch              ``torch.nn.utils.stateless._reparametrize_module``: a       :func:`reparametrize`
                   model's parameters swapped for ``torch.func``'s values
=================  ==========================================================  =============================
"""
from functools import lru_cache

from .checks import ConfigError

SUPPORTED = {"hydra-core": ">=1.3,<1.4", "submitit": ">=1.5,<1.6", "mlflow": ">=3.0,<4", "torch": ">=2.1,<3"}


class UnsupportedVersion(ConfigError):
    """An installed package outside the versions dlexp's use of its private parts was written for."""


def require(package: str, what: str) -> None:
    """Raise :class:`UnsupportedVersion` (one line) unless ``package``'s installed version is supported."""
    have = _installed(package)
    if not _supported(have, SUPPORTED[package]):
        raise UnsupportedVersion(f"{package} {have} is not supported: dlexp uses {what}, private to {package}, "
                                 f"as it is in {package}{SUPPORTED[package]}; install one of those "
                                 f"(pip install '{package}{SUPPORTED[package]}')")


@lru_cache(maxsize=None)
def _installed(package: str) -> str:
    from importlib.metadata import version

    return version(package)


@lru_cache(maxsize=None)
def _supported(have: str, spec: str) -> bool:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(spec).contains(have, prereleases=True)


def report_hydra_errors_with(report) -> None:
    """Hydra's ``run_and_report`` (which prints its own traceback or message) replaced by ``report``."""
    require("hydra-core", "hydra._internal.utils.run_and_report")
    import hydra._internal.utils as hydra_utils

    hydra_utils.run_and_report = report


def hydra_config_loader():
    """Hydra's config loader class, to subclass."""
    require("hydra-core", "hydra._internal.config_loader_impl.ConfigLoaderImpl")
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    return ConfigLoaderImpl


def apply_overrides(overrides: list, cfg) -> None:
    """Hydra's own application of parsed value overrides to a composed config, in their order."""
    hydra_config_loader()._apply_overrides_to_config(overrides, cfg)


def overrides_dirname(overrides: list, kv_sep: str, item_sep: str, exclude_keys: list) -> str:
    """``hydra.job.override_dirname`` as Hydra computes it."""
    require("hydra-core", "hydra._internal.config_loader_impl.get_overrides_dirname")
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(overrides=overrides, kv_sep=kv_sep, item_sep=item_sep,
                                 exclude_keys=exclude_keys)


def split_arguments(overrides: list) -> list:
    """The basic sweeper's jobs (lists of override strings), in its order."""
    require("hydra-core", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper")
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(overrides, None)[0]


def preemption_signal():
    """The signal submitit's job environment uses for preemption ($SUBMITIT_PREEMPT_SIGNAL, USR2 by default)."""
    require("submitit", "JobEnvironment._usr_sig")
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()


def delayed_job(handler):
    """The pickled call (``DelayedSubmission``) submitit's signal handler requeues."""
    require("submitit", "SignalHandler._delayed")
    return handler.__self__._delayed


def mlflow_schema() -> tuple:
    """(the table names, the latest alembic revision) of MLflow's sqlite tracking schema."""
    require("mlflow", "mlflow.store.db.utils._get_latest_schema_revision")
    from mlflow.store.db.utils import Base, _get_latest_schema_revision

    return frozenset(Base.metadata.tables), _get_latest_schema_revision()


def reparametrize():
    """``fn(module, parameters)``: a context in which ``module``'s parameters are the given tensors (what
    ``torch.func`` differentiates). Checked once, here: the function runs inside a compiled step."""
    require("torch", "torch.nn.utils.stateless._reparametrize_module")
    import torch.nn.utils.stateless

    return torch.nn.utils.stateless._reparametrize_module
