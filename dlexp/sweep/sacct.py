"""submitit reads its SLURM jobs' states with ``sacct``; on a cluster without accounting (common on small
ones: ``AccountingStorageType=accounting_storage/none``) every poll fails and submitit warns
``Bypassing sacct error ..., status may be inaccurate`` three times a poll, while the jobs run fine (their
results are read from their folders). :func:`quiet_if_no_accounting` drops those warnings, and only them,
when ``sacct`` itself says accounting is disabled."""
import logging
import subprocess

DISABLED = "accounting storage is disabled"  # what sacct prints then


def accounting_disabled() -> bool:
    """Whether this cluster's ``sacct`` answers that accounting is disabled."""
    try:
        r = subprocess.run(["sacct", "--noheader", "-j", "1"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return DISABLED in (r.stdout + r.stderr).lower()


def _not_sacct_bypass(record: logging.LogRecord) -> bool:
    return "Bypassing sacct error" not in record.getMessage()


def quiet_if_no_accounting() -> bool:
    """Filter submitit's ``Bypassing sacct error`` warnings out if accounting is disabled; returns whether."""
    if not accounting_disabled():
        return False
    from submitit.core import logger  # submitit configures its logger on import: the filter goes on after

    logger.get_logger().addFilter(_not_sacct_bypass)
    return True
