"""A sweep's jobs composed once per set of config groups (dlexp/sweep/compose.py) equal Hydra's own
composition, job by job, for grids over values, over config groups, with launcher and sweeper presets."""
import pickle

import pytest
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from dlexp.cli import CONFIG_PATH
from dlexp.sweep import compose

CASES = {
    "values": (["dataset=digits", "optimizer.lr=0.1,0.01"],
               [["optimizer.lr=0.1", "regularization.l2=0"], ["optimizer.lr=0.01", "regularization.l2=1e-4"]]),
    "groups": (["model=mlp,logreg"],
               [["model=mlp", "optimizer.lr=0.1"], ["model=logreg", "optimizer.lr=0.1"],
                ["model=mlp", "optimizer.lr=0.2"]]),
    "preset": (["experiment=grid_lr_lambda", "model=sda", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
               [["experiment=grid_lr_lambda", "model=sda", "optimizer.lr=0.1", "regularization.l2=0.01"],
                ["experiment=grid_lr_lambda", "model=sda", "optimizer.lr=0.001", "regularization.l2=1e-5",
                 "+tracking.tags.who=me", "++tracking.run_name=x"]]),
}


@pytest.fixture
def loader():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        yield GlobalHydra.instance().config_loader()
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_composition_equals_hydras(loader, case):
    command_line, jobs = CASES[case]
    master = loader.load_configuration("config", command_line, RunMode.MULTIRUN)
    expected = [ConfigLoaderImpl.load_sweep_config(loader, master, job) for job in jobs]
    compose.install(loader)
    assert isinstance(loader, compose.FastSweepLoader)
    for job, want in zip(jobs * 2, expected * 2):  # a second time from the cached bases
        got = loader.load_sweep_config(master, job)
        assert OmegaConf.to_container(got) == OmegaConf.to_container(want), job
        assert OmegaConf.is_struct(got) and got.hydra.overrides.task == want.hydra.overrides.task
    assert len(loader._dlexp_bases) == len({tuple(o for o in j if o.split("=")[0] in ("model", "experiment"))
                                            for j in jobs})
    # it travels to a worker without its cache, and still composes there
    copy = pickle.loads(pickle.dumps(loader))
    assert isinstance(copy, compose.FastSweepLoader) and not hasattr(copy, "_dlexp_bases")


def test_what_it_does_not_handle_goes_to_hydra(loader):
    master = loader.load_configuration("config", ["optimizer.lr=0.1,0.2"], RunMode.MULTIRUN)
    compose.install(loader)
    with pytest.raises(Exception, match="nope"):  # Hydra's own error for an unknown key
        loader.load_sweep_config(master, ["optimizer.nope=1"])


def test_a_config_composed_ahead_is_handed_over_once(loader):
    """The sweep's check of every job keeps each job's config for Hydra's own check of it (one composition
    fewer a job): handed over once, the same config Hydra composes, and the next request composes anew."""
    command_line, jobs = CASES["groups"]
    master = loader.load_configuration("config", command_line, RunMode.MULTIRUN)
    want = ConfigLoaderImpl.load_sweep_config(loader, master, jobs[0])
    compose.install(loader)
    ahead = loader.load_sweep_config(master, jobs[0])
    compose.keep(loader, master, jobs[0], ahead)
    assert loader.load_sweep_config(master, jobs[0]) is ahead
    ahead.optimizer.lr = 123.0  # what Hydra's launcher does to its config (job id, number) stays there
    again = loader.load_sweep_config(master, jobs[0])
    assert again is not ahead and OmegaConf.to_container(again) == OmegaConf.to_container(want)
    other = loader.load_configuration("config", ["model=logreg"], RunMode.MULTIRUN)  # another command line
    compose.keep(loader, master, jobs[0], ahead)
    assert loader.load_sweep_config(other, jobs[0]) is not ahead
