"""Fault injection against real ``dlexp`` runs: kills, signals, divergence, bad input, hostile files.

    python -m bench.faults                        # --kills 5, writes bench/FAULTS.md (~6 min on 2 cores)
    python -m bench.faults --kills 1 --no-write   # a quick pass, print only

Every run is a ``dlexp`` subprocess in a temp dir with its own sqlite MLflow store
(one experiment per fault kind). The faults:

1. SIGKILL at a random moment (``random.Random(0)``, uniform within the run's span after its first
   state file) of logreg, mlp and rbm on digits, ``--kills`` times each; then ``trainer.resume=<run id>``
   must end FINISHED with bitwise identical parameters and metric histories to one uninterrupted run.
2. SIGTERM once per model: KILLED, state file kept, resumed to identical results.
3. Divergence (mlp, lr=1e20, batch 20): exit 1, one error line, FAILED, ``dlexp.error`` tag, a finite
   best model if one was kept.
4. Bad config values: non-zero exit, one stderr line naming the value, no MLflow run.
5. Malicious pickles (``dlexp-predict``, ``trainer.resume``): refused, the marker file never appears.
6. A truncated and a mismatched state file given to ``trainer.resume``: exit 2, a clear one-line error.
7. The faults of ordinary use (bench/faults_use.py): runs started together on a fresh and an existing
   store, a store creation hitting a file-size limit, a sweep with a diverging job, a sweep with an
   invalid value, Hydra-level mistakes, unusable tracking URIs, bad ``dlexp-predict`` input.
8. Ctrl-C and SIGTERM (bench/faults_stop.py): a run in its start-up, a basic sweep between jobs, joblib,
   submitit and Optuna sweeps mid-training: one line, exit 130, the parent KILLED with its count of finished
   jobs, no process left; the same command with skip_finished / resume=auto then finishes every job.
9. At the end no run in the store may still be RUNNING.

Prints the report (Markdown; also written to --out unless --no-write); exit 0 iff every expectation held.
"""
import argparse
import datetime
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

import numpy as np

from dlexp import safe_pickle as checkpoint

from . import faults_stop, faults_use

COMMON = ["dataset=digits", "trainer.progress=log", "trainer.threads=1"]
MODELS = {  # overrides, the parameters artifact compared after a resume
    "logreg": ("model=logreg optimizer.batch_size=50 trainer.max_epochs=200 trainer.checkpoint_every=10",
               "best_params.pkl"),
    "mlp": ("model=mlp optimizer.batch_size=20 optimizer.momentum=0.5 trainer.shuffle=true trainer.max_epochs=40 "
            "trainer.checkpoint_every=25", "best_params.pkl"),
    "rbm": ("model=rbm model.pretrain_epochs=10 model.n_hidden=100 model.n_chains=2 model.n_samples=2 "
            "trainer.checkpoint_every=25", "pretrained_params.pkl"),
}
BAD = [  # each must fail with one stderr line naming the last key and its value (dataset=digits unless given)
    "optimizer.lr=-1", "optimizer.batch_size=0", "optimizer.batch_size=100000", "model=nope",
    "model=da model.corruption_level=1.5", "model=mlp model.hidden_sizes=[0]", "early_stopping.validation_frequency=0",
    "trainer.checkpoint_every=-1", "trainer.resume=xyz", "trainer.resume=0123456789abcdef0123456789abcdef",
    "trainer.resume=/nonexistent/train_state.pkl", "dataset=mnist dataset.path=/nonexistent",
]

Case = namedtuple("Case", "fault target ok note resumed")  # resumed: identical True/False, None: not resumed


class Evil:
    """Unpickled by plain ``pickle.load``, this creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(nothing on stderr)"


def ended(rc: int) -> str:
    return f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"


class Faults:
    def __init__(self, tmp: Path, kills: int):
        from mlflow.tracking import MlflowClient

        self.tmp, self.kills, self.rng, self.n = tmp, kills, random.Random(0), 0
        self.uri = f"sqlite:///{tmp}/mlflow.db"
        self.client = MlflowClient(self.uri)
        self.client.search_experiments()  # create the store here, not in two runs at once
        self.cases, self.refs, self.spans, self.saved = [], {}, {}, None

    # ---------------------------------------------------------------- running dlexp, reading the store
    def launch(self, args, experiment):
        self.n += 1
        log = self.tmp / "logs" / f"{self.n:03d}"
        log.parent.mkdir(exist_ok=True)
        cmd = ["dlexp", *args, f"tracking.uri={self.uri}", f"tracking.experiment={experiment}",
               f"hydra.run.dir={log}.hydra"]
        with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
            proc = subprocess.Popen(cmd, cwd=self.tmp, stdout=out, stderr=err)
        proc.stderr_path = Path(f"{log}.err")
        return proc

    @staticmethod
    def finish(proc):
        proc.wait(600)
        return proc.returncode, proc.stderr_path.read_text()

    def dlexp(self, args, experiment):
        return self.finish(self.launch(args, experiment))

    @staticmethod
    def args(model):
        return [*MODELS[model][0].split(), *COMMON]

    def artifacts(self, run_id) -> Path:
        return self.tmp / "mlartifacts" / run_id / "artifacts"

    def first_state(self, proc):
        """The first state file the running ``proc`` writes (its run id is in the path), or None if it ended first."""
        before = set(self.tmp.glob("mlartifacts/*/artifacts/state/train_state.pkl"))
        while proc.poll() is None:
            new = set(self.tmp.glob("mlartifacts/*/artifacts/state/train_state.pkl")) - before
            if new:
                return new.pop()
            time.sleep(0.01)
        return None

    def runs(self, experiment) -> list:
        exp = self.client.get_experiment_by_name(experiment)
        return self.client.search_runs([exp.experiment_id]) if exp else []

    def status(self, run_id) -> str:
        return self.client.get_run(run_id).info.status

    def record(self, fault, target, ok, note="", resumed=None):
        note = note.replace(str(self.tmp), "<tmp>")
        self.cases.append(Case(fault, target, bool(ok), note, resumed))
        print(f"  {'ok  ' if ok else 'FAIL'} {fault:<16} {target:<10} {note}", file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- comparing a resumed run to its reference
    def result(self, run_id, model):
        params = checkpoint.load(self.artifacts(run_id) / "checkpoint" / MODELS[model][1])["params"]
        keys = [k for k in self.client.get_run(run_id).data.metrics if "seconds" not in k and "examples_per_s" not in k]
        return ({k: np.asarray(v) for k, v in params.items()},
                {k: sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, k)) for k in keys})

    def differs(self, run_id, model) -> str:
        """'' if the run ended FINISHED, its state file gone, with the reference's results; else what differs."""
        if self.status(run_id) != "FINISHED":
            return f"status {self.status(run_id)} after the resume"
        if (self.artifacts(run_id) / "state" / "train_state.pkl").exists():
            return "state file left after the run finished"
        (p, h), (rp, rh) = self.result(run_id, model), self.result(self.refs[model], model)
        bad = sorted(k for k in set(p) | set(rp) if k not in p or k not in rp or p[k].dtype != rp[k].dtype
                     or p[k].shape != rp[k].shape or p[k].tobytes() != rp[k].tobytes())
        if bad:
            return f"parameters differ: {', '.join(bad)}"
        bad = sorted(k for k in set(h) | set(rh) if h.get(k) != rh.get(k))
        if bad:
            n, rn = len(h.get(bad[0], [])), len(rh.get(bad[0], []))
            return f"metric histories differ: {', '.join(bad)} ({bad[0]}: {n} vs {rn} points)"
        return ""

    # ---------------------------------------------------------------- the faults
    def reference(self, model):
        """One uninterrupted run; how long it keeps a state file is the window kills are drawn from."""
        proc = self.launch(self.args(model), "faults-reference")
        state, start = self.first_state(proc), time.monotonic()
        while state and state.exists() and proc.poll() is None:  # removed when the run finishes
            time.sleep(0.01)
        span = time.monotonic() - start
        rc, err = self.finish(proc)
        if state is None or rc != 0:
            return self.record("reference run", model, False,
                               f"{ended(rc)}, state file seen: {bool(state)}: {last_line(err)}")
        self.refs[model], self.spans[model] = state.parts[-4], span
        print(f"  reference {model}: state file present for {span:.2f} s", file=sys.stderr)

    def interrupt(self, fault, model, delay, sig, expected_status) -> bool:
        """Send ``sig`` ``delay`` s after a run's first state file, then resume it; False if it finished first."""
        experiment = f"faults-{fault.lower()}"
        proc = self.launch(self.args(model), experiment)
        state = self.first_state(proc)
        if state is None:
            rc, err = self.finish(proc)
            self.record(fault, model, False, f"no state file written ({ended(rc)}): {last_line(err)}")
            return True
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            proc.wait(120)
        run_id, rc, note = state.parts[-4], proc.returncode, f"+{delay:.2f} s"
        status, stderr = self.status(run_id), proc.stderr_path.read_text()
        if rc == 0 or status == "FINISHED":
            self.record(fault, model, status == "FINISHED", f"{note}: finished before the {fault}")
            return False
        if "Traceback" in stderr:
            note += f" ({ended(rc)}, a traceback on stderr: {last_line(stderr)})"
        if status != expected_status or not state.exists():
            self.record(fault, model, False, f"{note}: {ended(rc)}, {status}, state file kept: {state.exists()}")
            return True
        if self.saved is None:  # a valid state file for the corrupt-state faults
            self.saved = model, shutil.copy(state, self.tmp / "saved_state.pkl")
        rc, err = self.dlexp([*self.args(model), f"trainer.resume={run_id}"], experiment)
        try:
            why = f"resume exited {rc}: {last_line(err)}" if rc else self.differs(run_id, model)
        except Exception as e:  # a missing artifact, an unreadable checkpoint
            why = f"{type(e).__name__}: {e}"
        self.record(fault, model, not why, f"{note}: {why}" if why else note, resumed=not why)
        return True

    def sigkill(self, model):
        span = self.spans[model]
        for _ in range(self.kills):
            delay = self.rng.uniform(0, span)
            if not self.interrupt("SIGKILL", model, delay, signal.SIGKILL, "RUNNING"):
                span = 0.8 * delay  # it ended before the kill: aim earlier next time

    def sigterm(self, model):
        self.interrupt("SIGTERM", model, self.rng.uniform(0.1, 0.4) * self.spans[model], signal.SIGTERM, "KILLED")

    def diverge(self):
        rc, err = self.dlexp(["model=mlp", *COMMON, "optimizer.lr=1e20", "optimizer.batch_size=20",
                              "early_stopping.validation_frequency=1"], "faults-diverge")
        runs = self.runs("faults-diverge")
        run = runs[0] if len(runs) == 1 else None
        best = run and self.artifacts(run.info.run_id) / "checkpoint" / "best_params.pkl"
        kept = bool(best and best.exists())
        problems = [p for p, bad in [
            (f"exit {rc}", rc != 1),
            ("stderr is not one 'diverged at iteration' line", err.strip().count("\n")
             or not err.startswith("dlexp: error: training diverged at iteration")),
            (f"{len(runs)} runs", run is None),
            (run and f"status {run.info.status}", run and run.info.status != "FAILED"),
            ("no dlexp.error tag", run and "dlexp.error" not in run.data.tags),
            ("best_params.pkl is not finite", kept and not all(
                np.isfinite(np.asarray(v)).all() for v in checkpoint.load(best)["params"].values()))] if bad]
        note = "; ".join(problems) or last_line(err)
        self.record("divergence", "mlp", not problems, f"{note}; best_params.pkl {'finite' if kept else 'absent'}")

    def refused(self, fault, target, args, needles, code=2, marker=None):
        """The run must exit ``code`` with one stderr line holding ``needles``, no traceback, no run, no marker."""
        experiment = f"faults-{fault.replace(' ', '-')}"
        before = len(self.runs(experiment))
        rc, err = self.dlexp(args, experiment)
        lines, created = err.strip().splitlines(), len(self.runs(experiment)) - before
        hits = [line for line in lines if all(n in line for n in needles)]
        one_line = len(lines) == 1
        ok = rc == code and hits and one_line and "Traceback" not in err and not created
        ok = ok and not (marker and marker.exists())
        self.record(fault, target, ok, (hits or [last_line(err)])[0] + ("" if ok else f" [{ended(rc)}, {len(lines)} "
                    f"stderr lines, {created} runs created, marker: {bool(marker and marker.exists())}]"))

    def bad_inputs(self):
        for overrides in BAD:
            args = overrides.split()
            key, value = args[-1].split("=", 1)
            digits = [] if any(a.startswith("dataset=") for a in args) else ["dataset=digits"]
            self.refused("bad input", overrides, digits + args, (key, value), 2)

    def malicious(self):
        marker, evil = self.tmp / "pwned", self.tmp / "evil"
        evil.mkdir()
        (evil / "best_params.pkl").write_bytes(pickle.dumps({"format": "dlexp.params/1", "params": Evil(marker)}))
        (evil / "train_state.pkl").write_bytes(pickle.dumps({"format": "dlexp.state/1", "params": Evil(marker)}))
        r = subprocess.run(["dlexp-predict", str(evil / "best_params.pkl")], cwd=self.tmp, capture_output=True,
                           text=True, timeout=300)
        ok = r.returncode == 2 and "refusing" in r.stderr and "Traceback" not in r.stderr and not marker.exists()
        self.record("malicious pickle", "dlexp-predict", ok, f"{last_line(r.stderr)} [{ended(r.returncode)}, "
                    f"marker: {marker.exists()}]")
        self.refused("malicious pickle", "resume", [*self.args("logreg"), f"trainer.resume={evil / 'train_state.pkl'}"],
                     ["refusing"], marker=marker)

    def corrupt_state(self):
        if self.saved is None:
            return self.record("corrupt state", "-", False, "no interrupted run left a state file to corrupt")
        model, saved = self.saved
        truncated = self.tmp / "truncated" / "train_state.pkl"
        truncated.parent.mkdir()
        truncated.write_bytes(Path(saved).read_bytes()[:Path(saved).stat().st_size // 2])
        self.refused("corrupt state", "truncated", [*self.args(model), f"trainer.resume={truncated}"], ["truncated"])
        self.refused("corrupt state", "other config", [*self.args(model), "optimizer.lr=0.0123",
                                                       f"trainer.resume={saved}"], ["optimizer.lr"])

    def still_running(self) -> int:
        """Runs left RUNNING in any store the faults used."""
        from mlflow.tracking import MlflowClient

        count = 0
        for db in self.tmp.rglob("mlflow.db"):
            client = MlflowClient(f"sqlite:///{db}")
            ids = [e.experiment_id for e in client.search_experiments()]
            count += len(client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=1000)) if ids else 0
        return count


def report(f: Faults, running: int, seconds: float) -> str:
    cases = f.cases
    resumed = [c.resumed for c in cases if c.resumed is not None]
    bad = [c.ok for c in cases if c.fault == "bad input"]
    early = sum("finished before" in c.note for c in cases)
    spans = ", ".join(f"{m} {s:.1f} s" for m, s in f.spans.items())
    out = [
        "# dlexp fault report", "",
        f"`python -m bench.faults --kills {f.kills}` on {datetime.date.today()}, {os.cpu_count()} CPUs, "
        f"{seconds:.0f} s. Uninterrupted reference runs kept a state file for {spans}: kills land at a uniformly "
        "random moment of that window (`random.Random(0)`). An interrupted run must be left RUNNING (SIGKILL) or "
        "KILLED (SIGTERM) with its state file, and `trainer.resume=<run id>` must end it FINISHED with the "
        "reference's parameters and metric histories, bit for bit; SIGKILL/SIGTERM details list when each signal "
        "landed, in seconds after the run's first state file.", "",
        f"- faults injected: **{len(cases)}**",
        f"- runs survived (ended with the expected outcome): **{sum(c.ok for c in cases)}/{len(cases)}**",
        f"- runs resumed to identical results: **{sum(resumed)}/{len(resumed)}** "
        f"({early} finished before the kill landed, not resumed)",
        f"- bad inputs rejected (with a message naming the fault): **{sum(bad)}/{len(bad)}**",
        f"- runs left RUNNING at the end: **{running}**", "",
        "| fault | target | injected | as expected | resumed identical | details |",
        "|---|---|---:|---:|---:|---|",
    ]
    groups = {}
    for c in cases:
        groups.setdefault((c.fault, c.target), []).append(c)
    for (fault, target), group in groups.items():
        res = [c.resumed for c in group if c.resumed is not None]
        details = "; ".join(c.note for c in group).replace("|", "\\|")
        out.append(f"| {fault} | `{target}` | {len(group)} | {sum(c.ok for c in group)} | "
                   f"{f'{sum(res)}/{len(res)}' if res else '-'} | {details} |")
    failed = sum(not c.ok for c in cases) + (running > 0)
    out += ["", f"**{failed} expectation(s) failed.**" if failed else "All expectations held."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=5, help="SIGKILLs per model (default 5)")
    ap.add_argument("--out", default="bench/FAULTS.md", help="where to write the report")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (store, logs) for inspection")
    args = ap.parse_args(argv)
    start, tmp = time.monotonic(), Path(tempfile.mkdtemp(prefix="dlexp-faults-"))
    try:
        f = Faults(tmp, args.kills)
        for model in MODELS:
            f.reference(model)
        for model in f.refs:
            f.sigkill(model)
            f.sigterm(model)
        f.diverge()
        f.bad_inputs()
        f.malicious()
        f.corrupt_state()
        faults_use.run_all(f)
        faults_stop.run_all(f)
        running = f.still_running()
    finally:
        print(f"kept {tmp}" if args.keep else "", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    text = report(f, running, time.monotonic() - start)
    print(text)
    if not args.no_write:
        Path(args.out).write_text(text)
    return 0 if running == 0 and all(c.ok for c in f.cases) else 1


if __name__ == "__main__":
    sys.exit(main())
