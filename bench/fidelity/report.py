"""The report (bench/FIDELITY.md, FIDELITY_MNIST.md) from the store: a summary table, a section a protocol,
the commands that make and continue it."""
import datetime
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path

from dlexp import metric_names as names

from .protocols import FASHION_WORDS, GROUPS, MNIST_WORDS, N_TRAIN, PROTOCOLS, SPLITS, Protocol
from .readback import collect, row_of
from .store import EXPERIMENT, REPO, default_store, stored_runs


def stat(values, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """``mean ± sd unit`` over the values (sample sd; the mean alone for one value); ``—`` for none."""
    values = [scale * v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}{unit}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}{unit}"


def wall_text(row: dict) -> str:
    """A run's wall seconds, marked when the run was stopped and continued in a later sitting."""
    return f"{row['wall']:.1f}" + (" (resumed)" if row["resumed"] else "")


def pct(v) -> str:
    """An error rate as a percentage to the tutorials' own 4 decimals (7.4896 %), ``—`` when the run has none."""
    return "—" if v is None else f"{100 * v:.4f} %"


def epochs_text(rows: list, p: Protocol) -> str:
    """Epochs run and why it stopped, over the seeds (``12, 15 (patience exhausted)``)."""
    parts = []
    if p.kind != "supervised":
        parts.append(f"{'/'.join(sorted({str(r['pretrain_epochs']) for r in rows}))} "
                     + ("pretraining a layer" if p.kind == "stack" else "(epoch count)"))
    if p.kind != "unsupervised":
        stops = sorted({r["stop"] for r in rows})
        parts.append(f"{', '.join(str(r['epochs']) for r in rows)} ({'; '.join(stops)})")
    return " + ".join(parts)


def differs(p: Protocol, dataset: str) -> str:
    """What differs from the tutorial's protocol: the data set (but on MNIST) and the entry's own words."""
    data = [] if dataset == "mnist" else [f"the data ({dataset} for MNIST)"]
    return "; ".join(data + ([p.differs] if p.differs else [])) or "nothing"


def baseline_cell(p: Protocol, dataset: str) -> str:
    """The summary's last cell: Fashion-MNIST's published baseline (none on MNIST: the tutorial is the reference)."""
    return "" if dataset == "mnist" else f" {p.baseline} |"


def summary_line(p: Protocol, rows: list, dataset: str) -> str:
    """The protocol's row of the summary table."""
    seconds = [r["wall"] for r in rows]
    if p.kind == "unsupervised":
        figures = f"final cost {stat([r['final_cost'] for r in rows])} | — "
    else:
        figures = (f"{stat([r['valid'] for r in rows], 100, unit=' %')} | "
                   f"{stat([r['test'] for r in rows], 100, unit=' %')} ")
    k = sum(r["resumed"] for r in rows)
    resumed = "" if not k else " (resumed)" if len(rows) == 1 else f" ({k} of {len(rows)} resumed)"
    return (f"| {p.name} | {len(rows)} | {epochs_text(rows, p)} | {figures}| {stat(seconds, digits=1)}{resumed} | "
            f"{p.tutorial} |{baseline_cell(p, dataset)}")


SUMMARY_INTRO = ("mean ± sd over seeds (n); unsupervised models: their final training cost (dA: reconstruction "
                 "cross-entropy, RBM: pseudo-likelihood). Wall: a run's start to end; one stopped and continued in a "
                 "later sitting (resumed) counts the time it was stopped, its trainer seconds (the seed tables) do not.")
SUMMARY_HEAD = ("| protocol | n | epochs (why it stopped) | best valid error | test error | wall s / run | "
                "tutorial (MNIST) | Fashion-MNIST baseline |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
SUMMARY_HEAD_MNIST = ("| protocol | n | epochs (why it stopped) | best valid error | test error | wall s / run | "
                      "tutorial (MNIST) |\n| --- | --- | --- | --- | --- | --- | --- |")


def seed_table(p: Protocol, rows: list) -> list:
    """One line per seed: every figure the summary averages, the run id and commit."""
    if p.kind == "supervised":
        head = "| seed | epochs | stopped | best valid | test | train s | wall s | commit | run |"
        body = [f"| {r['seed']} | {r['epochs']} | {r['stop']} | {pct(r['valid'])} | {pct(r['test'])} | "
                f"{r['train_seconds']:.1f} | {wall_text(r)} | {r['commit']} | `{r['run']}` |" for r in rows]
    elif p.kind == "unsupervised":
        head = "| seed | epochs | final cost | train s | wall s | images | commit | run |"
        body = [f"| {r['seed']} | {r['pretrain_epochs']} | {r['final_cost']:.3f} | {r['pretrain_seconds']:.1f} | "
                f"{wall_text(r)} | {r['images']} | {r['commit']} | `{r['run']}` |" for r in rows]
    else:
        head = ("| seed | pretraining epochs a layer | final cost a layer | pretrain s | fine-tuning epochs | "
                "stopped | best valid | test | fine-tune s | wall s | images | commit | run |")
        body = [f"| {r['seed']} | {r['pretrain_epochs']} | {' / '.join(f'{c:.2f}' for c in r['costs'])} | "
                f"{r['pretrain_seconds'] or 0:.1f} | {r['epochs']} | {r['stop']} | {pct(r['valid'])} | "
                f"{pct(r['test'])} | {r['train_seconds']:.1f} | {wall_text(r)} | {r['images']} | {r['commit']} | "
                f"`{r['run']}` |" for r in rows]
    return [head, "|" + " --- |" * (head.count("|") - 1), *body]


def bench_command(dataset: str, args: str, store: str = None, quick: bool = False) -> str:
    """The command that runs ``args`` for a report on ``dataset`` (Fashion-MNIST needs no flag), in ``store``
    where that is not the default one."""
    flags = "" if dataset == "fashion_mnist" else f" --dataset {dataset}"
    flags += f" --store {store}" if store and store != default_store(quick) else ""
    return f"python -m bench.fidelity{flags} {args}"


def hours(seconds: float) -> str:
    """A duration in minutes, or hours from one hour up."""
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def estimate_lines(p: Protocol, timing, rows: list, dataset: str, store: str, quick: bool) -> list:
    """The exact protocol's time, extrapolated from its capped timing run (stated as an estimate)."""
    e = p.estimate
    if timing is None:
        return [f"Full-protocol estimate: no timing run yet "
                f"(`{bench_command(dataset, '--models ' + p.name, store, quick)}` makes it)."]
    m = names.renamed(timing.data.metrics)
    n_rows = int(m[names.ITERATIONS]) * e.finetune_batch  # one epoch over the capped training rows
    layers = [m[k] for k in sorted(m) if k.startswith("pretrain/layer_") and k.endswith("/epoch_seconds")]
    per_epoch_pre = sum(layers) * N_TRAIN / n_rows
    per_epoch_ft = m[names.TRAIN_SECONDS] * N_TRAIN / n_rows
    fewest = math.ceil(e.patience / (N_TRAIN / e.finetune_batch))
    pre = per_epoch_pre * e.pretrain_epochs
    at = [(f"the patience rule's fewest, {fewest}", fewest), (f"the tutorial's {e.tutorial_epochs}", e.tutorial_epochs)]
    stopped = [r for r in rows if r["stop"] == "patience exhausted"]
    if stopped:  # this variant fine-tunes exactly as the full protocol does: its epochs are the best guess
        mean = statistics.fmean(r["epochs"] for r in stopped)
        at.append((f"this variant's mean {mean:.0f}", mean))
    out = [f"**Full protocol (`{' '.join(e.overrides)}`), estimated** from run `{timing.info.run_id}` "
           f"(the exact settings for one epoch over {n_rows} training rows, validation on 1,000 + 1,000, "
           f"threads {timing.data.params.get('trainer.threads', 'None')}), scaled to {N_TRAIN:,} rows:",
           f"- pretraining: {' + '.join(f'{s * N_TRAIN / n_rows:.0f}' for s in layers)} s an epoch over the "
           f"{len(layers)} layers x {e.pretrain_epochs} epochs = **{hours(pre)}**",
           f"- fine-tuning: {per_epoch_ft:.0f} s an epoch (one validation included); "
           + "; ".join(f"at {label} epochs {hours(per_epoch_ft * n)}" for label, n in at)
           + f"; at the 1000-epoch cap {hours(per_epoch_ft * 1000)}",
           f"- total a seed: **{hours(pre + per_epoch_ft * fewest)} – "
           f"{hours(pre + per_epoch_ft * max(n for _, n in at))}** "
           f"(the tutorial on MNIST: {e.tutorial_minutes})"]
    return out


def so_far(run, p: Protocol, store: str) -> str:
    """Where an unfinished supervised run stands (when it stopped, or now while it trains): its validations and
    its best so far."""
    from mlflow.tracking import MlflowClient

    m = run.data.metrics
    best, test = (names.get(m, names.TRAINER[k]) for k in ("best_valid_error", "test_error"))  # old names too
    if best is None or test is None:
        return ""
    epochs = len(MlflowClient(store).get_metric_history(run.info.run_id, names.VALID_ERROR))
    when = "so far" if run.info.status == "RUNNING" else "when it stopped"
    return (f"; {when}, after {epochs}{' fine-tuning' if p.kind == 'stack' else ''} epochs: best valid "
            f"{pct(best)}, test {pct(test)} "
            f"(not a result: the protocol has not ended)")


def section(p: Protocol, done: list, other: list, timing, store: str, report_dir: Path, quick: bool,
            dataset: str) -> list:
    """A protocol's part of the report: the protocol, what differs, references, one line per seed."""
    rows = [row_of(r, p, store, report_dir) for r in sorted(done, key=lambda r: int(r.data.params["trainer.seed"]))]
    lines = [f"### {p.name}: {p.title}", "", f"- protocol: {p.words} (`{' '.join(p.overrides)}`)",
             f"- differs from the tutorial: {differs(p, dataset)}"
             + ("; **quick: capped epochs and rows**" if quick else ""),
             f"- tutorial on MNIST: {p.tutorial}" + ("" if dataset == "mnist" else
                                                      f"; Fashion-MNIST baseline: {p.baseline}")]
    note = p.mnist_notes if dataset == "mnist" else p.notes
    lines += [f"- note: {note}"] if note else []
    again = f"`{bench_command(dataset, '--models ' + p.name + (' --quick' if quick else ''), store, quick)}`"
    lines += [""] + (seed_table(p, rows) if rows else [f"not finished yet: {again} continues it" if other
                                                       else f"not run yet: {again}"])
    for r in other:
        why = r.data.tags.get("dlexp.error") or r.data.tags.get("dlexp.pruned") or ""
        lines.append(f"\nalso in the store: run `{r.info.run_id}` ({r.info.run_name}) {r.info.status}"
                     + (f": {why}" if why else " (training now, or its process ended without closing it; the next "
                        "sitting continues it)" if r.info.status == "RUNNING" else " (the next sitting continues it)")
                     + so_far(r, p, store))
    if p.estimate:
        lines += [""] + estimate_lines(p, timing, rows, dataset, store, quick)
    return lines + [""]


def machine() -> str:
    """This machine in one line: CPU, cores, memory, OS, Python, torch."""
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else open(os.devnull) as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    mem = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        mem = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2 ** 30:.0f} GiB"
    try:
        import torch
        torch_v = f", torch {torch.__version__} ({torch.get_num_threads()} threads by default)"
    except ImportError:
        torch_v = ""
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}{torch_v}"


def git_commit() -> str:
    """HEAD, marked when the working tree has changes."""
    def git(*a):  # read-only git queries
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def header(quick: bool, dataset: str, store: str, collected: dict) -> list:
    """Title, what the report is, when, where, which commits the runs came from."""
    runs = [r for done, _, t in collected.values() for r in done + ([t] if t else [])]
    commits = sorted({r.data.tags.get("dlexp.git_commit", "?")[:10] for r in runs}) or ["none yet"]
    devices = sorted({f"{r.data.tags.get('dlexp.device', '?')} trainer.threads={r.data.params.get('trainer.threads')}"
                      for r in runs}) or ["none yet"]
    title = "# The tutorials reproduced" + (" — QUICK (not the protocol)" if quick else "")
    lines = [title, ""]
    if quick:
        lines += ["> **quick (not the protocol)**: every protocol for 2 epochs (1 pretraining epoch a layer) on "
                  "at most 2,000 training rows, one seed. These figures check the script, not the tutorials; "
                  "`python -m bench.fidelity` (no `--quick`) replaces this file with the real runs.", ""]
    lines += [f"Every tutorial's protocol run to its own end by `python -m bench.fidelity`, over seeds, on "
              f"**{dataset}** ({SPLITS.get(dataset, '')}); every figure below is read back from the MLflow store, "
              f"none from a run's output. " + (MNIST_WORDS if dataset == "mnist" else FASHION_WORDS), "",
              f"- written: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, at commit "
              f"{git_commit()}", f"- the runs' commits: {', '.join(commits)}; devices: {', '.join(devices)}",
              f"- this machine: {machine()}", f"- store: `{store}`, experiment `{EXPERIMENT}`", ""]
    return lines


def how_to_run(quick: bool, dataset: str, store: str) -> list:
    """The commands that make (and continue) the report, one a protocol group."""
    mine = "" if store == default_store(quick) else f" Add `--store {store}` to continue this report's runs."
    lines = ["## Running it", "", "Each command runs only the (protocol, seed) pairs the store lacks, so it can be "
             "stopped (Ctrl-C: the run saves its state) and started again; `--threads 1` leaves a core free." + mine,
             "", "```bash"]
    lines += [f"{bench_command(dataset, f'--models {models} --threads 1')}    # {what}" for models, what in GROUPS]
    lines += [f"{bench_command(dataset, '--report-only' + (' --quick' if quick else ''))}    # this file, from the "
              "store", "```", ""]
    return lines


def write_report(out: Path, store: str, dataset: str, quick: bool, selected: list) -> None:
    """FIDELITY.md from the store: the summary table, a section a protocol, how to run it."""
    runs = stored_runs(store)
    collected = collect(PROTOCOLS, runs, dataset, quick)
    # the default protocols, those asked for, and any other (sda_full, dbn_full) with a run in the store; a variant
    # never run is left out where its exact protocol was run
    has_runs = {p.name for p in PROTOCOLS if collected[p.name][0] or collected[p.name][1]}
    superseded = {p.name for p in PROTOCOLS if f"{p.name}_full" in has_runs and p.name not in has_runs}
    shown = [p for p in PROTOCOLS if (p.default or p in selected or p.name in has_runs) and p.name not in superseded]
    report_dir = out.resolve().parent
    lines = header(quick, dataset, store, collected) + [
        "## Summary", "", SUMMARY_INTRO, "", SUMMARY_HEAD_MNIST if dataset == "mnist" else SUMMARY_HEAD]
    for p in shown:
        done = collected[p.name][0]
        lines.append(summary_line(p, [row_of(r, p, store, report_dir) for r in done], dataset) if done
                     else f"| {p.name} | 0 | {'not finished yet' if p.name in has_runs else 'not run yet'} | — | — "
                          f"| — | {p.tutorial} |{baseline_cell(p, dataset)}")
    lines += ["", "## Protocols", ""]
    for p in shown:
        lines += section(p, *collected[p.name], store, report_dir, quick, dataset)
    lines += how_to_run(quick, dataset, store)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)  # a reader never sees half a report
    print(f"wrote {out}")
