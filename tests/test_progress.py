"""Console progress: a live bar on a terminal, plain log lines otherwise."""
import io
import logging

from dlexp.run.progress import Progress

METRICS = {"valid_error": 0.1234, "best_valid_error": 0.1, "test_error": 0.09, "epoch": 3}


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_shows_live_validation_error():
    stream = FakeTerminal()
    p = Progress("auto", max_epochs=5, stream=stream)
    p("validation", METRICS, 10)
    p("epoch", {"epoch_seconds": 0.1}, 1)
    p.close()
    out = stream.getvalue()
    assert "valid=12.34%" in out and "best=10.00%" in out and "1/5" in out


def test_log_lines_when_not_a_terminal(caplog):
    stream = io.StringIO()
    p = Progress("auto", max_epochs=5, stream=stream, interval=0.0)
    with caplog.at_level(logging.INFO, logger="dlexp"):
        p("validation", METRICS, 10)
        p("validation", METRICS, 20)
    p.close()
    assert stream.getvalue() == ""  # no bar characters in a log file
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "valid error 12.34 % (best 10.00 %)" in lines[0]


def test_log_lines_print_above_the_bar_not_onto_it(capsys):
    """On a terminal a log record clears the bar's line, prints on its own line, and the bar comes back."""
    import sys

    logger = logging.getLogger("dlexp")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        p = Progress("bar", max_epochs=5, stream=sys.stderr)
        p("epoch", {"epoch_seconds": 0.1}, 1)
        logger.warning("a log line")
        p("epoch", {"epoch_seconds": 0.1}, 2)
        p.close()
        assert handler in logger.handlers  # logging has its own handler back
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    err = capsys.readouterr().err
    pieces = [s.strip() for s in err.replace("\r", "\n").split("\n")]
    assert "a log line" in pieces  # a line of its own, no bar characters on it
    assert "2/5" in err


def test_no_bar_for_a_run_that_never_trains_an_epoch():
    stream = FakeTerminal()
    p = Progress("bar", max_epochs=1000, stream=stream)
    p("pretrain", {"pretrain/cost": 1.0}, 1)
    p.close()
    assert "0/1000" not in stream.getvalue()
