"""The tutorials' training protocols the benchmark times, and the data they run on.

Each protocol is a model, a batch size and a learning rate from the
tutorials (the ``conf/experiment/tutorial_*.yaml`` settings), plus how many
training rows one timed epoch uses here: a subset keeps the whole benchmark
to a few minutes, and seconds per epoch are scaled to the tutorials' 50,000
training rows (validation uses a subset of the same fraction, so the scaled
epoch keeps the 5:1 train:validation ratio of a full one).
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from dlexp.config import DatasetConfig, EarlyStoppingConfig, OptimizerConfig, RegularizationConfig
from dlexp.models.da import DAConfig
from dlexp.models.lenet import LeNetConfig
from dlexp.models.logreg import LogRegConfig
from dlexp.models.mlp import MLPConfig
from dlexp.models.rbm import RBMConfig
from dlexp.models.sda import SdAConfig

FULL_TRAIN = 50_000
FULL_VALID = 10_000


@dataclass
class Protocol:
    key: str
    title: str
    model: object
    batch_size: int
    lr: float
    rows: int                 # training rows per timed epoch (scaled to FULL_TRAIN)
    epochs: int = 3           # timed epochs (the first is a warm-up)
    l2: float = 0.0
    patience: int = 10_000
    supervised: bool = True
    layer: int = 0            # pretraining: which layer of the stack
    note: str = ""

    @property
    def valid_rows(self) -> int:
        return max(1, self.rows * FULL_VALID // FULL_TRAIN)

    @property
    def scale(self) -> float:
        """Multiply a timed epoch by this to get a 50,000-row epoch."""
        return (FULL_TRAIN // self.batch_size) / max(1, self.rows // self.batch_size)

    def optimizer(self) -> OptimizerConfig:
        return OptimizerConfig(lr=self.lr, batch_size=self.batch_size)

    def regularization(self) -> RegularizationConfig:
        return RegularizationConfig(l2=self.l2)

    def early_stopping(self) -> EarlyStoppingConfig:
        return EarlyStoppingConfig(name="patience", patience=self.patience)


def protocols(scale: float = 1.0) -> dict:
    """The six protocols; ``scale`` multiplies the rows timed per epoch (--quick uses less)."""
    def rows(n, b):
        return max(b * 4, int(n * scale) // b * b)

    ps = [
        Protocol("logreg", "logreg b600", LogRegConfig(), 600, 0.13, rows(50_000, 600), epochs=8, patience=5000),
        Protocol("mlp", "mlp b20", MLPConfig(hidden_sizes=[500], activation="tanh"), 20, 0.01, rows(20_000, 20),
                 epochs=3, l2=1e-4),
        Protocol("lenet", "lenet b500", LeNetConfig(), 500, 0.1, rows(5_000, 500), epochs=3),
        Protocol("da", "dA b20", DAConfig(n_hidden=500, corruption_level=0.3, pretrain_lr=0.1,
                                          pretrain_batch_size=20), 20, 0.1, rows(10_000, 20), epochs=3,
                 supervised=False),
        Protocol("rbm", "RBM PCD-15 b20", RBMConfig(n_hidden=500, k=15, persistent=True, pretrain_lr=0.1,
                                                     pretrain_batch_size=20), 20, 0.1, rows(2_000, 20), epochs=3,
                 supervised=False),
        Protocol("sda", "SdA layer 0 b1", SdAConfig(hidden_layers_sizes=[1000, 1000, 1000],
                                                    corruption_levels=[0.1, 0.2, 0.3], pretrain_lr=0.001,
                                                    pretrain_batch_size=1), 1, 0.001, rows(2_000, 1), epochs=3,
                 supervised=False, note="tutorial SdA pretraining: batch 1, 784-1000 dA, corruption 0.1"),
    ]
    return {p.key: p for p in ps}


# ------------------------------------------------------------------------ data
class Data:
    """numpy splits (train/valid/test x float32 (N, 784), y int64) and where they came from."""

    def __init__(self, train, valid, test, image_shape, source):
        self.train, self.valid, self.test = train, valid, test
        self.image_shape, self.n_classes, self.source = image_shape, 10, source


class _Split:
    def __init__(self, x, y):
        self.x, self.y = x, y


def load_data(rows: int, valid_rows: int, prefer: str = "fashion_mnist") -> Data:
    """Fashion-MNIST (its first ``rows`` training rows, first ``valid_rows`` validation rows) if it is
    installed, else uniform random pixels and labels of the same shapes."""
    if prefer != "random":
        try:
            from dlexp.data import load_dataset

            ds = load_dataset(DatasetConfig(name=prefer, download=False, max_train=rows, max_valid=valid_rows,
                                            max_test=valid_rows))
            return Data(_Split(ds.train.x, ds.train.y), _Split(ds.valid.x, ds.valid.y),
                        _Split(ds.test.x, ds.test.y), tuple(ds.image_shape), f"{prefer} ({ds.source})")
        except Exception:  # not installed: random data of the same shape
            pass
    rng = np.random.RandomState(0)

    def split(n):
        return _Split(rng.rand(n, 784).astype(np.float32), rng.randint(0, 10, n).astype(np.int64))

    return Data(split(rows), split(valid_rows), split(valid_rows), (1, 28, 28), "random uniform [0,1) 28x28")


def build(protocol: Protocol, data: Data, seed: int = 1234):
    """The dlexp model of the protocol (for pretraining: the whole stack), on the CPU."""
    from dlexp.models import build_model

    torch.manual_seed(seed)
    return build_model(protocol.model, data.image_shape, data.n_classes)


def pretrain_layer(protocol: Protocol, model):
    """The layer a pretraining protocol trains."""
    return model.pretrain_layers()[protocol.layer]


def device_of(name: Optional[str]) -> torch.device:
    from dlexp.data.device import resolve_device

    return resolve_device(name or "cpu")
