import os
import sys

from dlexp.threads import wait_briefly

wait_briefly()  # as the commands do, before torch loads: the runs tests make in this process wait as theirs do

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from mlflow.tracking import MlflowClient  # noqa: E402

from dlexp import cli  # noqa: E402
from dlexp.cli import CONFIG_PATH  # noqa: E402
from dlexp.config import register_configs  # noqa: E402

register_configs()  # the CLI does it when it starts; tests that compose configs directly need the schemas too

# Tests never look at the user's own data or caches.
os.environ.setdefault("DLEXP_CACHE", "/nonexistent-dlexp-cache")


@pytest.fixture
def compose_cfg():
    """compose_cfg([overrides]) -> the composed DictConfig, as the CLI would see it."""
    def _compose(overrides=()):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """One embedded MLflow store for the session (creating a sqlite store costs ~2 s)."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


@pytest.fixture
def dlexp(tmp_path, monkeypatch, store, request):
    """dlexp(*overrides) runs the CLI in a temp dir and returns the finished MLflow run."""
    monkeypatch.chdir(tmp_path)
    experiment = request.node.name.replace("[", "-").replace("]", "")

    def _run(*overrides):
        argv = ["dlexp", *overrides, f"tracking.uri={store}", f"tracking.experiment={experiment}",
                "trainer.progress=log"]
        monkeypatch.setattr(sys, "argv", argv)
        cli.main()
        client = MlflowClient(store)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0]

    return _run
