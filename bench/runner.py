"""Runs every measurement in its own process and turns the results into rows."""
import importlib.util
import json
import sys
import time
from pathlib import Path

from . import report
from .protocols import FULL_TRAIN, protocols
from .timing import idle_fraction, json_result, wait_quiet

ROOT = Path(__file__).resolve().parent.parent
QUIET = report.QUIET  # an epoch with more foreign CPU load than this is not trusted if a quieter one exists
SPARE = 0.0   # --threads N on C CPUs: the share of the machine the run leaves to others, 1 - N / C


def set_threads(threads) -> None:
    """With every side on ``threads`` threads, other processes may use the CPUs they leave free: an
    epoch is quiet if the others took at most 10 % beyond those, and a worker starts once a share of
    idle CPUs that large is free."""
    global SPARE
    from .timing import n_cpus

    SPARE = max(0.0, 1.0 - threads / n_cpus()) if threads else 0.0


def worker(task: dict, timeout: float = 900) -> dict:
    """Run one task in a fresh interpreter; its result dict (or {'error': ...})."""
    wait_quiet(0.85 * (1.0 - SPARE), timeout=20)
    cmd = [sys.executable, "-m", "bench", "--worker", json.dumps(task)]
    return json_result(cmd, "BENCH-RESULT ", timeout, cwd=ROOT)


def best_epoch(*results):
    """(seconds, foreign) of the fastest epoch after each run's first (warm-up), preferring quiet ones."""
    pool = []
    for result in results:
        epochs = (result or {}).get("epochs") or []
        pool += epochs[1:] or epochs
    if not pool:
        return None, None
    quiet = [e for e in pool if e[1] <= QUIET + SPARE]
    seconds, foreign = min(quiet or pool, key=lambda e: e[0])
    return seconds, foreign


def rounds(tasks: dict, n: int) -> dict:
    """Run each task ``n`` times, alternating the order (a slow spell of the machine then hits both sides)."""
    out = {k: [] for k in tasks}
    keys = list(tasks)
    for r in range(n):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            out[k].append(worker(tasks[k]))
    return out


def _lightning_available() -> bool:
    return importlib.util.find_spec("lightning") is not None or importlib.util.find_spec("pytorch_lightning") is not None


def measure_protocol(p, base: dict, lightning: bool, n_rounds: int, original: bool = False) -> dict:
    row = {"key": p.key, "title": p.title, "batch": p.batch_size, "rows": p.rows, "scale": p.scale, "note": p.note,
           "quiet_limit": QUIET + SPARE}  # foreign load above this: the report says so
    task = {**base, "protocol": p.key}
    tasks = {"gemm": {**task, "kind": "gemm"}, "dlexp": {**task, "kind": "dlexp"}, "plain": {**task, "kind": "plain"}}
    if lightning:
        tasks["lightning"] = {**task, "kind": "lightning"}
    if original:
        tasks["original"] = {**task, "kind": "original"}
        if p.supervised:  # the tutorials take minibatches in order (as dlexp's default trainer.shuffle=false)
            tasks["ordered"] = {**task, "kind": "dlexp", "shuffle": False}
    res = rounds(tasks, n_rounds)
    row["errors"] = {k: r["error"] for k, rs in res.items() for r in rs[:1] if "error" in r}
    ok = {k: [r for r in rs if "error" not in r] for k, rs in res.items()}
    row["data"] = next((r.get("data") for rs in ok.values() for r in rs if r.get("data")), None)
    ds, dfor = best_epoch(*ok["dlexp"])
    us, ufor = best_epoch(*ok["plain"])
    if ds:
        row["dlexp_s"] = ds * p.scale
        row["dlexp_foreign"] = dfor
        row["examples_per_s"] = FULL_TRAIN / row["dlexp_s"]
        row["epochs_per_s"] = 1.0 / row["dlexp_s"]
        row["dlexp_epochs"] = [r["epochs"] for r in ok["dlexp"]]
    if us:
        row["plain_s"] = us * p.scale
        row["plain_foreign"] = ufor
        row["plain_epochs"] = [r["epochs"] for r in ok["plain"]]
    if ds and us:
        row["speedup"] = row["plain_s"] / row["dlexp_s"]
    if ok["gemm"]:
        row.update(_dense_bound(ok["gemm"], p, us, ds))
    if original:
        row.update(_against_original(ok, p, row))
    profiles = [q for q in (worker({**task, "kind": "profile"}) for _ in range(2)) if "error" not in q]
    if profiles:  # the faster of two processes (one may land on a slow spell of the machine)
        row["profile"] = min(profiles, key=lambda q: q["step_ms"])
    if lightning and ok.get("lightning"):
        ls, lfor = best_epoch(*ok["lightning"])
        if ls:
            row["lightning_s"] = ls * p.scale
            row["lightning_foreign"] = lfor
    return row


def _dense_bound(gemm: list, p, us, ds) -> dict:
    """The dense-op bound of an epoch (every matrix product of its steps and its validation, replayed back to
    back), its FLOPs, and how near the plain loop (``us``) and dlexp (``ds``) come to it."""
    g, steps = gemm[0], p.rows // p.batch_size
    step_s = min(r["step_seconds"] for r in gemm)
    valid_s = min(r["valid_seconds"] for r in gemm)
    flops = steps * g["step_flops"] + g["valid_flops"]
    bound = steps * step_s + valid_s
    out = {"gflop_per_epoch": flops * p.scale / 1e9, "bound_s": bound * p.scale, "dense_shapes": g.get("shapes")}
    if us:
        out["max_speedup"] = us / bound
    if ds:
        out["gflops"], out["bound_ratio"] = flops / ds / 1e9, bound / ds
    return out


def _against_original(ok: dict, p, row: dict) -> dict:
    """The original code's epoch against dlexp's in the same order (minibatches in order for the supervised
    protocols, as the tutorials take them)."""
    out = {}
    if ok.get("ordered"):
        s_, f_ = best_epoch(*ok["ordered"])
        if s_:
            out["ordered_s"], out["ordered_foreign"] = s_ * p.scale, f_
    os_, ofor = best_epoch(*ok["original"]) if ok.get("original") else (None, None)
    mine = out.get("ordered_s") if p.supervised else row.get("dlexp_s")
    if os_:
        out.update(original_s=os_ * p.scale, original_foreign=ofor,
                   original_epochs=[r["epochs"] for r in ok["original"]])
        if mine:
            out["vs_original"] = out["original_s"] / mine
            out["bound_ratio_vs"] = row["bound_s"] / mine if row.get("bound_s") else None
    return out


def _pair(base: dict, key: str, first: tuple, second: tuple, n_rounds: int) -> tuple:
    """One protocol's dlexp run two ways (each a (name, task changes) pair) in the same alternating rounds:
    (the first's fastest epoch, the second's, the second's foreign load, the second's error, every result by
    name), seconds unscaled."""
    res = rounds({name: {**base, "protocol": key, "kind": "dlexp", **change} for name, change in (first, second)},
                 n_rounds)
    a, _ = best_epoch(*[r for r in res[first[0]] if "error" not in r])
    b, f = best_epoch(*[r for r in res[second[0]] if "error" not in r])
    return a, b, f, next((r["error"] for r in res[second[0]] if "error" in r), None), res


def _scaled(p, seconds):
    return seconds * p.scale if seconds else None


ABLATIONS = (("logreg", "closed-form step (vs autograd)", {"ablate": ["closed_form"]}),
             ("mlp", "closed-form step (vs autograd)", {"ablate": ["closed_form"]}),
             ("da", "closed-form step (vs autograd)", {"ablate": ["closed_form"]}),
             ("rbm", "closed-form step (vs autograd)", {"ablate": ["closed_form"]}),
             ("sda", "closed-form step (vs autograd)", {"ablate": ["closed_form"]}),
             ("rbm", "CPU Bernoulli as rand_like < p (vs torch.bernoulli)", {"ablate": ["cpu_bernoulli"]}),
             ("sda", "few-row Outer terms stacked in one GEMM (vs one each)", {"ablate": ["stacked_outer"]}),
             ("lenet", "conv weights channels_last", {"ablate": ["channels_last"]}),
             ("mlp", "one thread a core (vs 1 thread)", {"threads": 1}),
             ("logreg", "one thread a core (vs 1 thread)", {"threads": 1}))


def measure_variants(ps: dict, base: dict, device: str, n_rounds: int) -> dict:
    """The trainer's options against its default, in the same rounds: torch.compile (compile time = first
    epoch - steady), dataset.device_chunk (50 minibatches resident, refilled), bf16 on CUDA, and the ablation
    of each technique (one off at a time)."""
    extras = {"compile": [], "chunk": [], "ablation": []}
    for key in (k for k in ("logreg", "mlp", "lenet") if k in ps):
        p = ps[key]
        e, c, cf, err, res = _pair(base, key, ("eager", {}), ("compiled", {"compile": True}), n_rounds)
        firsts = [r["epochs"][0][0] for r in res["compiled"] if r.get("epochs")]
        extras["compile"].append({"key": key, "title": p.title, "eager": _scaled(p, e), "seconds": _scaled(p, c),
                                  "foreign": cf, "compile_s": max(firsts) - c if (firsts and c) else None,
                                  "error": err})
    for key in (k for k in ("logreg", "mlp", "da") if k in ps):
        p, chunk = ps[key], 50 * ps[key].batch_size
        full, s, f, err, _ = _pair(base, key, ("resident", {}), ("chunked", {"chunk": chunk}), n_rounds)
        extras["chunk"].append({"key": key, "title": p.title, "chunk": chunk, "resident": _scaled(p, full),
                                "seconds": _scaled(p, s), "foreign": f, "error": err})
    for key in (k for k in ("mlp", "lenet") if k in ps and device.startswith("cuda")):
        p = ps[key]
        e, s, f, _, _ = _pair(base, key, ("fp32", {}), ("bf16", {"precision": "bf16"}), n_rounds)
        extras.setdefault("bf16", []).append({"key": key, "title": p.title, "fp32": _scaled(p, e),
                                              "seconds": _scaled(p, s), "foreign": f})
    for key, name, change in ABLATIONS:
        if key not in ps or (base.get("threads") and "threads" in change):
            continue
        p = ps[key]
        on, off, _, err, _ = _pair(base, key, ("on", {}), ("off", change), n_rounds)
        extras["ablation"].append({"title": p.title, "technique": name, "on": _scaled(p, on),
                                   "off": _scaled(p, off), "error": err})
    return extras


def measure_mlflow(base: dict, device: str) -> dict:
    """MLflow on vs off: the whole CLI run (run_experiment), logreg b600 (the most validations a second); on
    digits where the data set is not installed."""
    data_name = base.get("data", "fashion_mnist")
    if data_name == "random":
        data_name = "fashion_mnist"
    threads = base.get("threads")
    overrides = ["model=logreg", f"dataset={data_name}", "dataset.download=false", "optimizer.batch_size=600",
                 "optimizer.lr=0.13", "early_stopping=none", "trainer.max_epochs=100", "trainer.shuffle=true"]
    if threads:
        overrides.append(f"trainer.threads={threads}")
    probe = worker({"kind": "mlflow", "device": device, "overrides": overrides + ["trainer.max_epochs=1"],
                    "tracking": False})
    if "error" in probe:
        overrides[1] = "dataset=digits"
        overrides[6] = "trainer.max_epochs=2000"
    runs = {}
    tasks = {t: {"kind": "mlflow", "device": device, "overrides": overrides, "tracking": t} for t in (True, False)}
    for t, rs in rounds(tasks, 2).items():
        good = [r for r in rs if "error" not in r]
        runs[t] = min(good, key=lambda r: r["train_seconds"]) if good else rs[0]
    return {"on": runs.get(True), "off": runs.get(False), "overrides": overrides}


def measure_extras(ps: dict, base: dict, device: str, n_rounds: int) -> dict:
    """The extra tables: the trainer's variants, MLflow's overhead and, on a CPU, a sweep's overhead a job."""
    extras = measure_variants(ps, base, device, n_rounds)
    extras["mlflow"] = measure_mlflow(base, device)
    if device == "cpu":  # issue 13: what a serial in-process sweep costs a job beyond its training
        from . import sweep_overhead

        extras["sweep"] = sweep_overhead.per_job(reps=3)
    return extras


def run_all(args) -> int:
    scale = args.scale or (0.25 if args.quick else 0.5)
    n_rounds = args.rounds or (1 if args.quick else 2)
    ps = protocols(scale)
    if args.only:
        wanted = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in ps]
        if unknown:
            print(f"unknown protocol(s): {', '.join(unknown)}; choose from {', '.join(ps)}", file=sys.stderr)
            return 2
        ps = {k: ps[k] for k in wanted}
    base = {"scale": scale, "device": args.device, "data": args.data}
    if args.threads:
        base["threads"] = args.threads
    set_threads(args.threads)
    lightning = _lightning_available() and not args.no_lightning
    meta = report.machine(args.device)
    from . import original

    peer_ok, meta["original"] = original.available()
    if peer_ok and args.data != "fashion_mnist":
        peer_ok, meta["original"] = False, f"the original code runs on Fashion-MNIST only (--data {args.data})"
    if args.no_original:
        peer_ok, meta["original"] = False, "--no-original"
    peer_keys = set(original.protocols(ps)) if peer_ok else set()
    if peer_ok and "sda" in ps and "sda" not in peer_keys:
        meta["original_sda"] = "SdA.py is not in the peer folder (set PEER_SDA to the upstream code/SdA.py)"
    meta["idle_at_start"] = idle_fraction(1.0)
    print(report.header(meta), flush=True)
    start = time.perf_counter()
    rows = []
    for p in ps.values():
        row = measure_protocol(p, base, lightning, n_rounds, p.key in peer_keys)
        rows.append(row)
        print(report.row_line(row), flush=True)
    extras = None if args.no_extras else measure_extras(ps, base, args.device, max(1, n_rounds - 1))
    meta["bench_seconds"] = time.perf_counter() - start
    meta["idle_at_end"] = idle_fraction(1.0)
    meta["command"] = "python -m bench " + " ".join(a for a in (sys.argv[1:] if args is not None else []))
    meta["lightning"] = lightning
    meta["threads_all"] = args.threads
    text = report.render(meta, rows, extras)
    print()
    print(text)
    if not args.no_write:
        out = Path(args.out)
        if not out.is_absolute():
            out = ROOT / out
        out.write_text(text)
        print(f"\nwritten to {out}")
    return 0
