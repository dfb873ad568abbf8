"""Speed options give the same training as the default path (tiny problems, no timing assertions).

``dataset.device_chunk`` (a resident chunk refilled from host memory),
``trainer.compile`` (torch.compile of the step), ``trainer.precision=bf16``
(autocast), the multi-tensor update against ``torch.optim.SGD``, and the CUDA-graph
step where a GPU exists (skipped otherwise).
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlexp.config import DatasetConfig, EarlyStoppingConfig, OptimizerConfig, RegularizationConfig
from dlexp.models.logreg import LogRegConfig
from dlexp.models.mlp import MLPConfig
from dlexp.data import load_dataset
from dlexp.data.device import DeviceSplit, to_device
from dlexp.models import build_model
from dlexp.models.da import DenoisingAutoencoder
from dlexp.models.rbm import RBM
from dlexp.train.metrics import zero_one
from dlexp.train.pretrain import fit_layer, pretrain_stack
from dlexp.train.sgd import fit_sgd
from dlexp.train.loop import LoopOptions
from dlexp.train.step import SGDStep


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DatasetConfig(name="digits"))


def _fit(model, data, shuffle=False, epochs=3, opt=None, reg=None, **kw):
    opt = opt or OptimizerConfig(lr=0.1, batch_size=50, momentum=0.5)
    reg = reg or RegularizationConfig(l2=1e-3)
    options = LoopOptions(shuffle=shuffle, seed=7 if shuffle else None, **kw)
    return fit_sgd(model, data, opt, reg, EarlyStoppingConfig(name="none"), epochs, options)


def _mlp(digits, seed=0):
    torch.manual_seed(seed)
    return build_model(MLPConfig(hidden_sizes=[32]), digits.image_shape, digits.n_classes)


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("chunk", [50, 130, 1000])
def test_device_chunk_trains_like_full_residency(digits, shuffle, chunk):
    full = to_device(digits, torch.device("cpu"))
    chunked = to_device(digits, torch.device("cpu"), chunk=chunk)
    assert full.train.chunk is None and chunked.train.chunk == chunk
    a = _mlp(digits)
    b = copy.deepcopy(a)
    ra = _fit(a, full, shuffle)
    rb = _fit(b, chunked, shuffle)
    assert _max_diff(a, b) == 0.0
    assert ra.best_valid_error == rb.best_valid_error and ra.iterations == rb.iterations


def test_device_chunk_batches_are_the_same_rows(digits):
    full = to_device(digits, torch.device("cpu")).train
    chunked = to_device(digits, torch.device("cpu"), chunk=77).train  # not a multiple of the batch size
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))
    for p in (None, perm):
        got = [(x.clone(), y.clone()) for x, y in chunked.batches(20, p)]
        want = list(full.batches(20, p))
        assert len(got) == len(want) == len(full) // 20
        for (gx, gy), (wx, wy) in zip(got, want):
            assert torch.equal(gx, wx) and torch.equal(gy, wy)


def test_chunk_at_least_the_split_is_full_residency(digits):
    data = to_device(digits, torch.device("cpu"), chunk=10**6)
    assert data.train.chunk is None


def test_pretraining_streams_host_data_like_resident(digits):
    x = torch.as_tensor(digits.train.x[:400])
    torch.manual_seed(3)
    a = DenoisingAutoencoder(64, 16, corruption_level=0.3)
    b = copy.deepcopy(a)
    torch.manual_seed(11)
    ha = fit_layer(a, x, 0.1, 20, 2)
    torch.manual_seed(11)
    hb = fit_layer(b, DeviceSplit(x, None, chunk=60, device=torch.device("cpu")), 0.1, 20, 2)
    assert _max_diff(a, b) == 0.0
    assert ha == hb


def test_pretrain_stack_accepts_a_chunk_and_shuffle():
    from dlexp.models.sda import StackedDenoisingAutoencoder

    x = torch.rand(200, 64)
    torch.manual_seed(0)
    a = StackedDenoisingAutoencoder(64, 10, (16, 8), (0.0, 0.0))
    b = copy.deepcopy(a)
    ha = pretrain_stack(a, x, 0.1, 20, 2, options=LoopOptions(shuffle=True, seed=1))
    hb = pretrain_stack(b, x, 0.1, 20, 2, options=LoopOptions(shuffle=True, seed=1), chunk=40)
    assert _max_diff(a, b) == 0.0 and ha == hb


def test_compile_gives_close_results(digits):
    data = to_device(digits, torch.device("cpu"))
    torch.manual_seed(0)
    a = build_model(LogRegConfig(), data.image_shape, data.n_classes)
    b = copy.deepcopy(a)
    opt = OptimizerConfig(lr=0.1, batch_size=50)
    ra = _fit(a, data, opt=opt, epochs=2)
    rb = _fit(b, data, opt=opt, epochs=2, compile=True)
    assert _max_diff(a, b) < 1e-4
    assert abs(ra.best_valid_error - rb.best_valid_error) <= 0.01


def test_bf16_precision_is_close(digits):
    data = to_device(digits, torch.device("cpu"))
    a = _mlp(digits)
    b = copy.deepcopy(a)
    ra = _fit(a, data, epochs=3)
    rb = _fit(b, data, epochs=3, precision="bf16")
    assert np.isfinite(rb.best_valid_error)
    assert abs(ra.best_valid_error - rb.best_valid_error) <= 0.05
    assert _max_diff(a, b) < 0.1


@pytest.mark.parametrize("momentum,l1,l2", [(0.0, 0.0, 0.0), (0.9, 0.0, 1e-3), (0.5, 1e-3, 1e-3)])
def test_step_matches_torch_optim_sgd(momentum, l1, l2):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    ref = copy.deepcopy(model)
    weights = [model[0].weight, model[2].weight]
    step = SGDStep(model, lambda x, y: F.cross_entropy(model(x), y), list(model.parameters()), weights, lr=0.1,
                   momentum=momentum, l1=l1, l2=l2)
    opt = torch.optim.SGD([{"params": [ref[0].weight, ref[2].weight], "weight_decay": 2 * l2},
                           {"params": [ref[0].bias, ref[2].bias]}], lr=0.1, momentum=momentum)
    losses = []
    for i in range(5):
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        step(x, y)
        loss = F.cross_entropy(ref(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            for w in (ref[0].weight, ref[2].weight):
                w.grad.add_(torch.sign(w), alpha=l1)
        opt.step()
        if i == 2:
            step.set_lr(0.05)
            for g in opt.param_groups:
                g["lr"] = 0.05
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert step.read()["loss"] == pytest.approx(sum(losses), rel=1e-5)


def test_step_leaves_out_parameters_the_loss_does_not_use():
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(4, 2), "unused": torch.nn.Linear(4, 2)})
    before = model["unused"].weight.detach().clone()
    step = SGDStep(model, lambda x, y: F.cross_entropy(model["used"](x), y), list(model.parameters()), [], lr=0.1)
    for _ in range(3):
        step(torch.randn(5, 4), torch.randint(0, 2, (5,)))
    assert torch.equal(model["unused"].weight, before)
    assert len(step.params) == 2


def test_rbm_pretraining_monitors_read_once_an_epoch():
    torch.manual_seed(0)
    rbm = RBM(20, 8, k=2, persistent=True, batch_size=10)
    history = fit_layer(rbm, torch.rand(60, 20).round(), 0.1, 10, 2)
    assert len(history) == 2 and set(history[0]) == {"cost"} and np.isfinite(history[1]["cost"])


def test_zero_one_moves_host_rows_to_the_model():
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(25, 3), torch.randint(0, 2, (25,))
    want = (model(x).argmax(1) != y).double().mean().item()
    assert zero_one(model, x, y, batch_size=7).item() == pytest.approx(want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_step_matches_eager(digits):
    device = torch.device("cuda")
    data = to_device(digits, device)
    a = _mlp(digits).to(device)
    b = copy.deepcopy(a)
    _fit(a, data, cuda_graphs=False)
    _fit(b, data, cuda_graphs=True)
    assert _max_diff(a, b) < 1e-4
    chunked = to_device(digits, device, chunk=130)
    c = _mlp(digits).to(device)
    d = copy.deepcopy(c)
    _fit(c, data, shuffle=True)
    _fit(d, chunked, shuffle=True)
    assert _max_diff(c, d) < 1e-4
