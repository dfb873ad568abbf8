"""Progress on the console: a bar with live validation error on a terminal, log lines otherwise.

Log lines come at most every ``interval`` seconds; every value is in MLflow.
While the bar is shown, log records go through tqdm (``logging_redirect_tqdm``)
so they print above the bar instead of onto its line; the bar appears with
the first training epoch (none for a run that only pretrains) and is closed
when the run ends (:meth:`Progress.end`), before the run's summary line.
"""
import contextlib
import logging
import sys
import time

log = logging.getLogger("dlexp")


class Progress:
    """Receives the trainer's ``(event, metrics, step)`` callbacks and shows them."""

    def __init__(self, mode: str, max_epochs: int, stream=None, interval: float = 2.0):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode, self.max_epochs, self.bar = mode, max_epochs, None
        self._redirect = contextlib.ExitStack()
        self.interval, self.last_line = interval, -float("inf")

    def _open_bar(self):
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.bar = tqdm(total=self.max_epochs, unit="epoch", file=self.stream, dynamic_ncols=True)
        self._redirect.enter_context(logging_redirect_tqdm(loggers=[logging.root, log]))

    def __call__(self, event: str, metrics: dict, step: int) -> None:
        if event in ("validation", "epoch") and self.mode == "bar" and self.bar is None:
            self._open_bar()
        if event == "validation":
            if self.bar is not None:
                self.bar.set_postfix(valid=f"{100 * metrics['valid_error']:.2f}%",
                                     best=f"{100 * metrics['best_valid_error']:.2f}%",
                                     test=f"{100 * metrics['test_error']:.2f}%", refresh=False)
            elif self.mode == "log" and time.monotonic() - self.last_line >= self.interval:
                self.last_line = time.monotonic()
                log.info("epoch %d, iter %d: valid error %.2f %% (best %.2f %%), test error of best %.2f %%",
                         metrics.get("epoch", 0), step, 100 * metrics["valid_error"],
                         100 * metrics["best_valid_error"], 100 * metrics["test_error"])
        elif event == "pretrain" and self.mode != "none":
            log.info("pretraining epoch %d: %s", step,
                     ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "/" in k and not k.endswith("seconds")))
        elif event == "epoch" and self.bar is not None:
            self.bar.update(1)

    def end(self, status: str, reason: str = None) -> None:
        """The run ends (however it ends): the bar closes, before the run's last lines."""
        self.close()

    def close(self) -> None:
        """Close the bar (at the epochs it reached) and give logging its own handlers back; idempotent."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._redirect.close()
