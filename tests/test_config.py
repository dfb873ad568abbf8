"""Config composition and validation: bad values fail with one line naming key, value and what is allowed."""
import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from dlexp.config import ConfigError, validate
from dlexp.models.lenet import LeNetConfig
from dlexp.models.mlp import MLPConfig


def test_defaults_compose_and_validate(compose_cfg):
    run = validate(compose_cfg())
    assert run.model.name == "logreg" and run.dataset.name == "mnist"
    assert run.optimizer.lr == 0.13 and run.optimizer.batch_size == 600
    assert run.early_stopping.name == "patience" and run.early_stopping.patience == 5000


@pytest.mark.parametrize("experiment,expect", [
    ("tutorial_mlp", dict(model=MLPConfig, lr=0.01, batch=20, l2=1e-4, patience=10000)),
    ("tutorial_lenet", dict(model=LeNetConfig, lr=0.1, batch=500, l2=0.0, patience=10000)),
])
def test_tutorial_experiments(compose_cfg, experiment, expect):
    run = validate(compose_cfg([f"experiment={experiment}"]))
    assert isinstance(run.model, expect["model"])
    assert (run.optimizer.lr, run.optimizer.batch_size) == (expect["lr"], expect["batch"])
    assert run.regularization.l2 == expect["l2"]
    assert run.early_stopping.patience == expect["patience"]


@pytest.mark.parametrize("model,lr,batch,patience", [
    ("logreg", 0.13, 600, 5000), ("mlp", 0.01, 20, 10000), ("lenet", 0.1, 500, 10000),
    ("sda", 0.1, 20, 10000), ("dbn", 0.1, 10, 20000),
])
def test_each_model_brings_its_tutorials_training_defaults(compose_cfg, model, lr, batch, patience):
    """``model=<x>`` alone trains with its tutorial's lr, batch and patience; the command line still wins."""
    run = validate(compose_cfg([f"model={model}"]))
    assert (run.optimizer.lr, run.optimizer.batch_size, run.early_stopping.patience) == (lr, batch, patience)
    run = validate(compose_cfg([f"model={model}", "optimizer.lr=0.05", "early_stopping.patience=7"]))
    assert (run.optimizer.lr, run.optimizer.batch_size, run.early_stopping.patience) == (0.05, batch, 7)


def test_command_line_beats_experiment(compose_cfg):
    run = validate(compose_cfg(["experiment=tutorial_mlp", "dataset=digits", "optimizer.lr=0.05"]))
    assert run.dataset.name == "digits" and run.optimizer.lr == 0.05 and run.model.name == "mlp"


@pytest.mark.parametrize("override,key,allowed", [
    ("optimizer.lr=-1", "optimizer.lr=-1.0", "> 0"),
    ("optimizer.lr=0", "optimizer.lr=0.0", "> 0"),
    ("optimizer.batch_size=0", "optimizer.batch_size=0", ">= 1"),
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5", "[0, 1)"),
    ("optimizer.schedule=cosine", "optimizer.schedule='cosine'", "constant, inverse, plateau"),
    ("regularization.l2=-0.1", "regularization.l2=-0.1", ">= 0"),
    ("early_stopping.patience=0", "early_stopping.patience=0", ">= 1"),
    ("early_stopping.improvement_threshold=1.5", "early_stopping.improvement_threshold=1.5", "(0, 1]"),
    ("trainer.device=gpu", "trainer.device='gpu'", "cuda:N"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0", ">= 1"),
    ("model=mlp model.activation=softplus", "model.activation='softplus'", "tanh, sigmoid, relu"),
    ("model=mlp model.hidden_sizes=[]", "model.hidden_sizes=[]", "at least one"),
    ("model=lenet model.nkerns=[20,0]", "model.nkerns=[20, 0]", ">= 1"),
    ("dataset.max_train=0", "dataset.max_train=0", ">= 1"),
])
def test_bad_values_fail_with_one_line(compose_cfg, override, key, allowed):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(override.split()))
    msg = str(e.value)
    assert "\n" not in msg and key in msg and allowed in msg


@pytest.mark.parametrize("override", ["model=resnet", "optimizer.lr=abc", "optimizer.batch_size=1.5",
                                      "dataset=cifar"])
def test_hydra_rejects_unknown_groups_and_types(compose_cfg, override):
    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose_cfg([override])
