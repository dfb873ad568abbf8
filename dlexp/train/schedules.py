"""Learning-rate schedules from the tutorials' advice.

    constant:  lr_t = lr_0
    inverse:   lr_t = lr_0 / (1 + decay * epoch)        (epoch = epochs completed)
    plateau:   lr <- max(lr / 2, lr_0 * min_lr_factor) after ``plateau_patience``
               validations in a row without a new best
"""


class Schedule:
    def __init__(self, name: str, lr: float, decay: float = 0.0, plateau_patience: int = 1,
                 min_lr_factor: float = 1.0 / 1024):
        self.name, self.lr0, self.lr = name, lr, lr
        self.decay, self.plateau_patience, self.min_lr = decay, plateau_patience, lr * min_lr_factor
        self.bad_validations = 0

    def on_epoch_end(self, epochs_done: int) -> float:
        if self.name == "inverse":
            self.lr = self.lr0 / (1.0 + self.decay * epochs_done)
        return self.lr

    def on_validation(self, improved: bool) -> float:
        if self.name == "plateau":
            self.bad_validations = 0 if improved else self.bad_validations + 1
            if self.bad_validations >= self.plateau_patience:
                self.lr = max(self.lr / 2.0, self.min_lr)
                self.bad_validations = 0
        return self.lr

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


def build_schedule(cfg) -> Schedule:
    return Schedule(cfg.schedule, cfg.lr, cfg.decay, cfg.plateau_patience, cfg.min_lr_factor)
