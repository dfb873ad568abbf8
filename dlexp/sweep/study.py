"""An Optuna sweep's study pictures, for its parent run's ``images/``: ``optuna_history.png`` (Optuna's
optimisation history: each trial's objective and the best so far) and ``optuna_importance.png``
(Optuna's parameter importances from its random-forest evaluator, drawn here: Optuna 2.10's fANOVA and
its importance plot fail with today's scikit-learn and matplotlib), each with its data as CSV.

The study is rebuilt from the sweep's child runs, in the order they started (the sweeper's own study
lives in memory, :mod:`dlexp.sweep.optuna_setup`): a FINISHED run is a COMPLETE trial with its
objective, a pruned one PRUNED, a failed one FAIL; each swept key's distribution spans the values the
runs took (log-scaled where the sweep samples it on a log scale). Importances need two completed
trials whose params vary; with fewer, that picture is left out (said in the log).
"""
import logging
import warnings
from pathlib import Path

from .grid import key_value, log_spaced, numeric, ordered
from .plots import _figure, _write_csv, log_keys, metric_label, what_was_swept
from .table import objective, status

log = logging.getLogger("dlexp")
STATES = {"FINISHED": "COMPLETE", "SKIPPED": "COMPLETE", "PRUNED": "PRUNED", "FAILED": "FAIL"}


def _distributions(children, keys, logs) -> dict:
    """{key: an Optuna distribution over the values the runs took}; keys with a single value left out."""
    import optuna.distributions as d

    out = {}
    for key in keys:
        values = ordered(key_value(c, key) for c in children)
        if len(values) < 2:
            continue
        if not numeric(values):
            out[key] = d.CategoricalDistribution(tuple(values))
            continue
        low, high = float(values[0]), float(values[-1])
        log_scale = (key in logs or log_spaced(values)) and low > 0
        if hasattr(d, "FloatDistribution"):  # Optuna 3
            out[key] = d.FloatDistribution(low, high, log=log_scale)
        else:
            out[key] = d.LogUniformDistribution(low, high) if log_scale else d.UniformDistribution(low, high)
    return out


def rebuilt_study(parent, children, keys):
    """(an in-memory Optuna study of the sweep's runs, its metric)."""
    import optuna

    metric, direction = objective(children)
    study = optuna.create_study(direction="minimize" if direction == "min" else "maximize")
    dists = _distributions(children, keys, log_keys(parent, keys))
    for run in sorted(children, key=lambda c: c.info.start_time or 0):
        state, value = STATES.get(status(run)), run.data.metrics.get(metric)
        if state is None or (state == "COMPLETE" and value is None):
            continue
        params = {k: (float(key_value(run, k)) if not hasattr(dist, "choices") else key_value(run, k))
                  for k, dist in dists.items() if key_value(run, k) is not None}
        study.add_trial(optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state), value=value if state == "COMPLETE" else None,
            params=params, distributions={k: dists[k] for k in params}))
    return study, metric


def _save(ax, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = ax.figure
    fig.set_size_inches(7.2, 4.6)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _history(study, metric, title, out: Path) -> list:
    import matplotlib
    from optuna.visualization.matplotlib import plot_optimization_history

    with matplotlib.rc_context():  # Optuna sets pyplot's style (ggplot) for the process: for this picture only
        ax = plot_optimization_history(study, target_name=metric_label(metric))
        ax.set_title(f"{title}\noptimisation history of {len(study.trials)} trials", fontsize=10)
        _save(ax, out / "optuna_history.png")
    rows = [[t.number, t.state.name, "" if t.value is None else t.value] for t in study.trials]
    return [out / "optuna_history.png",
            _write_csv(out / "optuna_history.csv", ["trial", "state", metric], rows)]


def _importance(study, metric, title, out: Path) -> list:
    from optuna.importance import MeanDecreaseImpurityImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    varying = {k for k in study.trials[0].distributions} if study.trials else set()
    varying = {k for k in varying if len({t.params.get(k) for t in complete}) > 1}
    if len(complete) < 2 or not varying:
        log.info("no parameter-importance picture: it needs 2 completed trials whose params vary (%d completed)",
                 len(complete))
        return []
    importances = get_param_importances(study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=0))
    fig = _figure(7.2, 1.6 + 0.45 * len(importances))
    fig.subplots_adjust(left=0.3)
    ax = fig.subplots()
    names = list(importances)[::-1]  # the most important on top
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for y, name in enumerate(names):
        ax.text(importances[name], y, f" {importances[name]:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"importance for {metric_label(metric)} (Optuna, random forest)")
    ax.set_title(f"{title}\nparameter importances, {len(complete)} completed trials", fontsize=10)
    fig.savefig(out / "optuna_importance.png")
    return [out / "optuna_importance.png",
            _write_csv(out / "optuna_importance.csv", ["param", "importance"], list(importances.items()))]


def study_pictures(parent, children, keys, out: Path) -> list:
    """Draw the study's pictures into ``out`` (an Optuna sweep's parent only); returns the files written."""
    if parent.data.params.get("sweep.sweeper") != "OptunaSweeper" or not children:
        return []
    import matplotlib

    matplotlib.use("Agg")  # Optuna draws with pyplot: no window, in any process
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory ..."
    with warnings.catch_warnings():  # Optuna's matplotlib plots and create_trial are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study, metric = rebuilt_study(parent, children, keys)
        if not study.trials:
            return []
        out.mkdir(parents=True, exist_ok=True)
        title = what_was_swept(children, keys, metric)
        return _history(study, metric, title, out) + _importance(study, metric, title, out)
