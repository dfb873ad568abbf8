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
    steps = p.rows // p.batch_size
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
        g = ok["gemm"][0]
        step_s = min(r["step_seconds"] for r in ok["gemm"])
        valid_s = min(r["valid_seconds"] for r in ok["gemm"])
        flops = steps * g["step_flops"] + g["valid_flops"]
        bound = steps * step_s + valid_s
        row["gflop_per_epoch"] = flops * p.scale / 1e9
        row["bound_s"] = bound * p.scale
        row["dense_shapes"] = g.get("shapes")
        if us:
            row["max_speedup"] = us / bound
        if ds:
            row["gflops"] = flops / ds / 1e9
            row["bound_ratio"] = bound / ds
    if original and ok.get("ordered"):
        s_, f_ = best_epoch(*ok["ordered"])
        if s_:
            row["ordered_s"], row["ordered_foreign"] = s_ * p.scale, f_
    if original and ok.get("original"):
        os_, ofor = best_epoch(*ok["original"])
        mine = row.get("ordered_s") if p.supervised else row.get("dlexp_s")
        if os_:
            row["original_s"] = os_ * p.scale
            row["original_foreign"] = ofor
            row["original_epochs"] = [r["epochs"] for r in ok["original"]]
            if mine:
                row["vs_original"] = row["original_s"] / mine
                row["bound_ratio_vs"] = row["bound_s"] / mine if row.get("bound_s") else None
    profiles = [q for q in (worker({**task, "kind": "profile"}) for _ in range(2)) if "error" not in q]
    if profiles:  # the faster of two processes (one may land on a slow spell of the machine)
        row["profile"] = min(profiles, key=lambda q: q["step_ms"])
    if lightning and ok.get("lightning"):
        ls, lfor = best_epoch(*ok["lightning"])
        if ls:
            row["lightning_s"] = ls * p.scale
            row["lightning_foreign"] = lfor
    return row


def measure_extras(ps: dict, base: dict, device: str, n_rounds: int) -> dict:
    threads = base.get("threads")
    extras = {"compile": [], "chunk": [], "mlflow": None}
    # torch.compile of the step, against the eager step in the same rounds; compile time = first epoch - steady
    for key in ("logreg", "mlp", "lenet"):
        if key not in ps:
            continue
        p = ps[key]
        res = rounds({"eager": {**base, "protocol": key, "kind": "dlexp"},
                      "compiled": {**base, "protocol": key, "kind": "dlexp", "compile": True}}, n_rounds)
        e, _ = best_epoch(*[r for r in res["eager"] if "error" not in r])
        c, cf = best_epoch(*[r for r in res["compiled"] if "error" not in r])
        firsts = [r["epochs"][0][0] for r in res["compiled"] if r.get("epochs")]
        extras["compile"].append({"key": key, "title": p.title, "eager": e * p.scale if e else None,
                                  "seconds": c * p.scale if c else None, "foreign": cf,
                                  "compile_s": max(firsts) - c if (firsts and c) else None,
                                  "error": next((r["error"] for r in res["compiled"] if "error" in r), None)})
    # dataset.device_chunk: a resident chunk of 50 minibatches, refilled, against full residency
    for key in ("logreg", "mlp", "da"):
        if key not in ps:
            continue
        p = ps[key]
        chunk = 50 * p.batch_size
        res = rounds({"resident": {**base, "protocol": key, "kind": "dlexp"},
                      "chunked": {**base, "protocol": key, "kind": "dlexp", "chunk": chunk}}, n_rounds)
        full, _ = best_epoch(*[r for r in res["resident"] if "error" not in r])
        s, f = best_epoch(*[r for r in res["chunked"] if "error" not in r])
        extras["chunk"].append({"key": key, "title": p.title, "chunk": chunk, "resident": full * p.scale if full else None,
                                "seconds": s * p.scale if s else None, "foreign": f,
                                "error": next((r["error"] for r in res["chunked"] if "error" in r), None)})
    if device.startswith("cuda"):
        for key in ("mlp", "lenet"):
            if key in ps:
                p = ps[key]
                res = rounds({"fp32": {**base, "protocol": key, "kind": "dlexp"},
                              "bf16": {**base, "protocol": key, "kind": "dlexp", "precision": "bf16"}}, n_rounds)
                e, _ = best_epoch(*[r for r in res["fp32"] if "error" not in r])
                s, f = best_epoch(*[r for r in res["bf16"] if "error" not in r])
                extras.setdefault("bf16", []).append({"key": key, "title": p.title, "fp32": e * p.scale if e else None,
                                                      "seconds": s * p.scale if s else None, "foreign": f})
    # ablation: one technique off at a time, against the default trainer in the same rounds
    extras["ablation"] = []
    closed = "closed-form step (vs autograd)"
    for key, name, change in (("logreg", closed, {"ablate": ["closed_form"]}),
                              ("mlp", closed, {"ablate": ["closed_form"]}),
                              ("da", closed, {"ablate": ["closed_form"]}),
                              ("rbm", closed, {"ablate": ["closed_form"]}),
                              ("sda", closed, {"ablate": ["closed_form"]}),
                              ("rbm", "CPU Bernoulli as rand_like < p (vs torch.bernoulli)",
                               {"ablate": ["cpu_bernoulli"]}),
                              ("sda", "few-row Outer terms stacked in one GEMM (vs one each)",
                               {"ablate": ["stacked_outer"]}),
                              ("lenet", "conv weights channels_last", {"ablate": ["channels_last"]}),
                              ("mlp", "one thread a core (vs 1 thread)", {"threads": 1}),
                              ("logreg", "one thread a core (vs 1 thread)", {"threads": 1})):
        if key not in ps or (threads and "threads" in change):
            continue
        p = ps[key]
        res = rounds({"on": {**base, "protocol": key, "kind": "dlexp"},
                      "off": {**base, "protocol": key, "kind": "dlexp", **change}}, n_rounds)
        on, _ = best_epoch(*[r for r in res["on"] if "error" not in r])
        off, f = best_epoch(*[r for r in res["off"] if "error" not in r])
        extras["ablation"].append({"title": p.title, "technique": name, "on": on * p.scale if on else None,
                                   "off": off * p.scale if off else None,
                                   "error": next((r["error"] for r in res["off"] if "error" in r), None)})
    # MLflow on vs off: the whole CLI run (run_experiment), logreg b600: the most validations per second
    data_name = base.get("data", "fashion_mnist")
    if data_name == "random":
        data_name = "fashion_mnist"
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
    res = rounds(tasks, 2)
    for t, rs in res.items():
        good = [r for r in rs if "error" not in r]
        runs[t] = min(good, key=lambda r: r["train_seconds"]) if good else rs[0]
    extras["mlflow"] = {"on": runs.get(True), "off": runs.get(False), "overrides": overrides}
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
