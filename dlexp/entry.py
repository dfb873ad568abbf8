"""Console entry points of ``dlexp-predict``, ``dlexp-sweep`` and ``dlexp-data``: a Ctrl-C while torch and MLflow
are still importing (the first second or two) ends in one line, as it does later, not in a traceback; SIGTERM
is a Ctrl-C (:mod:`dlexp.interrupt`).
(``dlexp`` itself imports them inside :func:`dlexp.cli.main`.) Their argparse: :class:`OneLineParser`."""
import argparse
import importlib
import sys


class OneLineParser(argparse.ArgumentParser):
    """``prog: error: <message> (see prog --help)`` instead of argparse's usage block: a usage mistake is
    one line and exit status 2, like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command(module: str, prog: str):
    from .interrupt import install, stop_behind
    from .threads import wait_briefly

    install()  # SIGTERM is a Ctrl-C too, from the first line
    wait_briefly()  # before torch loads its OpenMP runtime
    try:
        return importlib.import_module(module).main
    except Exception as e:  # an error raised while the stop was handled inside the import is the stop
        if stop_behind(e) is None:
            raise
    except KeyboardInterrupt:
        pass
    print(f"{prog}: stopped (interrupted)", file=sys.stderr)
    sys.exit(130)


def predict() -> None:
    sys.exit(_command("dlexp.predict", "dlexp-predict")())


def sweep() -> None:
    sys.exit(_command("dlexp.sweep.cli", "dlexp-sweep")())


def data() -> None:
    sys.exit(_command("dlexp.data.fetch", "dlexp-data")())
