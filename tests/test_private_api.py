"""Private APIs of Hydra, submitit, MLflow and torch: each works on the installed versions, and a version
outside the supported ones ends a command in one line naming them, before any work."""
import subprocess
import sys

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from dlexp import private_api


def test_each_guarded_private_api_works_on_the_installed_versions():
    parser = OverridesParser.create()
    jobs = private_api.split_arguments(parser.parse_overrides(["a=1,2", "b=x,y", "c=3"]))
    assert sorted(map(sorted, jobs)) == sorted(sorted([f"a={a}", f"b={b}", "c=3"]) for a in (1, 2) for b in "xy")
    tables, revision = private_api.mlflow_schema()
    assert "runs" in tables and "metrics" in tables and revision
    layer = torch.nn.Linear(2, 1, bias=False)
    with private_api.reparametrize()(layer, {"weight": torch.ones(1, 2)}):
        assert layer(torch.tensor([[2.0, 3.0]])).item() == 5.0
    assert private_api.overrides_dirname(parser.parse_overrides(["a=1", "b=2"]), "=", ",", ["b"]) == "a=1"
    for package in private_api.SUPPORTED:
        private_api.require(package, "anything")  # the versions installed here are supported ones


def test_an_unsupported_hydra_ends_the_command_in_one_line(tmp_path):
    code = ("import sys; from dlexp import private_api; private_api.SUPPORTED['hydra-core'] = '>=1.3,<1.3.1';"
            "sys.argv = ['dlexp', 'dataset=digits']; from dlexp.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("dlexp: error: hydra-core ") and "hydra-core>=1.3,<1.3.1" in lines[0], lines[0]
    assert not (tmp_path / "outputs").exists()  # before any work
