"""The resumable loop shared by fine-tuning and pretraining: options reach both phases."""
import torch

from dlexp.models.da import DenoisingAutoencoder
from dlexp.train.loop import LoopOptions
from dlexp.train.pretrain import fit_layer


def _da_costs(x, options):
    torch.manual_seed(0)
    return [h["cost"] for h in fit_layer(DenoisingAutoencoder(64, 16), x, 0.1, 20, 3, options=options)]


def test_pretraining_shuffles_when_asked():
    x = torch.rand(200, 64)
    plain = _da_costs(x, LoopOptions())
    shuffled = _da_costs(x, LoopOptions(shuffle=True, seed=3))
    assert shuffled != plain and shuffled == _da_costs(x, LoopOptions(shuffle=True, seed=3))


def test_cli_pretraining_honours_trainer_shuffle(dlexp):
    """`trainer.shuffle=true` used to reach fine-tuning only: pretraining ignored it."""
    base = ("model=da", "dataset=digits", "model.n_hidden=32", "model.pretrain_epochs=2")
    plain = dlexp(*base).data.metrics["final/cost"]
    shuffled = dlexp(*base, "trainer.shuffle=true").data.metrics["final/cost"]
    assert shuffled != plain
    assert dlexp(*base, "trainer.shuffle=true").data.metrics["final/cost"] == shuffled
