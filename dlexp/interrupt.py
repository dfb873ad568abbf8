"""Ctrl-C and SIGTERM at any moment of a command: one ``KeyboardInterrupt`` in the process that got them,
after the processes it started have been asked to stop too and given time to end their runs.

* :func:`install`, the first lines of a command's ``main``: SIGINT and SIGTERM raise :class:`Stop`, a KeyboardInterrupt
  (Python's default for SIGTERM is to die at once, with nothing printed and no run ended). Handlers
  someone else set (submitit's in its jobs, a run's own :class:`dlexp.train.state.StopRequest`) are
  left alone.
* On the first signal, every process the command started (a joblib sweep's workers, submitit's local
  jobs) gets SIGTERM, so the run each is training saves its state and ends KILLED; while one of them
  lives, the handler waits (at most :data:`GRACE_S`) for the waiters registered with :func:`wait_for`
  (a sweep's: "a child run is still RUNNING") before raising. A second signal raises at once.
* :func:`kill_descendants`: whatever is still alive after that is killed, so no worker outlives the
  command (joblib would otherwise leave its idle workers for minutes).
* A signal whose handler runs inside a finalizer or the garbage collector raises there, and Python prints
  "Exception ignored in ..." and goes on: the stop would be lost and the command would train to its end.
  Every stop a signal raises is :func:`remember`-ed, and :func:`raise_swallowed` (before a run starts, and
  when the command ends) raises it again; :func:`hide_swallowed_stops` keeps Python from printing the
  swallowed one.
"""
import contextlib
import signal
import sys
import time

GRACE_S = 30.0  # how long the processes a command started get to save and end their runs
_DEFAULTS = (signal.SIG_DFL, signal.default_int_handler)
_state = {"stopping": False, "waiters": [], "raised": None}


class Stop(KeyboardInterrupt):
    """The KeyboardInterrupt a signal raises here. A subclass, because CPython remembers a plain
    KeyboardInterrupt that escaped code run from a string (``exec(str)``: dataclasses, namedtuple, pybind11
    do it while importing) and, under ``python -m``, kills the process with SIGINT at exit although the
    command caught it and called ``sys.exit(130)``; it compares the type exactly, so a subclass is not
    remembered."""


def install() -> None:
    """SIGINT and SIGTERM -> KeyboardInterrupt in this process, unless a handler of someone else's is set."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: signals are not ours to handle
            if signal.getsignal(sig) in _DEFAULTS:
                signal.signal(sig, _on_signal)


def hide_swallowed_stops() -> None:
    """For a command that calls :func:`raise_swallowed`: a stop swallowed by a finalizer is not reported as
    "Exception ignored" (it is raised again later), other such exceptions still are."""
    hook = sys.unraisablehook
    if getattr(hook, "hides_stops", False):
        return

    def quiet(unraisable):
        if not isinstance(unraisable.exc_value, Stop):
            hook(unraisable)

    quiet.hides_stops = True
    sys.unraisablehook = quiet


def remember(stop: Stop) -> Stop:
    """``stop``, kept for :func:`raise_swallowed` (see the module doc)."""
    _state["raised"] = stop
    return stop


def raise_swallowed() -> None:
    """Raise again the stop a signal already raised, if a finalizer or the garbage collector swallowed it."""
    if _state["raised"] is not None:
        raise _state["raised"]


def stop_behind(e: BaseException):
    """The Ctrl-C / SIGTERM behind exception ``e``, or None: a signal that lands inside Python's import
    machinery can leave it to raise another error (a KeyError from the module lock) while handling the
    KeyboardInterrupt; that error is the stop, not a failure of its own."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def wait_for(still_busy) -> None:
    """Register ``still_busy()`` (True while something must be waited for) for the first signal's wait."""
    _state["waiters"].append(still_busy)


def forget(still_busy) -> None:
    with contextlib.suppress(ValueError):
        _state["waiters"].remove(still_busy)


def _on_signal(signum, frame):
    name = signal.Signals(signum).name
    if not _state["stopping"]:
        _state["stopping"] = True
        _stop_descendants()
    raise remember(Stop(f"signal {name}"))


def _descendants() -> list:
    """The processes this one started, and theirs, but multiprocessing's / loky's resource trackers: they end
    when this process does, and killing them first makes joblib start one again and print tracebacks."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [c for c in children if not _is_resource_tracker(c)]


def _is_resource_tracker(process) -> bool:
    import psutil

    try:
        return any("resource_tracker" in part for part in process.cmdline()[:4])
    except psutil.Error:
        return True


def _busy() -> bool:
    for still_busy in list(_state["waiters"]):
        try:
            if still_busy():
                return True
        except Exception:  # a waiter that cannot tell (the store is what failed) holds nothing up
            continue
    return False


def _stop_descendants() -> None:
    """SIGTERM to every process this one started; then wait while one lives and a waiter is busy."""
    import psutil

    children = _descendants()
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_alive(c) for c in children) and _busy():
        time.sleep(0.1)


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_descendants(timeout: float = 5.0) -> None:
    """Every process this one started, and theirs, killed (SIGKILL) and reaped."""
    import psutil

    children = _descendants()
    for child in reversed(children):
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(children, timeout=timeout)
