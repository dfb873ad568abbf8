"""The ``dlexp`` command: Hydra composes the config tree, we validate it, then run.

    dlexp model=mlp dataset=fashion_mnist regularization=l2
    dlexp experiment=tutorial_lenet
    dlexp -m model=mlp optimizer.lr=0.1,0.01,0.001
    dlexp --help / dlexp --cfg job

Every mistake ends in one line, ``dlexp: error: <what, the bad value, what is
allowed>``, exit 2: dlexp's own checks and Hydra's composition errors alike
(Hydra's report is replaced by :func:`_one_line`; ``HYDRA_FULL_ERROR=1`` keeps
the full trace). A run that fails ends with one line and exit 1; Ctrl-C or
SIGTERM with ``dlexp: stopped (...)`` and exit 130, at any moment. Heavy
imports happen inside :func:`main`, so an early Ctrl-C is handled too.
"""
import contextlib
import os
import sys
from pathlib import Path

from .composition import CONFIG_PATH, GROUPS, hydra_message, options


def help_text() -> str:
    lines = ["dlexp: the Deep Learning Tutorials as Hydra-configured, MLflow-tracked runs.", "",
             "usage: dlexp [group=option ...] [key=value ...]      one run",
             "       dlexp -m key=v1,v2 [key=v1,v2 ...]             a sweep (one run per combination)",
             "       dlexp --cfg job [overrides]                    the composed config, without running", "",
             "config groups (group=option):"]
    lines += [f"  {g + ':':16} {', '.join(options(g))}" for g in GROUPS]
    lines += ["", "keys: dlexp --cfg job shows every key with its value; README.md explains them.",
              "      dlexp --hydra-help shows Hydra's own flags."]
    return "\n".join(lines)


def fail(message: str, code: int = 2):
    print(f"dlexp: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _one_line(func):
    """Replaces Hydra's ``run_and_report``: any exception that escapes Hydra ends in one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .config import ConfigError

    try:
        return func()
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if isinstance(e, ConfigError):
            fail(str(e))
        if isinstance(e, (HydraException, OmegaConfBaseException)):
            fail(hydra_message(e))
        _fail_if_all_jobs_failed()  # e.g. Optuna's "No trials are completed yet" after every trial failed
        fail(f"{type(e).__name__}: {e} (HYDRA_FULL_ERROR=1 shows the trace)", 1)


def _fail_if_all_jobs_failed() -> None:
    """A multirun exits non-zero only if every job failed (the sweep callback said how many did)."""
    from .sweep import multirun_outcome

    outcome = multirun_outcome()
    if outcome and outcome[1] and outcome[0] == outcome[1]:
        fail(f"all {outcome[1]} jobs of the sweep failed", 1)


def _composed_yaml(cfg, hc) -> str:
    """The job's composed config as YAML: the text Hydra has just written to ``.hydra/config.yaml``
    (``OmegaConf.to_yaml`` of the same config), read back rather than made again; else made here."""
    from omegaconf import OmegaConf

    if hc.output_subdir is not None:
        with contextlib.suppress(OSError):
            return (Path(hc.runtime.output_dir) / hc.output_subdir / "config.yaml").read_text(encoding="utf-8")
    return OmegaConf.to_yaml(cfg)


def _job(cfg) -> float:
    """Hydra's task function: validate, run, and turn dlexp's errors into one line (or, in a sweep, a
    failed job that the sweep callback records while the sweep goes on)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .config import validate
    from .run.params import check_overrides
    from .errors import exit_code, message
    from .interrupt import install
    from .longlived import freeze_long_lived

    install()  # in a joblib worker: SIGTERM outside a run is a Ctrl-C too
    freeze_long_lived()
    hc = HydraConfig.get()
    try:
        schemas = [f"{g}={c}" for g, c in hc.runtime.choices.items() if str(c).startswith("_schema")]
        if schemas:
            from .config import ConfigError

            raise ConfigError(f"{schemas[0]} is not allowed: schemas are not options "
                              f"(one of {', '.join(options(schemas[0].split('=')[0]))})")
        run = validate(cfg)
        check_overrides(run.model.name, hc.overrides.task)  # a key the model never reads: refused
        from .run.experiment import run_experiment

        final = run_experiment(run, _composed_yaml(cfg, hc), list(hc.overrides.task), hc.runtime.output_dir)
    except Exception as e:
        if hc.mode == RunMode.MULTIRUN:
            raise  # the sweep's callback records the job as FAILED; the sweep goes on
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if exit_code(e) == 2:  # refused before its run started: no empty run directory is left
            from .rundir import remove_unused

            remove_unused(hc.runtime.output_dir)
        fail(message(e), exit_code(e))
    # the sweep objective (e.g. for Optuna): validation error, or the final cost of an unsupervised model
    from .metric_names import BEST_VALID, FINAL_COST

    return final.get(BEST_VALID, final.get(FINAL_COST))


def main() -> None:
    """The console entry point."""
    from .interrupt import hide_swallowed_stops, install, raise_swallowed
    from .threads import wait_briefly

    install()  # first: from here on SIGTERM is a Ctrl-C, never a silent exit 143
    hide_swallowed_stops()
    wait_briefly()  # before torch loads its OpenMP runtime
    try:
        if any(a in ("--help", "-h") for a in sys.argv[1:]):
            print(help_text())
            return
        from .sweep.optuna_setup import missing_sweeper

        missing = missing_sweeper(sys.argv[1:])
        if missing:
            fail(missing)
        import hydra

        from . import private_api
        from .config import register_configs
        from .longlived import freeze_long_lived
        from .rundir import register_resolvers

        register_configs()
        register_resolvers()
        freeze_long_lived()  # Hydra, torch and dlexp's config, imported
        try:
            private_api.report_hydra_errors_with(_one_line)
        except private_api.UnsupportedVersion as e:
            fail(str(e))
        hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(_job)()
        _fail_if_all_jobs_failed()
        raise_swallowed()  # a Ctrl-C that a finalizer swallowed still ends the command as a stop
    except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: a started run is marked KILLED, a sweep's parent too
        _stopped(str(e) or "interrupted")
    except Exception as e:  # an error raised while a stop was being handled (e.g. inside an import) is the stop
        from .interrupt import stop_behind

        stop = stop_behind(e)
        if stop is None:
            raise
        _stopped(str(stop) or "interrupted")


def _stopped(why: str) -> None:
    """After Ctrl-C / SIGTERM: no process of the command left, an open sweep ended KILLED with its count of
    finished jobs, one line, exit 130. Further signals are ignored meanwhile (this is the stop they ask for)."""
    import signal

    from .interrupt import kill_descendants

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    kill_descendants()
    if "dlexp.sweep.callback" in sys.modules:
        from .sweep.callback import stop_open_sweeps

        why = "; ".join([why, *stop_open_sweeps(why)])
    print(f"dlexp: stopped ({why})", file=sys.stderr, flush=True)
    sys.exit(130)


if __name__ == "__main__":
    main()
