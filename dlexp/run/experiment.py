"""One run, start to end: config -> data + model -> trainer -> tracker.

    skip        trainer.skip_finished: a config that FINISHED before returns that run's result (dlexp.run.skip)
    requeue     on SLURM (submitit), a preempted run saves its state and its job is requeued (dlexp.run.requeue)
    preflight   every check that can be made before a run exists (dlexp.run.preflight)
    tracked_run the MLflow run, started and ended FINISHED / FAILED / KILLED (dlexp.run.lifecycle)
    pretrain    layer-wise unsupervised training, for models with layers to pretrain (dlexp.run.phases)
    finetune    supervised training, for models with labels to learn (dlexp.run.phases)
"""
from pathlib import Path

from . import phases, requeue, skip
from .lifecycle import tracked_run
from .preflight import preflight


def run_experiment(run, composed_yaml: str, overrides: list, output_dir) -> dict:
    """Train and track one run; returns its final metrics."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = skip.finished_result(run, overrides, out)
    if done is not None:
        return done
    run = skip.without_skip(run)
    with requeue.on_preemption():
        prep = preflight(run)
        with tracked_run(run, prep, composed_yaml, overrides, out) as ctx:
            if prep.model.pretrain_layers() and ctx.phase != "finetune":
                ctx.final.update(phases.pretrain(ctx))
            if prep.model.supervised:
                ctx.final.update(phases.finetune(ctx))
    return {**ctx.final, "run_id": ctx.run_id, "output_dir": str(out)}
