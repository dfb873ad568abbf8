"""Build hook (the rest of the build is pyproject.toml): the commit an installed copy was built from.

``pip install .`` builds dlexp without its git history, so the runs of an installed copy could not
ask git for their commit (``mlflow.source.git.commit``): the build writes ``dlexp/_version.py``
(``commit = "<40 hex digits>"``) into the built package. A source checkout and an editable
install have none (git-ignored), and dlexp asks git at run time (``dlexp.provenance.git_commit``).
"""
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else ""


class BuildPyWithCommit(build_py):
    """build_py, then ``dlexp/_version.py`` with the commit in the build (not in the source tree)."""

    def run(self):
        super().run()
        commit = _commit()
        if commit and not getattr(self, "editable_mode", False):
            target = Path(self.build_lib, "dlexp", "_version.py")
            target.write_text(f'"""Written by setup.py when this copy was built."""\ncommit = "{commit}"\n')


setup(cmdclass={"build_py": BuildPyWithCommit})
