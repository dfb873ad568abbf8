"""A tracked run: its MLflow run started with params and provenance tags, and ended exactly once.

:func:`tracked_run` is the one place where a run's end is decided:

* the body returns: FINISHED (the phases logged its summary metrics), its saved training state removed;
* Ctrl-C / SIGTERM (``KeyboardInterrupt``): KILLED, with the command that resumes it;
* a sweep's pruner (:class:`Pruned`): FINISHED, tagged ``dlexp.pruned`` (the sweep's table says PRUNED);
* divergence (:class:`Diverged`): FAILED, the best model before it saved;
* anything else: FAILED, with ``dlexp.error`` = the exception.

Listeners (the progress display, the run's record, the curves to the tracker
and a sweep's pruner) receive every ``(event, metrics, step)`` the trainer
reports, and the run's end through one hook, ``end(status, reason)``, called
once, in one place (:func:`_end`), however the run ends: the progress bar
closes there, the record uploads the run's logs there, the tracker ends the
MLflow run there. The loop options carry the checkpoint hook (state saved
atomically, flushed metrics first) and the signal flag.

What the MLflow UI shows of a run's origin is set here too: MLflow's standard
tags (``mlflow.user``, ``mlflow.source.*``, the git commit), ``tracking.tags``
and ``tracking.description`` (``mlflow.note.content``), the dataset inputs
(:mod:`dlexp.tracking.lineage`), MLflow's system-metrics monitor with
``tracking.system_metrics=true``, and, however the run ends, Hydra's log and
``.hydra/`` as artifacts. A run that finishes with ``tracking.register_as``
(outside a sweep, whose callback registers the best child) registers its
MLflow model as a new version of that name (:mod:`dlexp.tracking.registry`).
"""
import contextlib
import logging
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .. import metric_names as names
from .. import threads
from ..interrupt import Stop, raise_swallowed
from ..tracking import lineage, registry
from ..tracking.contract import (COMMAND_TAG, CONFIG_KEY_TAG, CPU_THREADS_TAG, DATA_CHECKSUM_TAG, DATA_SOURCE_TAG,
                                 DEVICE_TAG, ERROR_TAG, GIT_COMMIT_TAG, OBJECTIVE_TAG, OUTPUT_DIR_TAG, OVERRIDES_TAG,
                                 PARENT_TAG, PRETRAINED_FROM_TAG, REGISTERED_TAG, RESUMED_FROM_TAG, STEP_TAG,
                                 TORCH_VERSION_TAG, VERSIONS_TAG, objective_tag, parent_run_id, run_name)
from ..tracking.provenance import git_commit, source_tags, versions
from ..tracking.tracker import build_tracker
from ..train.loop import LoopOptions
from ..train.result import Diverged, Pruned
from ..train.state import StopRequest, polling
from . import resume
from .curves import Curves
from .params import flatten, logged_params
from .progress import Progress
from .pruning import pruner_for

log = logging.getLogger("dlexp")

SYSTEM_METRICS_SECONDS = 2.0  # MLflow's system-metrics sampling interval ($MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL wins)


@dataclass
class RunContext:
    """What the phases of a run share: config, ingredients, where things go, the listeners, the state."""

    run: object
    prep: object
    out: Path
    tracker: object
    run_id: Optional[str]
    state: Optional[dict]
    options: LoopOptions
    state_file: Path
    listeners: list = field(default_factory=list)  # each: (event, metrics, step) and end(status, reason)
    final: dict = field(default_factory=dict)
    model_uri: Optional[str] = None   # the run's MLflow model, once logged (dlexp.run.phases.log_model)

    @property
    def phase(self):
        return self.state["phase"] if self.state else None

    def state_for(self, phase):
        """The saved state if the run stopped in ``phase``, else None."""
        return self.state if self.phase == phase else None

    def callback(self, event: str, metrics: dict, step: int) -> None:
        for listener in self.listeners:
            listener(event, metrics, step)

    def log_file(self, name: str, artifact_dir: str) -> None:
        self.tracker.log_artifact(self.out / name, artifact_dir)


def run_tags(run, prep, overrides, out, params, state) -> dict:
    """Reproducibility: overrides, commit, device, versions, data checksum, command; sweep and resume links."""
    device = prep.device
    tags = {str(k): str(v) for k, v in (run.tracking.tags or {}).items()}  # the user's, then dlexp's own
    if run.tracking.description:
        tags["mlflow.note.content"] = run.tracking.description
    tags.update(source_tags())
    tags.update({
        OVERRIDES_TAG: " ".join(overrides) or "(none)",
        GIT_COMMIT_TAG: git_commit(),
        DEVICE_TAG: str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        CPU_THREADS_TAG: threads.describe(),
        TORCH_VERSION_TAG: torch.__version__,
        VERSIONS_TAG: " ".join(f"{k}={v}" for k, v in versions().items()),
        DATA_CHECKSUM_TAG: prep.dataset.checksum,
        DATA_SOURCE_TAG: prep.dataset.source,
        COMMAND_TAG: " ".join(sys.argv),
        OUTPUT_DIR_TAG: str(out.resolve()),
        CONFIG_KEY_TAG: resume.config_key(params),
        OBJECTIVE_TAG: objective_tag(*prep.model.objective()),
        STEP_TAG: run.tracking.step,
    })
    if run.trainer.resume:
        where = state and (state.get("position") or state["loop"]["position"])
        tags[RESUMED_FROM_TAG] = (f"{state['phase']} iteration {where['it'] + 1}, epoch {where['epoch']}"
                                      + (f", layer {state['layer']}" if "layer" in state else "")
                                      if state else "the start")
    if prep.pretrained_path:
        tags[PRETRAINED_FROM_TAG] = prep.pretrained_path
    parent = parent_run_id()
    if parent:
        tags[PARENT_TAG] = parent
    return tags


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest):
    """Ctrl-C and SIGTERM (a scheduler's or ``kill``'s stop) go to ``stop``: a training loop saves its
    state and stops; the run is marked KILLED, never left RUNNING."""
    try:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _system_metrics(run, tracker, resumed: bool):
    """MLflow's CPU / memory / disk / network (and GPU, with pynvml) monitor of the run, started."""
    if not (run.tracking.system_metrics and tracker.run_id):
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # "Started monitoring ..." lines
    monitor = SystemMetricsMonitor(tracker.run_id, sampling_interval=SYSTEM_METRICS_SECONDS,
                                   resume_logging=resumed, tracking_uri=tracker.uri)
    monitor.start()
    return monitor


def _open(run, prep, composed_yaml, overrides, out, stop) -> RunContext:
    """Start (or continue) the MLflow run and wire the listeners and the checkpoint hook."""
    tracker = build_tracker(run.tracking)
    params = flatten(asdict(run))
    resume_id, state = resume.find(run.trainer.resume, tracker, params, out)
    tags = run_tags(run, prep, overrides, out, params, state)
    (out / "config.yaml").write_text(composed_yaml)
    (out / "overrides.txt").write_text("\n".join(overrides) + "\n")
    try:
        run_id = tracker.start(run_name(run, overrides), logged_params(run, type(prep.model)), tags,
                               run_id=resume_id, since_ms=(state or {}).get("saved_ms", 0))
        return _wire(run, prep, out, stop, tracker, params, state, run_id, resumed=resume_id is not None)
    except BaseException as e:  # once the run exists, it ends here, never left RUNNING
        if tracker.run_id:
            with contextlib.suppress(Exception):
                tracker.set_tags({ERROR_TAG: f"{type(e).__name__}: {e}"[:5000]})
            tracker.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise


def _wire(run, prep, out, stop, tracker, params, state, run_id, resumed: bool) -> RunContext:
    """The started run's dataset inputs, listeners and checkpoint hook."""
    if run_id:
        log.info("MLflow run %s in %s", run_id, tracker.uri)
        if not resumed:  # a continued run has its inputs already
            lineage.log_dataset_inputs(tracker, prep.dataset)
    local_artifacts = tracker.local_artifact_dir(run_id) if run_id else None
    state_file = resume.state_path(local_artifacts, out)
    upload = run_id is not None and local_artifacts is None  # a remote artifact store gets a copy

    def on_checkpoint(training_state):
        tracker.flush()  # the metrics up to this state are in the store before the state is
        resume.save(state_file, training_state, run_id, params)
        if upload:
            tracker.log_artifact(state_file, "state")

    t = run.trainer
    options = LoopOptions(shuffle=t.shuffle, seed=t.seed, checkpoint_every=t.checkpoint_every,
                          on_checkpoint=on_checkpoint, stop=stop, compile=t.compile, precision=t.precision,
                          eval_batch_size=t.eval_batch_size)
    ctx = RunContext(run, prep, out, tracker, run_id, state, options, state_file)
    record = RunRecord(out, tracker, _system_metrics(run, tracker, resumed=resumed))
    ctx.listeners = [Progress(t.progress, t.max_epochs), record,
                     Curves(run.tracking.step, [tracker, pruner_for(tracker.client)])]
    return ctx


class RunRecord:
    """A listener that keeps the run's record: at its end, however it ends, the system-metrics monitor
    stopped and Hydra's record of the run (its log, ``.hydra/``: the composed config, the overrides,
    Hydra's own config) uploaded."""

    def __init__(self, out: Path, tracker, monitor=None):
        self.out, self.tracker, self.monitor = out, tracker, monitor

    def __call__(self, event: str, metrics: dict, step: int) -> None:
        return None

    def end(self, status: str, reason: str = None) -> None:
        try:
            if self.monitor is not None:
                self.monitor.finish()
                self.monitor = None
            if not self.tracker.run_id:
                return
            for hydra_log in sorted(self.out.glob("*.log")):
                self.tracker.log_artifact(hydra_log)
            if (self.out / ".hydra").is_dir():
                self.tracker.client.log_artifacts(self.tracker.run_id, str(self.out / ".hydra"), ".hydra")
        except Exception as e:  # the run's own end matters more than its log files
            log.warning("could not upload the run's log files: %s", e)


def _register(ctx) -> None:
    """``tracking.register_as``: the finished run's model as a new version (a sweep's jobs leave it to
    the sweep, which registers its best child)."""
    name = ctx.run.tracking.register_as
    if name and ctx.run_id and ctx.model_uri and not parent_run_id():
        version = registry.register(ctx.tracker.client, ctx.run_id, name)
        ctx.tracker.set_tags({REGISTERED_TAG: f"models:/{name}/{version}"})
        log.info("registered model %r version %s: models:/%s/%s; serve it with: %s", name, version, name, version,
                 registry.serve_command(ctx.tracker.uri, f"models:/{name}/{version}"))


def _end(ctx, status: str, reason: str = None) -> None:
    """The one place a started run ends: each listener's ``end``, in order (the progress bar, the record,
    the tracker last: the MLflow run is ``status`` once everything else is done)."""
    for listener in ctx.listeners:
        listener.end(status, reason)


def _log_summary(final: dict) -> None:
    """The run's last line but one, once the progress bar has closed: what fine-tuning reached."""
    if names.BEST_VALID in final and names.EPOCHS in final:
        epochs, seconds = final[names.EPOCHS], final.get(names.TRAIN_SECONDS, 0.0)
        log.info("best valid error %.2f %% at iteration %d, test error %.2f %%, %d epochs in %.1f s (%.3f s/epoch)",
                 100 * final[names.BEST_VALID], final[names.BEST_ITER], 100 * final[names.BEST_TEST], epochs,
                 seconds, seconds / max(1, epochs))


@contextlib.contextmanager
def tracked_run(run, prep, composed_yaml: str, overrides: list, out: Path):
    """Yield the RunContext of a started run; end it FINISHED, KILLED or FAILED (see the module doc)."""
    raise_swallowed()  # a Ctrl-C that came before, lost in a finalizer: no run is started
    stop = StopRequest()
    with stop_on_signals(stop):
        with polling(stop):  # a signal while the run is being created only sets the flag ...
            ctx = _open(run, prep, composed_yaml, overrides, out, stop)
        try:
            if stop.requested:  # ... and the run, now created, ends KILLED
                raise Stop("stopped while starting the run")
            ctx.log_file("config.yaml", None)
            ctx.log_file("overrides.txt", None)
            yield ctx
            _register(ctx)
        except KeyboardInterrupt:
            _end(ctx, "KILLED")
            if ctx.run_id and ctx.state_file.exists():
                log.warning("run %s KILLED; continue it with: dlexp %s trainer.resume=%s", ctx.run_id,
                            " ".join(o for o in overrides if not o.startswith("trainer.resume=")), ctx.run_id)
            raise
        except Pruned as e:  # an outcome of the sweep, not a crash: FINISHED, tagged dlexp.pruned
            _end(ctx, "FINISHED", str(e))
            raise
        except Diverged as e:
            message = f"{e} (model={run.model.name})"
            _end(ctx, "FAILED", f"Diverged: {message}")
            raise Diverged(message) from None
        except BaseException as e:
            _end(ctx, "FAILED", f"{type(e).__name__}: {e}")
            raise
        _end(ctx, "FINISHED")
        _log_summary(ctx.final)
        ctx.state_file.unlink(missing_ok=True)  # finished: nothing to resume
        with contextlib.suppress(OSError):
            ctx.state_file.parent.rmdir()  # and no empty state/ folder among the artifacts
    if ctx.run_id:
        log.info("outputs in %s; view with: mlflow ui --backend-store-uri %s", out, ctx.tracker.uri)

