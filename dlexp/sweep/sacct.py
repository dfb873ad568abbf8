"""submitit reads its SLURM jobs' states with ``sacct``; on a cluster without accounting (common on small
ones: ``AccountingStorageType=accounting_storage/none``) every poll fails, and each failure prints
``Slurm accounting storage is disabled`` (sacct's own stderr) and submitit's ``Bypassing sacct error ...,
status may be inaccurate`` warnings, while the jobs run fine: the launcher knows a job has ended from its
result file. :func:`quiet_if_no_accounting` stops those polls, and so their noise, when ``sacct`` says
accounting is disabled (what the failing polls would have told submitit: nothing)."""
import subprocess

DISABLED = "accounting storage is disabled"  # what sacct prints then


def accounting_disabled() -> bool:
    """Whether this cluster's ``sacct`` answers that accounting is disabled."""
    try:
        r = subprocess.run(["sacct", "--noheader", "-j", "1"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return DISABLED in (r.stdout + r.stderr).lower()


def quiet_if_no_accounting() -> bool:
    """No ``sacct`` polls from submitit's SLURM job watcher if accounting is disabled; returns whether."""
    if not accounting_disabled():
        return False
    from submitit.slurm.slurm import SlurmJob

    SlurmJob.watcher._make_command = lambda: None  # the watcher's update() then polls nothing
    return True
