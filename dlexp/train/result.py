"""What a fit returns: the best model's errors and how long it took."""
from dataclasses import dataclass


@dataclass
class FitResult:
    best_valid_error: float   # zero-one error on the validation split, best model
    test_error: float         # zero-one error on the test split of the best model
    best_iter: int            # minibatch iterations done when the best model was seen
    epochs: int
    iterations: int
    train_seconds: float


class Diverged(RuntimeError):
    """The loss or the parameters became NaN/Inf (checked at validation, epoch and checkpoint time).

    ``best_valid_error`` and ``test_error`` describe the best model seen before (NaN if none); the
    trainer loads that model before raising.
    """

    def __init__(self, message: str, best_valid_error: float = float("nan"), test_error: float = float("nan")):
        super().__init__(message)
        self.best_valid_error, self.test_error = best_valid_error, test_error


class Pruned(RuntimeError):
    """A listener (a sweep's pruner) stopped the run early; ``value`` is its objective so far."""

    def __init__(self, message: str, value: float = float("nan")):
        super().__init__(message)
        self.value = value
