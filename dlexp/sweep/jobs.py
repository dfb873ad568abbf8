"""How a multirun's jobs ended, counted in the launching process whatever the launcher.

Each job's ``on_job_end`` (in the job's own process: the launching one for the basic launcher, a worker
for joblib, a node for SLURM) writes one small file, ``<sweep dir>/.dlexp_jobs/<job num>.json``
(:func:`record`); the launching process reads them back (:func:`records`). Hydra gives
``on_multirun_end`` no results, and a worker's callback is a pickled copy whose state never comes
back, so a file in the sweep directory, which every launcher shares, is the one channel they all have.

:func:`multirun_outcome` is what the ``dlexp`` command asks after Hydra returns: ``(failed, total)``
of the last multirun this process started, read at call time (so it also holds after a sweeper
raised once its jobs had ended), or None when no multirun ran.
"""
import json
import os
import shutil
from pathlib import Path

RECORDS_DIR = ".dlexp_jobs"
COMPLETED, FAILED, PRUNED = "COMPLETED", "FAILED", "PRUNED"

_started = {"sweep_dir": None}  # the launching process's current multirun


def start(sweep_dir: Path) -> None:
    """A multirun starts in ``sweep_dir``: forget the records of an earlier one in the same directory."""
    shutil.rmtree(Path(sweep_dir) / RECORDS_DIR, ignore_errors=True)
    _started["sweep_dir"] = Path(sweep_dir)


def record(sweep_dir, num: int, status: str, overrides: str, error: str = None) -> None:
    """Job ``num`` ended with ``status`` (COMPLETED, FAILED or PRUNED); written atomically."""
    folder = Path(sweep_dir) / RECORDS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{num}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"num": num, "status": status, "overrides": overrides, "error": error}))
    os.replace(tmp, folder / f"{num}.json")


def records(sweep_dir) -> list:
    """The jobs of the multirun in ``sweep_dir`` that have ended, by job number."""
    folder = Path(sweep_dir) / RECORDS_DIR
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # a job killed while writing: its record is lost, not the count
            continue
    return sorted(found, key=lambda r: r["num"])


def multirun_outcome():
    """``(failed, total)`` jobs of the last multirun started in this process, or None if none was."""
    if _started["sweep_dir"] is None:
        return None
    ended = records(_started["sweep_dir"])
    return sum(r["status"] == FAILED for r in ended), len(ended)
