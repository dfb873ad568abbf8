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
