"""Console entry points of ``dlexp-predict``, ``dlexp-sweep`` and ``dlexp-data``: a Ctrl-C while torch and MLflow
are still importing (the first second or two) ends in one line, as it does later, not in a traceback; SIGTERM
is a Ctrl-C (:mod:`dlexp.interrupt`).
(``dlexp`` itself imports them inside :func:`dlexp.cli.main`.)"""
import importlib
import sys


def _command(module: str, prog: str):
    from .interrupt import install

    install()  # SIGTERM is a Ctrl-C too, from the first line
    try:
        return importlib.import_module(module).main
    except KeyboardInterrupt:
        print(f"{prog}: stopped (interrupted)", file=sys.stderr)
        sys.exit(130)


def predict() -> None:
    sys.exit(_command("dlexp.predict", "dlexp-predict")())


def sweep() -> None:
    sys.exit(_command("dlexp.sweep.cli", "dlexp-sweep")())


def data() -> None:
    sys.exit(_command("dlexp.data.fetch", "dlexp-data")())
