"""When to validate and when to stop: the tutorials' patience rule and two others.

``Patience`` is the tutorials' algorithm (logistic_sgd.py, mlp.py), verbatim:

    validation_frequency = min(n_train_batches, patience // 2)
    after minibatch ``it`` (0-based, counted over all epochs):
        if (it + 1) % validation_frequency == 0:
            if loss < best:
                if loss < best * improvement_threshold:
                    patience = max(patience, it * patience_increase)
                best, best_iter = loss, it
        if patience <= it: stop

``NoImprovement`` validates once an epoch (unless told otherwise) and stops
after ``epochs`` epochs without a new best; ``NoStop`` never stops early.
All three keep the best validation loss and its iteration.
"""
import math


class NoStop:
    def __init__(self, n_train_batches: int, validation_frequency=None):
        self.frequency = validation_frequency or n_train_batches
        self.best = math.inf
        self.best_iter = -1

    def due(self, it: int) -> bool:
        """Is a validation due after minibatch iteration ``it``?"""
        return (it + 1) % self.frequency == 0

    def update(self, it: int, loss: float) -> bool:
        """Record a validation loss; True if it is a new best."""
        if loss < self.best:
            self.best, self.best_iter = loss, it
            return True
        return False

    def stop(self, it: int) -> bool:
        return False

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


class Patience(NoStop):
    def __init__(self, n_train_batches: int, patience: int, patience_increase: float = 2.0,
                 improvement_threshold: float = 0.995, validation_frequency=None):
        super().__init__(n_train_batches, validation_frequency or max(1, min(n_train_batches, patience // 2)))
        self.patience = patience
        self.patience_increase = patience_increase
        self.improvement_threshold = improvement_threshold

    def update(self, it: int, loss: float) -> bool:
        if loss < self.best and loss < self.best * self.improvement_threshold:
            self.patience = max(self.patience, it * self.patience_increase)
        return super().update(it, loss)

    def stop(self, it: int) -> bool:
        return self.patience <= it


class NoImprovement(NoStop):
    def __init__(self, n_train_batches: int, epochs: int, validation_frequency=None):
        super().__init__(n_train_batches, validation_frequency)
        self.n_train_batches = n_train_batches
        self.epochs = epochs

    def stop(self, it: int) -> bool:
        return it - self.best_iter >= self.epochs * self.n_train_batches


def build_stopper(cfg, n_train_batches: int):
    """The rule named by ``early_stopping.name``."""
    if cfg.name == "patience":
        return Patience(n_train_batches, cfg.patience, cfg.patience_increase, cfg.improvement_threshold,
                        cfg.validation_frequency)
    if cfg.name == "no_improvement":
        return NoImprovement(n_train_batches, cfg.epochs, cfg.validation_frequency)
    return NoStop(n_train_batches, cfg.validation_frequency)
