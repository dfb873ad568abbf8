"""The faults that ordinary use brings, for ``python -m bench.faults`` (issue "Robust under real use").

* runs started at the same instant in a fresh directory, then against the store they made;
* the first store creation hitting a file-size limit (``RLIMIT_FSIZE``), then a normal run;
* a sweep with a diverging and a finishing job; a sweep with an invalid value in its list;
* Hydra-level mistakes (unknown option, wrong type, misspelt key, ``+`` keys, schemas, inf);
* tracking URIs that cannot be used (a text file, an unknown scheme, an HTTP server that is not MLflow);
* ``dlexp-predict`` given a checkpoint of the wrong shapes, inputs of the wrong width, ``--output`` onto
  its own checkpoint.

Each is a real ``dlexp`` process; each records one row in the fault report.
"""
import functools
import http.server
import resource
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from dlexp import checkpoint

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
    for fault in (started_together, store_creation_file_limit, sweeps, mistakes, tracking_uris, predict):
        fault(f)
