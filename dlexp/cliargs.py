"""argparse for dlexp's commands: a usage mistake is one line and exit status 2, like every other error."""
import argparse


class OneLineParser(argparse.ArgumentParser):
    """``prog: error: <message> (see prog --help)`` instead of argparse's usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
