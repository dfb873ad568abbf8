"""The names a run's metrics have in MLflow, and the names older runs used.

Curves (one point per epoch, or per ``tracking.step`` unit) are grouped by prefix, so the MLflow UI
draws them in sections: ``train/``, ``valid/``, ``test/``, ``perf/`` (and ``pretrain/``, which the
pretraining loop names itself). Error rates are fractions (0.124), as MLflow stores them; the console
prints the same numbers as percentages (12.40 %).

Summary metrics (``best/``, ``final/``) are one value each, logged at step 0: the UI shows them as a
number (a bar chart), never as a curve. A sweep's parent run copies its best child's summary metrics
under the same names.

Runs logged before these names (``valid_error``, ``best_valid_error``, ...) are still read:
:func:`get` falls back to a name's old spelling.
"""
TRAINER = {  # the trainer's names (dlexp.train) -> MLflow's
    "train_nll": "train/nll", "lr": "train/lr", "penalty": "train/penalty",
    "valid_error": "valid/error", "best_valid_error": "valid/best_error", "test_error": "test/error",
    "epoch_seconds": "perf/epoch_seconds", "examples_per_s": "perf/examples_per_s",
}
VALID_ERROR = "valid/error"
BEST_VALID = "best/valid_error"    # the objective of a supervised run
BEST_TEST = "best/test_error"      # the test error of that best model
BEST_ITER = "best/iteration"
FINAL_COST = "final/cost"          # the objective of a model without labels (da, ca, rbm)
EPOCHS = "final/epochs"
ITERATIONS = "final/iterations"
TRAIN_SECONDS = "final/train_seconds"
PRETRAIN_SECONDS = "final/pretrain_seconds"

OLD = {  # a name -> its spelling in runs logged before these names
    BEST_VALID: "best_valid_error", BEST_TEST: "final_test_error", BEST_ITER: "best_iter",
    FINAL_COST: "final_cost", EPOCHS: "epochs", ITERATIONS: "iterations", TRAIN_SECONDS: "train_seconds",
    PRETRAIN_SECONDS: "pretrain_seconds", **{new: old for old, new in TRAINER.items()},
}
NEW = {**{old: new for old, new in TRAINER.items()},  # an old name that was a curve and a final value: the final one
       **{old: new for new, old in OLD.items() if new.startswith(("best/", "final/"))}}


def layer_cost(i: int) -> str:
    """The final pretraining cost of layer ``i`` of a stack (was ``pretrain/layer_<i>/final_cost``)."""
    return f"final/layer_{i}_cost"


def is_summary(key: str) -> bool:
    """A one-value metric (logged at step 0), not a curve."""
    return key.startswith(("best/", "final/", "sweep."))


def get(metrics: dict, name: str, default=None):
    """``metrics[name]``, or its value under the old spelling (runs logged before these names)."""
    if name in metrics:
        return metrics[name]
    return metrics.get(OLD.get(name, name), default)


def renamed(metrics: dict) -> dict:
    """Old names turned into the new ones (a run logged before them, read as if logged now)."""
    return {NEW.get(k, k): v for k, v in metrics.items()}


def is_error(key: str) -> bool:
    """An error rate (shown in %), as opposed to a cost, a likelihood or a count."""
    return str(key).endswith(("_error", "/error"))


def shown(key: str, value) -> str:
    """A metric's value for reading: errors in %, other numbers to 4 digits, ``-`` for none."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if is_error(key):
        return f"{100 * value:.2f} %"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
