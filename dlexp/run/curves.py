"""The trainer's reports as MLflow curves: one step unit for every curve of every run.

The trainer reports ``(event, metrics, step)`` with its own names and its position in ``metrics``
(``epoch``, ``iteration``, ``examples``: see :meth:`dlexp.train.loop.Loop.where`). :class:`Curves`
renames the metrics (:data:`dlexp.metric_names.TRAINER`: ``valid_error`` -> ``valid/error``, ...) and
puts every point at the position ``tracking.step`` counts: the epoch by default, so runs of any batch
size overlay in the MLflow UI's charts; timing metrics (``perf/``) sit on the same axis.
"""
UNITS = ("epoch", "examples", "iteration")
POSITION = ("epoch", "iteration", "examples")


class Curves:
    """A listener that forwards each report, renamed and at its step in ``unit``, to ``targets``
    (the tracker, a sweep's pruner)."""

    def __init__(self, unit: str, targets: list):
        from ..metric_names import TRAINER

        self.unit, self.targets, self.names = unit, [t for t in targets if t is not None], TRAINER

    def __call__(self, event: str, metrics: dict, step: int) -> None:
        step = int(metrics.get(self.unit, step))
        named = {self.names.get(k, k): v for k, v in metrics.items() if k not in POSITION}
        for target in self.targets:
            target(event, named, step)

    def end(self, status: str, reason: str = None) -> None:
        """The run ends: each target's own end (the tracker ends the MLflow run ``status``)."""
        for target in self.targets:
            target.end(status, reason)
