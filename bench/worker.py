"""One measurement, in its own process: ``python -m bench --worker '<json task>'``.

Every measurement runs in a fresh interpreter, so each starts from the same
state a user's script would (default threads, allocator, no compiled code or
settings left behind by another measurement). The worker prints one JSON
line: the timed epochs as ``[seconds, foreign load]`` pairs and what else
the task measured.
"""
import json
import os
import sys
import tempfile
import time

import torch

from . import gemm, plain
from .protocols import build, device_of, load_data, pretrain_layer, protocols
from .timing import _own_cpu, _system_busy, _TICK, n_cpus


class EpochClock:
    """Foreign CPU load between marks (see timing.py)."""

    def __init__(self):
        self.mark()

    def mark(self):
        self.busy, self.own, self.t = _system_busy(), _own_cpu(), time.perf_counter()

    def lap(self):
        busy, own, t = _system_busy(), _own_cpu(), time.perf_counter()
        dt = max(t - self.t, 1e-9)
        if None in (busy, own, self.busy, self.own):
            foreign = 0.0
        else:
            foreign = max(0.0, ((busy - self.busy) - (own - self.own)) / (_TICK * n_cpus() * dt))
        self.busy, self.own, self.t = busy, own, t
        return foreign


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_dlexp(p, data, device, task):
    """dlexp's trainer (fit_sgd, or fit_layer for pretraining), tracking off; epoch_seconds as it reports them."""
    from dlexp.data.device import to_device
    from dlexp.train.loop import LoopOptions
    from dlexp.train.pretrain import fit_layer
    from dlexp.train.sgd import fit_sgd

    chunk = task.get("chunk")
    _ablate(task.get("ablate", ()))
    dd = to_device(data, device, chunk)
    model = build(p, data).to(device)
    epochs, clock = [], EpochClock()
    extra = {}

    def callback(event, metrics, step):
        seconds = metrics.get("epoch_seconds")
        if seconds is None:
            seconds = next((v for k, v in metrics.items() if k.endswith("epoch_seconds")), None)
        if seconds is not None:
            epochs.append([seconds, clock.lap()])
        if event == "validation":
            extra["valid_error"] = metrics["valid_error"]
        elif event == "pretrain":
            extra["cost"] = next((v for k, v in metrics.items() if k.endswith("/cost")), None)

    kw = {k: task[k] for k in ("compile", "precision") if k in task}
    start = time.perf_counter()
    if p.supervised:
        fit_sgd(model, dd, p.optimizer(), p.regularization(), p.early_stopping(), p.epochs,
                LoopOptions(shuffle=task.get("shuffle", True), seed=1, **kw), callback)
    else:
        layer = pretrain_layer(p, model)
        fit_layer(layer, dd.train if chunk else dd.train.x, p.lr, p.batch_size, p.epochs, "pretrain", callback,
                  options=LoopOptions(**kw))
    extra["wall"] = time.perf_counter() - start
    return {"epochs": epochs, **extra}


def _with_defaults(module, **defaults):
    """Make ``module.SGDStep`` (the name a trainer module calls) default the given keywords."""
    cls = module.SGDStep

    def make(*args, **kw):
        return cls(*args, **{**defaults, **kw})

    module.SGDStep = make


def _ablate(switches):
    """Turn single trainer techniques off, to measure what each is worth (the ablation table)."""
    import contextlib

    from dlexp.train import pretrain, sgd

    for s in switches:
        if s == "channels_last":
            sgd.conv_layout = lambda model, device: contextlib.nullcontext()
        elif s == "closed_form":  # the autograd step instead of the model's closed-form gradient
            _with_defaults(sgd, closed_form=False)
            _with_defaults(pretrain, closed_form=False)
        elif s == "cpu_bernoulli":  # torch.bernoulli in the RBM's closed-form chain instead of rand_like < p
            from dlexp.models import rbm

            rbm.bernoulli = torch.bernoulli
        elif s == "stacked_outer":  # each Outer term its own GEMM (batch 1: two rank-1 updates)
            from dlexp.train import fused

            fused.MERGE_ROWS = 0
        else:
            raise ValueError(f"unknown ablation {s!r}")


def run_plain(p, data, device, task):
    model = build(p, data)
    epochs, clock = [], EpochClock()

    def on_epoch(seconds, metrics):
        epochs.append([seconds, clock.lap()])

    if p.supervised:
        plain.supervised_epochs(model, data.train, data.valid, p.batch_size, p.lr, p.l2, p.epochs, on_epoch,
                                device)
    else:
        plain.pretrain_epochs(pretrain_layer(p, model), data.train, p.batch_size, p.lr, p.epochs, on_epoch,
                              device)
    return {"epochs": epochs}


def run_lightning(p, data, device, task):
    from .lightning_loop import fit

    model = build(p, data)
    return {"epochs": fit(p, model, data, device, EpochClock)}


def run_gemm(p, data, device, task):
    """FLOPs and replayed dense time of one step and of one validation pass."""
    import torch.nn.functional as F

    model = build(p, data).to(device)
    b = p.batch_size
    x = torch.as_tensor(data.train.x[:b]).to(device)
    y = torch.as_tensor(data.train.y[:b]).to(device)
    if p.supervised:
        params = list(model.parameters())

        def step():
            torch.autograd.grad(F.cross_entropy(model(x), y), params)

        xv = torch.as_tensor(data.valid.x).to(device)

        def validate():
            with torch.no_grad():
                for i in range(0, len(xv), 10000):
                    model(xv[i:i + 10000]).argmax(1)
    else:
        layer = pretrain_layer(p, model)
        params = list(layer.parameters())

        def step():
            torch.autograd.grad(layer.pretrain_loss(x)[0], params)

        def validate():
            pass

    step()  # warm-up (lazy init)
    step_calls, step_flops = gemm.record(step)
    valid_calls, valid_flops = gemm.record(validate)
    sync = (lambda: _sync(device)) if device.type == "cuda" else None
    return {"step_flops": step_flops, "valid_flops": valid_flops,
            "step_seconds": gemm.replay_seconds(step_calls, repeat=max(2, min(200, int(2e9 / max(1, step_flops)))),
                                                sync=sync),
            "valid_seconds": gemm.replay_seconds(valid_calls, repeat=3, sync=sync),
            "n_dense_calls": len(step_calls),
            "shapes": sorted({f"{c[0].overloadpacket.__name__}{[a[1] for a in c[1] if isinstance(a, tuple) and a and a[0] == 'T']}"
                              for c in step_calls})}


def run_mlflow(p, data, device, task):
    """The whole CLI run (run_experiment) with tracking on or off."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from dlexp.cli import CONFIG_PATH
    from dlexp.config import register_configs, validate
    from dlexp.run.experiment import run_experiment

    register_configs()  # the schemas the groups' defaults name (the CLI registers them when it starts)
    tmp = tempfile.mkdtemp(prefix="dlexp-bench-")
    overrides = list(task["overrides"]) + [f"tracking.enabled={str(task['tracking']).lower()}",
                                           f"tracking.uri=sqlite:///{tmp}/mlflow.db", "trainer.progress=none",
                                           f"trainer.device={device}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run = validate(cfg)
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        clock = EpochClock()
        start = time.perf_counter()
        final = run_experiment(run, OmegaConf.to_yaml(cfg), overrides, os.path.join(tmp, "run"))
        wall = time.perf_counter() - start
        foreign = clock.lap()
    finally:
        os.chdir(cwd)
    from dlexp.metric_names import EPOCHS, TRAIN_SECONDS

    return {"train_seconds": final[TRAIN_SECONDS], "wall": wall, "epochs_run": final[EPOCHS],
            "foreign": foreign}


RNG_OPS = {"uniform_", "bernoulli_", "normal_", "random_", "rand_like", "bernoulli"}


def run_profile(p, data, device, task):
    """Where one dlexp training step's time goes: torch.profiler over ``n`` steps of the trainer's own
    step (as fit_sgd / fit_layer build it), self time of the dense kernels (GEMM, GEMV, convolutions),
    of the random draws, of the other kernels, and the rest of the wall time (Python, dispatch)."""
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from dlexp.train.step import SGDStep

    model = build(p, data).to(device)
    b = p.batch_size
    x = torch.as_tensor(data.train.x).to(device)
    y = torch.as_tensor(data.train.y).to(device)
    if p.supervised:
        module, objective = model, "nll"
        loss_fn = lambda xb, yb: F.cross_entropy(model(xb), yb)  # noqa: E731
        weights, l2 = model.weights(), p.l2
    else:
        module = pretrain_layer(p, model)
        objective, weights, l2 = "pretrain", [], 0.0
        loss_fn = lambda xb, yb: module.pretrain_loss(xb)  # noqa: E731
    step = SGDStep(module, loss_fn, list(module.parameters()), weights, lr=p.lr, l2=l2, objective=objective,
                   closed_form="closed_form" not in task.get("ablate", ()))
    n = max(4, min(len(x) // b, int(task.get("steps", 200))))

    def steps(count):
        for i in range(count):
            step(x[i * b:(i + 1) * b], y[i * b:(i + 1) * b] if p.supervised else None)
        step.read()

    steps(min(n, 20))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        steps(n)
        wall = time.perf_counter() - start
    dense_us = rng_us = other_us = 0.0
    for ev in prof.key_averages():
        name = ev.key.split("::")[-1]
        us = ev.self_cpu_time_total
        if name.rstrip("_") in gemm.DENSE or name in ("addmm_", "addmv_", "addr_", "addr", "addmv", "mv"):
            dense_us += us
        elif name in RNG_OPS:
            rng_us += us
        elif ev.key.startswith("aten::"):
            other_us += us
    total = wall * 1e6
    return {"step_ms": wall / n * 1e3, "dense": dense_us / total, "rng": rng_us / total, "other": other_us / total,
            "rest": max(0.0, 1 - (dense_us + rng_us + other_us) / total), "closed_form": step.closed is not None,
            "steps": n}


def run_original(p, data, device, task):
    """The tutorial's own code (bench/original.py) on the same rows; its epochs as the harness times them."""
    from . import original

    # the tutorials validate whole minibatches only: at least one (LeNet b500 on --quick's 400 rows)
    return original.run(p.key, p.epochs, p.rows, max(p.valid_rows, p.batch_size), threads=task.get("threads"))


TASKS = {"dlexp": run_dlexp, "plain": run_plain, "lightning": run_lightning, "gemm": run_gemm,
         "mlflow": run_mlflow, "original": run_original, "profile": run_profile}


def main(arg: str) -> None:
    task = json.loads(arg)
    if task.get("threads"):
        torch.set_num_threads(int(task["threads"]))
    device = device_of(task.get("device"))
    if task["kind"] == "mlflow":
        out = run_mlflow(None, None, device, task)
    else:
        p = protocols(task.get("scale", 1.0))[task["protocol"]]
        data = load_data(p.rows, p.valid_rows, task.get("data", "fashion_mnist"))
        out = TASKS[task["kind"]](p, data, device, task)
        out["data"] = data.source
        out["scale"] = p.scale
    sys.stdout.write("\nBENCH-RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
