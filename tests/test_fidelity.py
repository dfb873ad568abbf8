"""``python -m bench.fidelity``: quick runs land in MLflow, the report is read back from it, a rerun trains nothing.

The quick runs use scikit-learn's digits (always installed); one test uses Fashion-MNIST and skips
without it (``apt-get install dataset-fashion-mnist``).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


def fidelity(*args, timeout=600):
    """Run the script as a user would, from the repository root; the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "bench.fidelity", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def stored(store):
    """{run name: run} of the store's fidelity experiment."""
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("fidelity")
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def summary_row(report: str, protocol: str) -> str:
    """The protocol's line of the summary table."""
    rows = [line for line in report.splitlines() if line.startswith(f"| {protocol} |")]
    assert rows, f"no summary row for {protocol}"
    return rows[0]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick run of logreg, mlp and both dAs on digits, then the same command again."""
    tmp = tmp_path_factory.mktemp("fidelity")
    store, out = f"sqlite:///{tmp}/f.db", tmp / "FIDELITY.md"
    args = ("--quick", "--dataset", "digits", "--models", "logreg,mlp,da", "--store", store, "--out", str(out),
            "--threads", "1")
    first = fidelity(*args)
    runs_after_first = stored(store) if first.returncode == 0 else {}
    report = out.read_text() if out.exists() else ""
    second = fidelity(*args)
    return dict(first=first, second=second, store=store, out=out, report=report, runs=runs_after_first)


def test_quick_runs_every_selected_protocol_once(quick):
    assert quick["first"].returncode == 0, quick["first"].stdout + quick["first"].stderr
    assert sorted(quick["runs"]) == [f"fidelity-quick/{p}/seed1" for p in ("da0", "da30", "logreg", "mlp")]
    assert all(r.info.status == "FINISHED" for r in quick["runs"].values())


def test_report_is_read_back_from_the_store(quick):
    report = quick["report"]
    assert report.startswith("# The tutorials reproduced — QUICK (not the protocol)")
    assert "quick (not the protocol)" in report
    for protocol in ("logreg", "mlp"):
        run = quick["runs"][f"fidelity-quick/{protocol}/seed1"]
        row = summary_row(report, protocol)
        assert row.startswith(f"| {protocol} | 1 |")
        assert f"{100 * run.data.metrics['best/test_error']:.2f} %" in row
        assert f"{100 * run.data.metrics['best/valid_error']:.2f} %" in row
        assert f"`{run.info.run_id}`" in report  # the per-seed table names the run
    for protocol in ("da0", "da30"):
        run = quick["runs"][f"fidelity-quick/{protocol}/seed1"]
        assert f"final cost {run.data.metrics['final/cost']:.2f}" in summary_row(report, protocol)
        link = re.search(rf"\[filters\.png\]\(([^)]*{run.info.run_id}[^)]*)\)", report)
        assert link and (quick["out"].parent / link.group(1)).is_file()  # the filters image, linked
    assert "| lenet | 0 | not run yet |" in report  # unselected protocols are listed, not run
    # the commands it prints run this report's dataset into its store, not Fashion-MNIST into the default one
    assert f"not run yet: `python -m bench.fidelity --dataset digits --store {quick['store']} --models lenet " \
           "--quick`" in report
    commands = [line for line in report.splitlines() if line.startswith("python -m bench.fidelity")]
    assert len(commands) > 5 and all(c.startswith("python -m bench.fidelity --dataset digits ") for c in commands)
    assert f"Add `--store {quick['store']}` to continue this report's runs." in report


def test_a_report_in_the_repository_links_no_image_outside_it(quick):
    """A committed report whose store lies outside the repository names its images instead of linking them."""
    out = REPO / "outputs" / f"fidelity-test-{os.getpid()}" / "FIDELITY.md"
    result = fidelity("--quick", "--dataset", "digits", "--models", "logreg,mlp,da", "--report-only",
                      "--store", quick["store"], "--out", str(out))
    try:
        report = out.read_text() if out.exists() else ""
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report.count("filters.png (in the store)") == 2 and "[filters.png](" not in report  # da0, da30


def test_second_invocation_trains_nothing(quick):
    second = quick["second"]
    assert second.returncode == 0, second.stdout + second.stderr
    assert "4 already FINISHED" in second.stdout and "0 to run" in second.stdout
    assert sorted(stored(quick["store"])) == sorted(quick["runs"])  # same runs, none added


def test_full_protocols_are_never_capped(tmp_path):
    """--dry-run prints the commands: the protocols' own overrides, no epoch or row caps, every seed."""
    result = fidelity("--dry-run", "--models", "logreg,mlp,lenet,sda", "--store", f"sqlite:///{tmp_path}/f.db")
    assert result.returncode == 0, result.stderr
    commands = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("python -m dlexp")]
    seeded = [c for c in commands if "/estimate" not in c]
    assert len(seeded) == 3 + 3 + 2 + 2 and len(commands) == len(seeded) + 1  # seeds + SdA's timing run
    for c in seeded:
        assert "dataset=fashion_mnist" in c and "trainer.resume=auto" in c
        assert not re.search(r"max_epochs|max_train|max_valid|max_test|pretrain_epochs", c), c
    assert not (tmp_path / "f.db").exists()  # nothing ran, no store was made


def test_unknown_protocol_is_one_line(tmp_path):
    result = fidelity("--dry-run", "--models", "nope", "--store", f"sqlite:///{tmp_path}/f.db")
    assert result.returncode == 2 and "unknown protocol 'nope'" in result.stderr


def test_seeds_that_are_not_numbers_are_one_line(tmp_path):
    result = fidelity("--dry-run", "--seeds", "1,x", "--store", f"sqlite:///{tmp_path}/f.db")
    assert result.returncode == 2 and result.stderr.strip() == (
        "bench.fidelity: error: --seeds '1,x': comma-separated whole numbers, e.g. 1,2,3")


def test_a_report_from_a_store_that_is_not_there_is_refused(tmp_path):
    out = tmp_path / "FIDELITY.md"
    result = fidelity("--report-only", "--store", str(tmp_path / "nope.db"), "--out", str(out))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "no store at" in result.stderr and "nope.db" in result.stderr
    assert not out.exists() and not (tmp_path / "nope.db").exists()  # no empty report, no empty store


def test_ctrl_c_stops_the_sitting_and_the_same_command_continues_it(tmp_path):
    """Ctrl-C while a run trains: that run ends (KILLED, state saved, or not begun), no later run starts, the
    bench exits 130 with one line; the same command then finishes every run, continuing rather than adding."""
    store, out = f"sqlite:///{tmp_path}/f.db", tmp_path / "FIDELITY.md"
    args = ("--quick", "--dataset", "digits", "--models", "mlp,da", "--store", store, "--out", str(out),
            "--threads", "1")
    bench = subprocess.Popen([sys.executable, "-m", "bench.fidelity", *args], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    log = tmp_path / "logs" / "fidelity-quick_mlp_seed1.log"
    deadline = time.monotonic() + 300
    while not (log.is_file() and "MLflow run " in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    bench.send_signal(signal.SIGINT)
    stdout, stderr = bench.communicate(timeout=300)
    assert bench.returncode == 130, stdout + stderr
    assert stderr.strip().splitlines()[-1].startswith("stopped: the interrupted run saved its state")
    before = stored(store)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in before.values())  # none left RUNNING
    assert sum(r.info.status == "FINISHED" for r in before.values()) < 3  # the sitting ended at the stop

    again = fidelity(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    after = stored(store)
    assert sorted(after) == [f"fidelity-quick/{p}/seed1" for p in ("da0", "da30", "mlp")]  # one run each
    assert all(r.info.status == "FINISHED" for r in after.values())
    assert all(after[name].info.run_id == run.info.run_id for name, run in before.items())  # continued


@pytest.mark.skipif(not FASHION.exists(), reason="apt-get install dataset-fashion-mnist")
def test_quick_on_fashion_mnist(tmp_path):
    store, out = f"sqlite:///{tmp_path}/f.db", tmp_path / "FIDELITY.md"
    result = fidelity("--quick", "--models", "logreg", "--store", store, "--out", str(out), "--threads", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    run = stored(store)["fidelity-quick/logreg/seed1"]
    assert run.data.params["dataset.name"] == "fashion_mnist" and run.data.params["dataset.max_train"] == "2000"
    assert f"{100 * run.data.metrics['best/test_error']:.2f} %" in summary_row(out.read_text(), "logreg")


MNIST_PKL = Path("~/.cache/dlexp/mnist/mnist.pkl.gz").expanduser()  # where `dlexp-data mnist` puts it


@pytest.mark.skipif(not MNIST_PKL.is_file(), reason=f"no {MNIST_PKL}: run `dlexp-data mnist`")
def test_quick_on_the_tutorials_mnist(tmp_path):
    """The tutorials' own mnist.pkl.gz (found through DLEXP_DATA): a quick logreg whose errors the report shows."""
    store, out = f"sqlite:///{tmp_path}/f.db", tmp_path / "FIDELITY.md"
    env = dict(os.environ, DLEXP_DATA=str(MNIST_PKL.parent))
    result = subprocess.run([sys.executable, "-m", "bench.fidelity", "--quick", "--dataset", "mnist", "--models",
                             "logreg", "--store", store, "--out", str(out), "--threads", "1"], cwd=REPO,
                            env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    run = stored(store)["fidelity-quick/logreg/seed1"]
    assert run.data.params["dataset.name"] == "mnist" and run.data.tags["dlexp.data_source"].endswith("mnist.pkl.gz")
    assert run.data.metrics["best/valid_error"] < 0.4  # 6 steps on 2,000 rows: 29 %, far below chance (90 %)
    assert f"{100 * run.data.metrics['best/test_error']:.2f} %" in summary_row(out.read_text(), "logreg")
