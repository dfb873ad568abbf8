"""torch's CPU threads spin only briefly while they wait (dlexp/threads.py): set before torch loads, recorded
on the run, and the user's own choice kept. (Its speed is measured by ``python -m bench.contention``.)"""
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient


def test_the_command_module_loads_no_torch():
    """``dlexp`` sets GOMP_SPINCOUNT in main(): torch (and its OpenMP runtime) must not load before."""
    r = subprocess.run([sys.executable, "-c", "import sys, dlexp.cli, dlexp.entry; print('torch' in sys.modules)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]


@pytest.mark.parametrize("user, expected", [({}, "GOMP_SPINCOUNT=3000"),
                                            ({"OMP_WAIT_POLICY": "PASSIVE"}, "OMP_WAIT_POLICY=PASSIVE"),
                                            ({"GOMP_SPINCOUNT": "200000"}, "GOMP_SPINCOUNT=200000")])
def test_run_records_how_its_threads_wait(tmp_path, user, expected):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    r = subprocess.run([sys.executable, "-m", "dlexp.cli", "dataset=digits", "model=logreg", "trainer.max_epochs=1",
                        "trainer.threads=2", f"tracking.uri={store}", "trainer.progress=none"], cwd=tmp_path,
                       env={**env, **user}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    client = MlflowClient(store)
    [run] = [run for e in client.search_experiments() for run in client.search_runs([e.experiment_id])]
    assert run.data.tags["dlexp.cpu_threads"] == f"2 ({expected})"
