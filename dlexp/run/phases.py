"""The two phases of a run: layer-wise ``pretrain`` (unsupervised), then supervised ``finetune``.

Each takes the :class:`~dlexp.run.lifecycle.RunContext`, trains, saves what it
made (checkpoint, images, and the MLflow model of the checkpoint: the
classifier after fine-tuning, the encoder of a model without labels after
pretraining) and returns the metrics the run ends with.
"""
import logging
import math
import time

from .. import metric_names as names
from ..tracking import mlmodel
from ..train import fit_cg, fit_sgd
from ..train.pretrain import pretrain_stack
from ..train.result import Diverged
from . import artifacts

log = logging.getLogger("dlexp")


def pretrain(ctx) -> dict:
    """Greedy layer-wise pretraining (unless reloaded), filter images at ``image_every`` epochs;
    saves ``pretrained_params.pkl`` and the images."""
    run, data, model, cfg = ctx.run, ctx.prep.data, ctx.prep.model, ctx.run.model
    first = model.pretrain_layers()[0]
    final = {}

    def on_epoch(layer, epoch):
        if cfg.image_every and layer == 0 and epoch % cfg.image_every == 0:
            artifacts.log_snapshots(ctx.out, data, first, ctx.tracker, step=epoch)

    if not ctx.prep.pretrained_path:
        start = time.perf_counter()
        histories = pretrain_stack(model, data.train, cfg.pretrain_lr, cfg.pretrain_batch_size, cfg.pretrain_epochs,
                                   ctx.callback, on_epoch, ctx.options, state=ctx.state_for("pretrain"))
        final[names.PRETRAIN_SECONDS] = time.perf_counter() - start
        for i, history in enumerate(histories):
            if history:
                final[names.layer_cost(i) if len(histories) > 1 else names.FINAL_COST] = history[-1]["cost"]
    artifacts.save_checkpoint(ctx.out / artifacts.PRETRAINED, run, data, model, {})
    ctx.log_file(artifacts.PRETRAINED, "checkpoint")
    if run.tracking.filters_image:
        artifacts.save_images(ctx.out, data, model, ctx.tracker, prefix="pretrained_" if model.supervised else "")
    ctx.tracker.log_metrics(final, 0)
    if not model.supervised:  # nothing to fine-tune: the run's model is the encoder
        log_model(ctx, artifacts.PRETRAINED)
    return final


def log_model(ctx, checkpoint_name: str, step: int = 0) -> None:
    """The MLflow model of the run's checkpoint, with the run's metrics at ``step`` as its own: at step 0,
    the summary metrics just logged (``tracking.log_model=false``: none)."""
    if ctx.run_id and ctx.run.tracking.log_model:
        info = ctx.state is not None and mlmodel.earlier(ctx.tracker, step)
        if not info:
            info = mlmodel.log_model(ctx.tracker, ctx.out / checkpoint_name, ctx.prep.dataset.test.x, step=step,
                                     kind=ctx.run.model.name, dataset=ctx.run.dataset.name)
            ctx.tracker.link_model(info.model_id, step)
        ctx.model_uri = info.model_uri
        log.info("MLflow model %s (%s, runs:/%s/%s)", info.model_uri,
                 mlmodel.model_name(ctx.run.model.name, ctx.run.dataset.name, ctx.run_id), ctx.run_id, mlmodel.NAME)


def finetune(ctx) -> dict:
    """MSGD (or conjugate gradient) on the labels; saves ``best_params.pkl`` and the filters image."""
    run, data, model = ctx.run, ctx.prep.data, ctx.prep.model
    try:
        if run.optimizer.name == "cg":
            result = fit_cg(model, data, run.optimizer, run.regularization, run.trainer.max_epochs,
                            run.trainer.eval_batch_size, ctx.callback)
        else:
            result = fit_sgd(model, data, run.optimizer, run.regularization, run.early_stopping,
                             run.trainer.max_epochs, ctx.options, ctx.callback, ctx.state_for("finetune"))
    except Diverged as e:  # the best model before the divergence is kept
        if math.isfinite(e.best_valid_error):
            _save_best(ctx, e.best_valid_error, e.test_error)
        raise
    _save_best(ctx, result.best_valid_error, result.test_error)
    if run.tracking.filters_image:
        artifacts.save_images(ctx.out, data, model, ctx.tracker)
    final = {names.BEST_VALID: result.best_valid_error, names.BEST_TEST: result.test_error,
             names.BEST_ITER: result.best_iter, names.EPOCHS: result.epochs, names.TRAIN_SECONDS: result.train_seconds,
             names.ITERATIONS: result.iterations}
    ctx.tracker.log_metrics(final, 0)  # summary values at step 0: numbers in the UI, not curves
    log_model(ctx, artifacts.CHECKPOINT)
    return final


def _save_best(ctx, best_valid_error: float, test_error: float) -> None:
    """The one place the best model is saved: ``best_params.pkl``, as a run artifact too."""
    artifacts.save_checkpoint(ctx.out / artifacts.CHECKPOINT, ctx.run, ctx.prep.data, ctx.prep.model,
                              {"best_valid_error": best_valid_error, "test_error": test_error})
    ctx.log_file(artifacts.CHECKPOINT, "checkpoint")

