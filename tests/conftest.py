import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dlexp.cli import CONFIG_PATH

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
