"""The loop a user would write: DataLoader + the same nn.Module + torch.optim.SGD.

This is the reference dlexp is compared with: the same model object, the
same minibatch size, learning rate, penalty and once-an-epoch validation as
the tutorial protocol, written the way PyTorch's tutorials teach --
``DataLoader(TensorDataset(x, y), batch_size=b, shuffle=True)``, ``zero_grad``
/ ``backward`` / ``step`` and a running loss read with ``.item()``.
"""
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def supervised_epochs(model, train, valid, batch_size, lr, l2, epochs, on_epoch, device="cpu"):
    """Train ``epochs`` epochs of minibatch SGD; ``on_epoch(seconds)`` after each."""
    model.to(device)
    x, y = torch.as_tensor(train.x), torch.as_tensor(train.y)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    valid_loader = DataLoader(TensorDataset(torch.as_tensor(valid.x), torch.as_tensor(valid.y)),
                              batch_size=batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        running_loss = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            if l2:
                loss = loss + l2 * sum((w ** 2).sum() for w in model.weights())
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        model.eval()
        wrong = 0
        with torch.no_grad():
            for xb, yb in valid_loader:
                xb, yb = xb.to(device), yb.to(device)
                wrong += (model(xb).argmax(1) != yb).sum().item()
        on_epoch(time.perf_counter() - start, {"train_loss": running_loss / len(loader),
                                               "valid_error": wrong / len(valid_loader.dataset)})


def pretrain_epochs(layer, train, batch_size, lr, epochs, on_epoch, device="cpu"):
    """Unsupervised SGD on ``layer.pretrain_loss`` (the same layer dlexp pretrains)."""
    layer.to(device)
    loader = DataLoader(TensorDataset(torch.as_tensor(train.x)), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr)
    for epoch in range(epochs):
        start = time.perf_counter()
        running_cost = 0.0
        for (xb,) in loader:
            xb = xb.to(device)
            optimizer.zero_grad()
            loss, monitors = layer.pretrain_loss(xb)
            loss.backward()
            optimizer.step()
            running_cost += monitors["cost"].item()
        on_epoch(time.perf_counter() - start, {"cost": running_cost / len(loader)})
