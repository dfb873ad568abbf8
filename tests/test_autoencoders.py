"""dA, cA and SdA (dA.py, cA.py, SdA.py) trained on the scikit-learn digits (1797 x 64 pixels in [0, 1])."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from dlexp.models.ca import ContractiveAutoencoder
from dlexp.models.da import DenoisingAutoencoder
from dlexp.models.sda import StackedDenoisingAutoencoder
from dlexp.train.pretrain import fit_layer, pretrain_stack

LR, BATCH, EPOCHS = 0.1, 20, 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """64-unit layers on 20-example batches: a second OpenMP thread only adds sync cost (10x on a busy box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.images.reshape(len(d.images), -1) / 16.0, dtype=torch.float32)
    return x, torch.tensor(d.target)


@pytest.fixture(scope="module")
def trained_das(digits):
    """{(corruption, seed): (dA, history)} after EPOCHS epochs on all digits, n_hidden 64."""
    x, _ = digits
    out = {}
    for seed in (0, 1, 2):
        for c in (0.0, 0.3):
            torch.manual_seed(seed)
            da = DenoisingAutoencoder(64, 64, corruption_level=c)
            out[c, seed] = da, fit_layer(da, x, LR, BATCH, EPOCHS)
    return out


def mean_abs_cosine(filters):
    """Mean |cos| between distinct filters (rows): how alike the learned features are."""
    w = F.normalize(filters.detach(), dim=1)
    cos = (w @ w.T).abs()
    n = len(w)
    return ((cos.sum() - cos.diagonal().sum()) / (n * (n - 1))).item()


# ------------------------------------------------------------------------ dA
def test_da_reconstruction_cost_falls(trained_das):
    for c in (0.0, 0.3):
        costs = [h["cost"] for h in trained_das[c, 0][1]]
        assert len(costs) == EPOCHS
        assert costs[-1] < 0.85 * costs[0], costs
        assert costs[-1] < costs[len(costs) // 2] < costs[0], costs


def test_da_cost_is_cross_entropy_of_reconstruction(digits):
    x = digits[0][:50]
    torch.manual_seed(0)
    da = DenoisingAutoencoder(64, 16)
    loss, monitors = da.pretrain_loss(x)
    z = da.decode(da.encode(x))
    expected = -(x * z.log() + (1 - x) * (1 - z).log()).sum(1).mean()
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert monitors["cost"] == loss.detach()
    a = 4 * (6 / (64 + 16)) ** 0.5
    assert da.filters().shape == (16, 64) and da.W.abs().max() <= a and da.W.abs().max() > 0.9 * a
    assert not da.b.any() and not da.b_prime.any()


def test_masking_noise_zeroes_the_corruption_level_fraction():
    ones = torch.ones(1000, 1000)
    for level in (0.1, 0.3, 0.7):
        torch.manual_seed(0)
        kept = DenoisingAutoencoder(4, 2, corruption_level=level).corrupt(ones)
        assert set(kept.unique().tolist()) <= {0.0, 1.0}
        assert abs((kept == 0).float().mean().item() - level) < 0.005
    x = torch.rand(30, 4)
    assert torch.equal(DenoisingAutoencoder(4, 2, corruption_level=0.0).corrupt(x), x)
    da = DenoisingAutoencoder(4, 2, corruption_level=0.5)
    assert torch.equal(da.decode(da.encode(x)), da.decode(da.encode(x)))  # no corruption: deterministic


def test_corruption_changes_the_learned_filters(trained_das):
    # Denoising filters are more alike one another (higher mean |cos|) and smaller (row norm) than plain
    # autoencoder filters from the same seed and data. Observed 0.108 vs 0.086 and 4.04 vs 4.72 on 3 seeds.
    for seed in (0, 1, 2):
        plain, noisy = trained_das[0.0, seed][0].filters(), trained_das[0.3, seed][0].filters()
        assert mean_abs_cosine(noisy) > 1.1 * mean_abs_cosine(plain)
        assert noisy.norm(dim=1).mean() < 0.95 * plain.norm(dim=1).mean()


# ------------------------------------------------------------------------ cA
def test_ca_penalty_is_the_encoder_jacobian_norm():
    torch.manual_seed(0)
    ca = ContractiveAutoencoder(7, 5, contraction_level=0.5).double()
    with torch.no_grad():
        ca.b.normal_()
    x = torch.rand(4, 7, dtype=torch.float64)
    loss, monitors = ca.pretrain_loss(x)
    jac = [torch.autograd.functional.jacobian(lambda v: ca.encode(v[None])[0], xi) for xi in x]
    assert jac[0].shape == (5, 7)
    expected = torch.stack([j.square().sum() for j in jac]).mean()
    assert torch.allclose(monitors["contraction"], expected, rtol=1e-10)
    assert torch.allclose(loss, monitors["reconstruction"] + 0.5 * expected, rtol=1e-10)


def test_ca_trains_and_the_penalty_contracts(digits):
    x, _ = digits
    histories = {}
    for level in (0.0, 1.0):
        torch.manual_seed(0)
        histories[level] = fit_layer(ContractiveAutoencoder(64, 64, contraction_level=level), x, LR, BATCH, EPOCHS)
    for h in histories.values():
        assert set(h[0]) == {"cost", "reconstruction", "contraction"}
        assert h[-1]["cost"] < 0.9 * h[0]["cost"]
    # observed after 10 epochs: ||J||_F^2 about 46 without the penalty, about 1.9 with contraction_level 1
    assert histories[1.0][-1]["contraction"] < 0.25 * histories[0.0][-1]["contraction"]
    assert histories[1.0][-1]["reconstruction"] > histories[0.0][-1]["reconstruction"]  # the price paid


# ----------------------------------------------------------------------- SdA
@pytest.fixture(scope="module")
def split(digits):
    x, y = digits
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1297]], y[perm[:1297]], x[perm[1297:]], y[perm[1297:]]


@pytest.fixture(scope="module")
def pretrained_sda(split):
    """(SdA before pretraining, the same SdA after 5 pretraining epochs per layer)."""
    torch.manual_seed(0)
    sda = StackedDenoisingAutoencoder(64, 10, hidden_layers_sizes=(100, 100), corruption_levels=(0.1, 0.2))
    before = copy.deepcopy(sda)
    pretrain_stack(sda, split[0], LR, BATCH, epochs=5)
    return before, sda


def test_sda_pretrain_layers_encode_as_forward(split):
    torch.manual_seed(0)
    sda = StackedDenoisingAutoencoder(64, 10, hidden_layers_sizes=(32, 16, 8), corruption_levels=(0.1, 0.2, 0.3))
    assert sda.supervised and len(sda.pretrain_layers()) == 3
    assert [da.corruption_level for da in sda.pretrain_layers()] == [0.1, 0.2, 0.3]
    with torch.no_grad():
        sda.out.weight.normal_()
    seen = []
    sda.out.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = split[0][:40]
    logits = sda(x)
    h = x
    for da in sda.pretrain_layers():
        h = da.encode(h)
    assert logits.shape == (40, 10)
    assert torch.allclose(seen[0], h) and torch.allclose(logits, sda.out(h))


def test_sda_pretraining_trains_the_shared_layers(pretrained_sda):
    before, sda = pretrained_sda
    for layer, old, da in zip(sda.hidden, before.hidden, sda.pretrain_layers()):
        assert da.W is layer.weight and da.b is layer.bias
        assert (layer.weight - old.weight).abs().max() > 1e-2
        assert (layer.bias - old.bias).abs().max() > 1e-3
    assert not sda.out.weight.any()  # pretraining leaves the logistic layer alone
    assert len(list(sda.parameters())) == 2 * 2 + 2 + 2  # W, b per layer; b' per dA; the output layer


def test_sda_fine_tunes_to_low_test_error(pretrained_sda, split):
    x, y, x_test, y_test = split
    sda = copy.deepcopy(pretrained_sda[1])
    opt = torch.optim.SGD(sda.parameters(), lr=0.1)
    for epoch in range(20):
        for i in range(0, len(x), 20):
            loss = F.cross_entropy(sda(x[i:i + 20]), y[i:i + 20])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits = sda(x_test)
    assert logits.shape == (len(x_test), 10)
    error = (logits.argmax(1) != y_test).float().mean().item()
    assert error < 0.08, error  # observed 0.05-0.06 over seeds


def test_sda_state_dict_round_trips(pretrained_sda, split):
    sda = pretrained_sda[1]
    buf = io.BytesIO()
    torch.save(sda.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf)
    assert state["hidden.0.weight"].data_ptr() == state["das.0.W"].data_ptr()
    torch.manual_seed(1)
    fresh = StackedDenoisingAutoencoder(64, 10, hidden_layers_sizes=(100, 100), corruption_levels=(0.1, 0.2))
    fresh.load_state_dict(state)
    x = split[2][:50]
    assert torch.equal(fresh(x), sda(x))
    for a, b in zip(fresh.state_dict().values(), sda.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh.pretrain_layers()[0].W is fresh.hidden[0].weight  # still shared after loading
