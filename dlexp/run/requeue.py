"""Preemption and time limits on SLURM (``hydra/launcher=slurm*``, through submitit): save, requeue, resume.

SLURM warns a job before it preempts it or before its time limit with a signal: submitit asks for
SIGUSR2 (``--signal=USR2@<signal_delay_s>``; ``$SUBMITIT_PREEMPT_SIGNAL`` names another) and its
handler calls the submitted callable's ``checkpoint()`` (hydra-submitit-launcher's: resubmit the same
job), requeues the job (``scontrol requeue``; the local executor: exit 144 and start it again) and
exits. Arriving in the middle of training, that alone would lose everything since the last
checkpoint, leave the run RUNNING, and requeue a job that trains again from the start in a new run.

In a submitit job dlexp takes that signal over (:func:`take_over`, from the sweep callback's
``on_job_start``):

1. the signal asks the run to stop, as Ctrl-C does: the training loop finishes its step, saves its whole
   state (``state/train_state.pkl``) and the run ends KILLED (outside the training loop the job stops
   at once; what was saved last, if anything, is where it continues from);
2. then :func:`on_preemption` (around the run, in :func:`dlexp.run.experiment.run_experiment`) hands the job
   to submitit's own handler with ``trainer.resume=auto`` added to its overrides; submitit pickles
   the job again, requeues it and exits;
3. the requeued job continues the KILLED run from its state, in the same run and the same job
   directory, to the result an uninterrupted job has (bit for bit on a CPU).

submitit's limits hold: a job that has timed out more than ``max_num_timeout`` times is not requeued
(``conf/hydra/launcher/slurm.yaml``: 3) and fails with submitit's reason; preemptions do not count.
"""
import contextlib
import logging
import signal
import sys

log = logging.getLogger("dlexp")

RESUME = "trainer.resume=auto"
_state = {"submitit": None, "signal": None, "preempted": False, "in_run": False}


def _submitit_handler():
    """(the preemption signal, submitit's handler of it) in a submitit job, else (None, None)."""
    if "submitit" not in sys.modules:  # a submitit job has imported it before calling the job
        return None, None
    from submitit.core.job_environment import SignalHandler

    from .. import private_api

    try:
        sig = private_api.preemption_signal()
    except RuntimeError:  # an unknown $SUBMITIT_PREEMPT_SIGNAL: submitit itself says so
        return None, None
    handler = signal.getsignal(sig)
    return (sig, handler) if isinstance(getattr(handler, "__self__", None), SignalHandler) else (None, None)


def take_over() -> bool:
    """In a submitit job, make the preemption signal stop the run cleanly, then requeue; returns whether it
    did (outside submitit nothing changes)."""
    sig, handler = _submitit_handler()
    if handler is None:
        return False
    _state.update(submitit=handler, signal=sig, preempted=False)
    signal.signal(sig, _on_signal)
    return True


def _on_signal(signum, frame) -> None:
    from ..interrupt import Stop
    from ..train.state import StopRequest

    first = not _state["preempted"]
    _state["preempted"] = True
    if first:
        log.warning("signal %s: the job is preempted or at its time limit; saving its state, then requeueing it",
                    signal.Signals(signum).name)
    stop = signal.getsignal(signal.SIGTERM)
    if isinstance(stop, StopRequest):  # the run is on: its loop saves the state at the end of this step
        stop(signum, frame)
    elif _state["in_run"]:  # checks, data, model: nothing to save yet
        raise Stop("preempted before training")


def _requeue() -> None:
    """submitit's handler, on the job with ``trainer.resume=auto``: it requeues the job and exits (SystemExit),
    or raises submitit's UncompletedJobError when the job may not be requeued (timed out too often)."""
    handler = _state["submitit"]
    from .. import private_api

    delayed = private_api.delayed_job(handler)
    overrides = [o for o in delayed.args[0] if not o.lstrip("+").startswith("trainer.resume=")] + [RESUME]
    delayed.args = (overrides, *delayed.args[1:])
    log.warning("run stopped with its state saved; requeueing the job with %s", RESUME)
    handler(_state["signal"], None)


@contextlib.contextmanager
def on_preemption():
    """Around a run: a preemption (see the module doc) that stopped it requeues the job."""
    if _state["preempted"] and _state["submitit"] is not None:  # the signal came before the run
        _requeue()
    _state["in_run"] = True
    try:
        yield
    except KeyboardInterrupt:
        _state["in_run"] = False
        if _state["preempted"] and _state["submitit"] is not None:
            _requeue()
        raise
    finally:
        _state["in_run"] = False
