"""The faults that ordinary use brings, for ``python -m bench.faults`` (issue "Robust under real use").

* runs started at the same instant in a fresh directory, then against the store they made;
* the first store creation hitting a file-size limit (``RLIMIT_FSIZE``), then a normal run;
* a sweep with a diverging and a finishing job; a sweep with an invalid value in its list;
* Hydra-level mistakes (unknown option, wrong type, misspelt key, ``+`` keys, schemas, inf);
* tracking URIs that cannot be used (a text file, an unknown scheme, an HTTP server that is not MLflow);
* ``dlexp-predict`` given a checkpoint of the wrong shapes, inputs of the wrong width, ``--output`` onto
  its own checkpoint;
* (issue 22) ``dlexp-sweep table/compare --output`` onto the store, its files, its artifacts or an existing
  file; a child run's table; FIFOs and a dangling symlink as checkpoint, inputs or store; MLflow's limits,
  reserved tags and registry URIs that are not there; read-only commands on a 0-byte or foreign store; the
  temp file of a killed store creation.

Each is a real ``dlexp`` process; each records one row in the fault report.
"""
import functools
import http.server
import os
import resource
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from dlexp import safe_pickle as checkpoint

RUN = ["dataset=digits", "trainer.max_epochs=2", "trainer.progress=log", "trainer.threads=1"]
MISTAKES = [  # overrides (dataset=digits first), what the one line must hold
    (["optimizer.lr=abc"], ["optimizer.lr=abc", "Float"]),
    (["optimizer.lrr=1"], ["optimizer.lrr", "not a key"]),
    (["+optimizer.foo=1"], ["optimizer.foo", "not a key"]),
    (["model=_schema_mlp"], ["model=_schema_mlp"]),
    (["optimizer.lr=inf"], ["optimizer.lr=inf", "finite"]),
    (["optimizer.lr=1e400"], ["optimizer.lr=inf", "finite"]),
    (["dataset=mnist", "dataset.path=/dev/zero"], ["/dev/zero", "not a regular file"]),
    (["dataset.path=/tmp"], ["dataset.path", "digits"]),
]


def _cli(cwd, *args, **kw):
    return subprocess.run([sys.executable, "-m", "dlexp.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, **kw)


def _errors(stderr: str, prog: str = "dlexp") -> list:
    return [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]


def _one_line(r, code, needles, prog="dlexp"):
    """('' if ``r`` ended with ``code`` and exactly one error line holding ``needles``, else what differs, line)."""
    errors = _errors(r.stderr, prog)
    line = errors[0] if errors else (r.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
    wrong = [w for w, bad in [(f"exit {r.returncode}", r.returncode != code),
                              (f"{len(errors)} error lines", len(errors) != 1),
                              ("a traceback", "Traceback" in r.stderr),
                              ("the line does not name the fault", not all(n in line for n in needles))] if bad]
    return "; ".join(wrong), line


def _store_runs(db: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def started_together(f, n: int = 6):
    """N runs at one instant in a fresh directory (default store), then N more against that store."""
    cwd = f.tmp / "together"
    cwd.mkdir()
    for round_ in ("fresh store", "existing store"):
        procs = [subprocess.Popen([sys.executable, "-m", "dlexp.cli", *RUN, f"trainer.seed={i}"], cwd=cwd,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(n)]
        codes = [p.wait(600) for p in procs]
        db = cwd / "outputs" / "mlflow.db"
        runs = _store_runs(db) if db.exists() else []
        dirs = {r.data.tags.get("dlexp.output_dir") for r in runs}
        intact = all(checkpoint.load(Path(d) / "best_params.pkl")["params"] for d in dirs if d)
        with sqlite3.connect(db) as con:
            integrity = con.execute("pragma integrity_check").fetchone()[0]
        finished = sum(r.info.status == "FINISHED" for r in runs)
        ok = codes == [0] * n and finished == len(runs) == len(dirs) and intact and integrity == "ok"
        f.record("started together", round_, ok, f"{n} at once: exits {sorted(set(codes))}, {finished}/{len(runs)} "
                 f"runs FINISHED, {len(dirs)} run directories, checkpoints intact: {intact}, integrity {integrity}")


def store_creation_file_limit(f):
    """A store creation killed by RLIMIT_FSIZE leaves no half-built store; the next run finishes."""
    cwd = f.tmp / "fsize"
    cwd.mkdir()
    limit = 256 << 10
    r = _cli(cwd, *RUN, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    wrong, line = _one_line(r, 1, ["File too large"])
    db = cwd / "outputs" / "mlflow.db"
    left = db.exists() and db.stat().st_size > 0
    again = _cli(cwd, *RUN)
    ok = not wrong and not left and again.returncode == 0
    f.record("store file limit", "RLIMIT_FSIZE 256K", ok, f"{line} [{wrong or 'one line'}; half-built store left: "
             f"{left}; next run exit {again.returncode}]")


def sweeps(f):
    """A diverging job does not end the sweep; an invalid value in a list is refused before any job."""
    cwd, db = f.tmp / "sweeps", f.tmp / "sweeps" / "mlflow.db"
    cwd.mkdir()
    r = _cli(cwd, "-m", *RUN, "model=mlp", "optimizer.lr=1e30,0.1", f"tracking.uri=sqlite:///{db}")
    children = [c for c in _store_runs(db) if "mlflow.parentRunId" in c.data.tags]
    statuses = sorted(c.info.status for c in children)
    ok = r.returncode == 0 and statuses == ["FAILED", "FINISHED"] and len(_errors(r.stderr)) == 1
    f.record("sweep goes on", "lr=1e30,0.1", ok, f"exit {r.returncode}, children {statuses}: "
             f"{(_errors(r.stderr) or ['no error line'])[0]}")
    before = len(_store_runs(db))
    r = _cli(cwd, "-m", *RUN, "model=mlp", "optimizer.lr=0.1,-1", f"tracking.uri=sqlite:///{db}")
    wrong, line = _one_line(r, 2, ["optimizer.lr=-1"])
    created = len(_store_runs(db)) - before
    f.record("sweep refused", "lr=0.1,-1", not wrong and not created, f"{line} [{wrong or 'one line'}; "
             f"{created} runs created]")


def mistakes(f):
    for overrides, needles in MISTAKES:
        r = _cli(f.tmp, "dataset=digits", *overrides, "trainer.progress=log", "tracking=none")
        wrong, line = _one_line(r, 2, needles)
        f.record("mistake", " ".join(overrides), not wrong, f"{line}{f' [{wrong}]' if wrong else ''}")


class _NotMlflow(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def tracking_uris(f):
    text = f.tmp / "notes.db"
    text.write_text("not a database\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_NotMlflow, directory=str(f.tmp / "logs")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cases = [(f"sqlite:///{text}", ["not an SQLite database"]), ("foo://x", ["foo://"]),
                 (f"http://127.0.0.1:{server.server_port}", ["not an MLflow"])]
        for uri, needles in cases:
            r = _cli(f.tmp, *RUN, f"tracking.uri={uri}")
            wrong, line = _one_line(r, 2, needles)
            wrong = wrong or ("the file changed" if text.read_text() != "not a database\n" else "")
            f.record("tracking uri", uri.replace(str(f.tmp), "<tmp>").split(":")[0] + ":...", not wrong,
                     f"{line}{f' [{wrong}]' if wrong else ''}")
    finally:
        server.shutdown()


def predict(f):
    cwd = f.tmp / "predict"
    cwd.mkdir()
    assert _cli(cwd, *RUN, "tracking=none").returncode == 0
    good = next(cwd.glob("outputs/runs/*/*/best_params.pkl"))
    ckpt = checkpoint.load(good)
    ckpt["params"]["linear.weight"] = np.zeros((10, 65), np.float32)
    checkpoint.save(cwd / "shape.pkl", ckpt)
    np.save(cwd / "wide.npy", np.zeros((3, 63), np.float32))
    before = good.read_bytes()
    cases = [([str(cwd / "shape.pkl")], ["linear.weight", "(10, 64)"], "wrong shapes"),
             ([str(good), "--inputs", str(cwd / "wide.npy")], ["wide.npy", "64"], "inputs of the wrong width"),
             ([str(good), "--inputs", str(cwd / "wide.npy"), "--output", str(good)], ["checkpoint"],
              "--output onto its checkpoint")]
    for args, needles, what in cases:
        r = subprocess.run([sys.executable, "-m", "dlexp.predict", *args], cwd=cwd, capture_output=True, text=True,
                           timeout=300)
        wrong, line = _one_line(r, 2, needles, prog="dlexp-predict")
        wrong = wrong or ("the checkpoint changed" if good.read_bytes() != before else "")
        f.record("predict", what, not wrong, f"{line.replace(str(cwd), '<tmp>')}{f' [{wrong}]' if wrong else ''}")


def run_all(f):
    for fault in (started_together, store_creation_file_limit, sweeps, mistakes, tracking_uris, predict, *ISSUE_22):
        fault(f)


# ------------------------------------------------- issue 22: nothing lost, third round
def _sweep_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dlexp.sweep", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _sweep_store(f):
    """(the store of the ``sweeps`` case, its directory, its sweep's parent run, one of its children)."""
    cwd, db = f.tmp / "sweeps", f.tmp / "sweeps" / "mlflow.db"
    runs = _store_runs(db)
    parent = next(r for r in runs if "dlexp.sweep_id" in r.data.tags)
    child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    return db, cwd, parent.info.run_id, child.info.run_id


def output_guard(f):
    """``dlexp-sweep table/compare --output`` onto the store, its -wal / .lock files, its artifact root or an
    existing file: one line, exit 2, every run still there, the file unchanged."""
    db, cwd, parent, child = _sweep_store(f)
    notes = cwd / "notes.txt"
    notes.write_text("the user's notes\n")
    n = len(_store_runs(db))
    for cmd, target in (("table", db), ("table", f"{db}-wal"), ("compare", f"{db}.lock"),
                        ("table", cwd / "mlartifacts" / "t.txt"), ("compare", notes)):
        refs = [parent, parent] if cmd == "compare" else [parent]
        r = _sweep_cli(cmd, *refs, "--output", target, "--tracking-uri", f"sqlite:///{db}")
        wrong, line = _one_line(r, 2, ["--output", "refusing"], prog="dlexp-sweep")
        lost = len(_store_runs(db)) != n or notes.read_text() != "the user's notes\n"
        wrong = wrong or ("runs or the file lost" if lost else "")
        f.record("--output guard", f"{cmd} --output {Path(target).name}", not wrong,
                 f"{line.replace(str(f.tmp), '<tmp>')}{f' [{wrong}]' if wrong else ''}")
    r = _sweep_cli("table", child, "--tracking-uri", f"sqlite:///{db}")
    wrong, line = _one_line(r, 2, ["child run", parent], prog="dlexp-sweep")
    f.record("sweep table", "a child run", not wrong, f"{line}{f' [{wrong}]' if wrong else ''}")


def special_files(f):
    """A FIFO as a checkpoint, as ``--inputs`` or as the store, and a dangling symlink as the store: one line
    each, never opened (a FIFO would be waited on forever)."""
    cwd = f.tmp / "special"
    cwd.mkdir()
    fifo, link = cwd / "pipe", cwd / "link.db"
    os.mkfifo(fifo)
    link.symlink_to(cwd / "nowhere" / "x.db")
    good = next((f.tmp / "predict").glob("outputs/runs/*/*/best_params.pkl"))
    cases = [("dlexp-predict", [sys.executable, "-m", "dlexp.predict", fifo], "checkpoint FIFO"),
             ("dlexp-predict", [sys.executable, "-m", "dlexp.predict", good, "--inputs", fifo], "--inputs FIFO"),
             ("dlexp", [sys.executable, "-m", "dlexp.cli", *RUN, f"tracking.uri=sqlite:///{fifo}"], "store FIFO"),
             ("dlexp", [sys.executable, "-m", "dlexp.cli", *RUN, f"tracking.uri=sqlite:///{link}"], "dangling store")]
    for prog, argv, what in cases:
        try:
            r = subprocess.run(list(map(str, argv)), cwd=cwd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            f.record("special file", what, False, "still waiting after 120 s")
            continue
        wrong, line = _one_line(r, 2, ["not a regular file" if "FIFO" in what else "symlink to nothing"], prog)
        wrong = wrong or ("something created" if sorted(p.name for p in cwd.iterdir()) != ["link.db", "pipe"] else "")
        f.record("special file", what, not wrong, f"{line.replace(str(cwd), '<tmp>')}{f' [{wrong}]' if wrong else ''}")


STORE_MISTAKES = [  # overrides, what the one line must hold (issue 22: they exited 1 as "<ExceptionType>: ...")
    (["model=sda", "model.pretrained_from=models:/no-such-model/99"], ["no registered model 'no-such-model'"]),
    (["model=sda", "model.pretrained_from=runs:/0123456789abcdef0123456789abcdef/model"], ["no run 0123456789"]),
    (["tracking.experiment=" + "x" * 10000], ["tracking.experiment", "at most 500"]),
    (["++tracking.tags={" + "k" * 300 + ": v}"], ["tracking.tags", "at most 236"]),
    (["++tracking.tags={mlflow.runName: x}"], ["mlflow.runName"]),
    (["tracking.register_as=\"it's\""], ["tracking.register_as"]),
    (["tracking=none", "trainer.skip_finished=true"], ["trainer.skip_finished", "tracking=none"]),
]


def store_mistakes(f):
    """MLflow's limits, reserved tags, registry URIs that are not there, tracking=none with skip_finished:
    one line, exit 2, no run in the store, no run directory."""
    db = f.tmp / "sweeps" / "mlflow.db"
    cwd = f.tmp / "mistakes22"
    cwd.mkdir()
    n = len(_store_runs(db))
    for overrides, needles in STORE_MISTAKES:
        r = _cli(cwd, *RUN, f"tracking.uri=sqlite:///{db}", *overrides)
        wrong, line = _one_line(r, 2, needles)
        made = len(_store_runs(db)) - n or list(cwd.iterdir())
        wrong = wrong or (f"created {made}" if made else "")
        f.record("mistake", " ".join(overrides)[:60], not wrong, f"{line[:300]}{f' [{wrong}]' if wrong else ''}")


def read_only_stores(f):
    """``dlexp-sweep list`` and ``dlexp-predict <run id>`` on a 0-byte store and on another program's sqlite
    file: one line, exit 2, the file byte for byte as it was (never built or migrated by a reader)."""
    cwd = f.tmp / "readonly"
    cwd.mkdir()
    (cwd / "empty.db").write_bytes(b"")
    with sqlite3.connect(cwd / "other.db") as con:
        con.execute("create table notes (text)")
    for name in ("empty.db", "other.db"):
        before = (cwd / name).read_bytes()
        for argv in (["-m", "dlexp.sweep", "list"], ["-m", "dlexp.predict", "0123456789abcdef0123456789abcdef"]):
            r = subprocess.run([sys.executable, *argv, "--tracking-uri", f"sqlite:///{cwd / name}"], cwd=cwd,
                               capture_output=True, text=True, timeout=300)
            wrong, line = _one_line(r, 2, ["only reads a store"], "dlexp-sweep" if "list" in argv else "dlexp-predict")
            wrong = wrong or ("the file changed" if (cwd / name).read_bytes() != before else "")
            f.record("read-only store", f"{argv[1]} {name}", not wrong,
                     f"{line.replace(str(cwd), '<tmp>')}{f' [{wrong}]' if wrong else ''}")


def killed_store_creation(f):
    """The temp file of a store creation that was SIGKILLed is removed by the next creation."""
    cwd = f.tmp / "killed-creation"
    (cwd / "outputs").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    tmp = cwd / "outputs" / f".mlflow.db.{dead.pid}-0123abcd.tmp"
    tmp.write_bytes(b"SQLite format 3\x00 half-built")
    r = _cli(cwd, *RUN)
    ok = r.returncode == 0 and not tmp.exists()
    f.record("store creation killed", "temp file left", ok, f"next run exit {r.returncode}, temp file left: "
             f"{tmp.exists()}")


ISSUE_22 = (output_guard, special_files, store_mistakes, read_only_stores, killed_store_creation)
