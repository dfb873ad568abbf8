"""RBM and DBN (rbm.py, DBN.py) against hand-derived quantities and on real data (sklearn digits)."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from dlexp.models.dbn import DeepBeliefNetwork
from dlexp.models.rbm import RBM
from dlexp.train.pretrain import encode, fit_layer, pretrain_stack

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These matrices are tiny: one thread is faster and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load(binary: bool):
    """8x8 digits (1797 x 64) in [0, 1], shuffled once, split 1437 train / 360 held out."""
    d = load_digits()
    x = torch.tensor(d.images.reshape(-1, 64) / 16, dtype=torch.float32)
    x = (x > 0.5).float() if binary else x
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], torch.tensor(d.target)[perm]
    return x[:1437], y[:1437], x[1437:], y[1437:]


@pytest.fixture(scope="module")
def digits():
    return load(binary=True)


@pytest.fixture(scope="module")
def grey_digits():
    return load(binary=False)


def tiny_rbm(**kw):
    torch.manual_seed(0)
    rbm = RBM(6, 4, **kw).double()
    with torch.no_grad():  # non-zero biases so every term of the equations is exercised
        rbm.vbias.normal_(0, 0.5)
        rbm.hbias.normal_(0, 0.5)
    return rbm


def test_cd_gradient_is_the_cd_k_update():
    rbm = tiny_rbm(k=3, persistent=False)
    v0 = torch.bernoulli(torch.full((8, 6), 0.5, dtype=torch.float64))
    torch.manual_seed(1)
    loss, _ = rbm.pretrain_loss(v0)
    loss.backward()
    torch.manual_seed(1)  # the same draws: rebuild the chain end v_k by hand
    with torch.no_grad():
        h = torch.bernoulli(torch.sigmoid(v0 @ rbm.W.T + rbm.hbias))
        for _ in range(3):
            vk = torch.bernoulli(torch.sigmoid(h @ rbm.W + rbm.vbias))
            h = torch.bernoulli(torch.sigmoid(vk @ rbm.W.T + rbm.hbias))
        ph0, phk = rbm.propup(v0), rbm.propup(vk)
    # SGD moves theta by -lr * grad = +lr * (positive phase - negative phase)
    torch.testing.assert_close(-rbm.W.grad, (ph0.T @ v0 - phk.T @ vk) / len(v0))
    torch.testing.assert_close(-rbm.vbias.grad, (v0 - vk).mean(0))
    torch.testing.assert_close(-rbm.hbias.grad, (ph0 - phk).mean(0))
    assert not torch.equal(v0, vk)  # the negative phase is not trivially the data


def test_free_energy_matches_brute_force():
    rbm = tiny_rbm()
    v = torch.bernoulli(torch.full((5, 6), 0.5, dtype=torch.float64))
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)  # all 16 h
    # E(v, h) = -b^T v - c^T h - h^T W v, per (v, h) pair
    energy = -(v @ rbm.vbias)[:, None] - (hs @ rbm.hbias)[None, :] - v @ rbm.W.T @ hs.T
    torch.testing.assert_close(rbm.free_energy(v), -torch.logsumexp(-energy, dim=1))


def test_training_lowers_free_energy_of_data(digits):
    x = digits[0]
    torch.manual_seed(0)
    rbm = RBM(64, 64, k=1, persistent=False)
    fit_layer(rbm, x, lr=0.1, batch_size=20, epochs=3)
    with torch.no_grad():
        f_data = rbm.free_energy(x).mean()
        f_noise = rbm.free_energy(torch.bernoulli(torch.full_like(x, 0.5))).mean()
    assert f_data < f_noise - 5, (f_data.item(), f_noise.item())


@pytest.mark.parametrize("device", DEVICES)
def test_pcd_chain_persists_across_minibatches(digits, device):
    x = digits[0][:10].to(device)
    rbm = RBM(64, 16, k=2, persistent=True, batch_size=5).to(device)
    assert torch.equal(rbm.persistent_chain, torch.zeros(5, 16, device=device))  # the tutorial's start
    rbm.pretrain_loss(x[:5])
    start = rbm.persistent_chain.clone()
    assert start.device == x.device and start.any()

    torch.manual_seed(3)
    rbm.pretrain_loss(x[5:])
    torch.manual_seed(3)  # replay call 2 from the buffer left by call 1
    h = start
    for _ in range(2):
        _, _, _, _, _, h = rbm.gibbs_hvh(h)
    assert torch.equal(rbm.persistent_chain, h) and rbm.persistent_chain.device == x.device

    # a short last minibatch advances only its chains; a longer one is refused
    before = rbm.persistent_chain.clone()
    rbm.pretrain_loss(x[:3])
    assert torch.equal(rbm.persistent_chain[3:], before[3:])
    with pytest.raises(ValueError, match="persistent"):
        rbm.pretrain_loss(x)


def test_cd_has_no_persistent_state(digits):
    x = digits[0][:5]
    results = {}
    for persistent in (False, True):
        torch.manual_seed(0)
        rbm = RBM(64, 16, k=1, persistent=persistent, batch_size=5)
        torch.manual_seed(7)
        first = rbm.pretrain_loss(x)[0]
        rbm.pretrain_loss(x)
        torch.manual_seed(7)  # same parameters, same draws: only carried state can change the loss
        results[persistent] = torch.equal(first, rbm.pretrain_loss(x)[0])
    assert results == {False: True, True: False}
    assert RBM(64, 16, persistent=False).persistent_chain is None


def test_pseudo_likelihood_improves_under_pcd(digits):
    torch.manual_seed(0)
    rbm = RBM(64, 64, k=1, persistent=True, batch_size=20)
    history = fit_layer(rbm, digits[0], lr=0.1, batch_size=20, epochs=5)
    costs = [h["cost"] for h in history]
    assert all(c < 0 for c in costs) and costs[-1] > costs[0] + 1, costs
    assert rbm.bit_i == (5 * (1437 // 20)) % 64  # one flipped bit per minibatch, cycling


def test_reconstruction_cost_falls_under_cd(digits):
    torch.manual_seed(0)
    rbm = RBM(64, 64, k=1, persistent=False)
    costs = [h["cost"] for h in fit_layer(rbm, digits[0], lr=0.1, batch_size=20, epochs=4)]
    assert costs[-1] < 0.8 * costs[0], costs
    # the monitor is the binary cross-entropy of the data against the chain's last p(v | h)
    v = digits[0][:4]
    pre = torch.randn(4, 64)
    p = torch.sigmoid(pre)
    expected = -(v * p.log() + (1 - v) * (1 - p).log()).sum(1).mean()
    torch.testing.assert_close(RBM.reconstruction_cost(v, pre), expected)


def test_sample_shape_and_range(digits):
    torch.manual_seed(0)
    rbm = RBM(64, 32, k=1)
    out = rbm.sample(digits[2][:7], n_samples=3, plot_every=5)
    assert out.shape == (3, 7, 64) and not out.requires_grad
    assert out.min() >= 0 and out.max() <= 1
    assert rbm.filters().shape == (32, 64) and rbm.pretrain_layers() == [rbm] and not rbm.supervised


def test_dbn_pretrain_then_finetune(grey_digits):
    x, y, x_test, y_test = grey_digits  # grey levels as p(v = 1), as the tutorial's MNIST
    torch.manual_seed(0)
    dbn = DeepBeliefNetwork(64, 10, hidden_layers_sizes=(100, 100), k=1, batch_size=10)
    assert dbn.supervised and dbn(x[:3]).shape == (3, 10)
    assert [tuple(w.shape) for w in dbn.weights()] == [(100, 64), (100, 100), (10, 100)]
    assert dbn.filters().shape == (100, 64)
    rbms = dbn.pretrain_layers()
    assert len(rbms) == 2 and all(r.W is l.weight for r, l in zip(rbms, dbn.hidden))
    before = [layer.weight.detach().clone() for layer in dbn.hidden]

    histories = pretrain_stack(dbn, x, lr=0.01, batch_size=10, epochs=5)
    assert len(histories) == 2 and all(len(h) == 5 for h in histories)
    assert all(not torch.equal(b, layer.weight) for b, layer in zip(before, dbn.hidden))

    # RBM i's encode is sigmoid layer i's output; stacking them reaches the logistic layer
    with torch.no_grad():
        h = encode(rbms[1], encode(rbms[0], x_test))
        torch.testing.assert_close(dbn.out(h), dbn(x_test))
        torch.testing.assert_close(rbms[0].encode(x_test), torch.sigmoid(dbn.hidden[0](x_test)))

    opt = torch.optim.SGD(dbn.parameters(), lr=0.1)
    for _ in range(40):
        for i in range(0, len(x), 10):
            loss = F.cross_entropy(dbn(x[i:i + 10]), y[i:i + 10])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        error = (dbn(x_test).argmax(1) != y_test).float().mean().item()
    assert error < 0.08, error

    # state_dict round-trip keeps outputs and the RBM / sigmoid-layer sharing
    clone = DeepBeliefNetwork(64, 10, hidden_layers_sizes=(100, 100))
    clone.load_state_dict(dbn.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(x_test), dbn(x_test))
    assert clone.rbms[0].W is clone.hidden[0].weight
    torch.testing.assert_close(clone.rbms[0].vbias, dbn.rbms[0].vbias)
