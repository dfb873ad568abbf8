"""Console progress: a live bar on a terminal, plain log lines otherwise."""
import io
import logging

from dlexp.progress import Progress

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
