"""Pruning: stop a sweep's run that falls behind the sweep's finished runs.

``hydra.callbacks.mlflow_sweep.pruner`` names an Optuna pruner to instantiate (e.g.
``optuna.pruners.MedianPruner``; ``hparams_search=optuna`` sets one). In such a sweep the run code adds
:func:`pruner_for`'s listener beside the tracker and the progress display; at each validation it
reports ``valid/error`` (at the step its run logs it) to an Optuna trial whose study holds the
validation curves of the sweep's finished runs, read from MLflow. When the pruner says so it raises
:class:`dlexp.train.result.Pruned` (its ``value``: the best validation error so far); the run code ends
the run FINISHED and tags it ``dlexp.pruned`` (an outcome of the sweep, not a crash), and
:class:`~dlexp.sweep.callback.MlflowSweep` turns the job into a completed one with that value, so the
sweeper carries on.
"""
import warnings

from ..metric_names import BEST_VALID, VALID_ERROR
from ..tracking.contract import PRUNED_TAG, callback_config, children_of, parent_run_id


def pruner_for(client):
    """In a sweep whose callback names a ``pruner``: a listener ``(event, metrics, step)`` that raises
    :class:`~dlexp.train.result.Pruned` to stop the run; else (or with tracking off: no client) None."""
    if client is None:
        return None
    parent = parent_run_id()
    if not parent:
        return None
    spec = callback_config().get("pruner")
    if not spec:
        return None
    return OptunaPruning(spec, client, parent)


class OptunaPruning:
    """Ask an Optuna pruner whether this run falls behind the sweep's finished runs at this step."""

    def __init__(self, spec, client, parent: str):
        self.spec, self.client, self.parent = spec, client, parent
        self.trial = None
        self.best = float("inf")
        self.reported = set()  # the steps reported to the trial

    def _start(self):
        import optuna
        from hydra.utils import instantiate

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", pruner=instantiate(self.spec))
        for run in children_of(self.client, self.client.get_run(self.parent)):
            if run.info.status != "FINISHED" or run.data.tags.get(PRUNED_TAG) or BEST_VALID not in run.data.metrics:
                continue
            history = self.client.get_metric_history(run.info.run_id, VALID_ERROR)
            with warnings.catch_warnings():  # stderr is for errors: create_trial / add_trial are "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.add_trial(optuna.trial.create_trial(
                    state=optuna.trial.TrialState.COMPLETE, value=run.data.metrics[BEST_VALID],
                    params={}, distributions={}, intermediate_values={h.step: h.value for h in history}))
        self.trial = study.ask()

    def end(self, status: str, reason: str = None) -> None:
        """Nothing to close: the trial lives in memory only."""

    def __call__(self, event: str, metrics: dict, step: int) -> None:
        if event != "validation" or VALID_ERROR not in metrics:
            return
        if self.trial is None:
            self._start()
        value = float(metrics[VALID_ERROR])
        self.best = min(self.best, value)
        if step in self.reported:
            return  # a second validation in the same epoch (tracking.step=epoch): its first one was reported
        self.reported.add(step)
        self.trial.report(value, step)
        if self.trial.should_prune():
            from ..train.result import Pruned

            raise Pruned(f"at step {step}: valid/error {value:.4f} behind the sweep's finished runs", self.best)
