"""Optional column: Lightning's Trainer on the same model and protocol (only if ``lightning`` is installed)."""
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning as L
except ImportError:  # the older package name
    import pytorch_lightning as L


class _Module(L.LightningModule):
    def __init__(self, model, lr, l2, supervised):
        super().__init__()
        self.model, self.lr, self.l2, self.supervised = model, lr, l2, supervised

    def training_step(self, batch, batch_idx):
        if not self.supervised:
            loss, monitors = self.model.pretrain_loss(batch[0])
            self.log("cost", monitors["cost"])
            return loss
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        if self.l2:
            loss = loss + self.l2 * sum((w ** 2).sum() for w in self.model.weights())
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("valid_error", (self.model(x).argmax(1) != y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class _Timer(L.Callback):
    def __init__(self, clock):
        self.clock, self.epochs, self.t0 = clock(), [], None

    def on_train_epoch_start(self, trainer, module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.epochs.append([time.perf_counter() - self.t0, self.clock.lap()])


def fit(p, model, data, device, clock):
    if p.supervised:
        layer = model
        train = DataLoader(TensorDataset(torch.as_tensor(data.train.x), torch.as_tensor(data.train.y)),
                           batch_size=p.batch_size, shuffle=True)
        valid = DataLoader(TensorDataset(torch.as_tensor(data.valid.x), torch.as_tensor(data.valid.y)),
                           batch_size=p.batch_size)
    else:
        layer = model.pretrain_layers()[p.layer]
        train = DataLoader(TensorDataset(torch.as_tensor(data.train.x)), batch_size=p.batch_size, shuffle=True)
        valid = None
    timer = _Timer(clock)
    trainer = L.Trainer(max_epochs=p.epochs, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0)
    trainer.fit(_Module(layer, p.lr, p.l2, p.supervised), train, valid)
    return timer.epochs
