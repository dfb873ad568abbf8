"""Closed-form steps (Model.closed_form, dlexp.train.fused) train exactly like the autograd step.

For every model with a closed form: the same start, the same minibatches and the same random draws,
N steps with the closed form and N with autograd -> the same losses (monitors) step by step and the
same parameters, to float rounding; with the L1/L2 penalties and momentum; and the pieces around it
(unused parameters, resume state, the CPU Bernoulli sampler, when the fast path is taken).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from dlexp.models.ca import ContractiveAutoencoder
from dlexp.models.da import DenoisingAutoencoder
from dlexp.models.dbn import DeepBeliefNetwork
from dlexp.models.lenet import LeNet
from dlexp.models.logreg import LogisticRegression
from dlexp.models.mlp import MLP
from dlexp.models.rbm import RBM, bernoulli
from dlexp.models.sda import StackedDenoisingAutoencoder
from dlexp.train import fused
from dlexp.train.pretrain import encode
from dlexp.train.step import SGDStep

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(n_rows, n_in, seed=0, binary=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_rows, n_in, generator=g)
    if binary:
        x = x.round()
    return x.to(device), torch.randint(0, 10, (n_rows,), generator=g).to(device)


def _step(module, objective, closed, lr=0.1, momentum=0.0, l1=0.0, l2=0.0, weights=None, params=None):
    if objective == "nll":
        loss_fn = lambda xb, yb: F.cross_entropy(module(xb), yb)  # noqa: E731  (sgd.py's loss)
    else:
        loss_fn = lambda xb, yb: module.pretrain_loss(xb)  # noqa: E731  (pretrain.py's loss)
    params = list(module.parameters()) if params is None else params
    weights = module.weights() if weights is None else weights
    return SGDStep(module, loss_fn, params, weights, lr=lr, momentum=momentum, l1=l1, l2=l2,
                   objective=objective, closed_form=closed, functional=objective == "nll")


def _run(module, objective, closed, x, y, batch, steps, seed=5, lr_change=None, **kw):
    """Train ``steps`` minibatches (cycling over x); the monitors of every step and the final step."""
    step = _step(module, objective, closed, **kw)
    assert (step.closed is not None) == closed
    torch.manual_seed(seed)
    history = []
    for i in range(steps):
        j = (i * batch) % (len(x) - batch + 1)
        step(x[j:j + batch], None if objective == "pretrain" else y[j:j + batch])
        history.append(step.read())
        if lr_change is not None and i == steps // 2:
            step.set_lr(lr_change)
    return history, step


def _compare(a, b, objective, x, y, batch=20, steps=12, rtol=1e-4, atol=1e-5, **kw):
    """a trained by the closed form, b (a copy) by autograd: same monitors, same parameters and buffers."""
    ha, sa = _run(a, objective, True, x, y, batch, steps, **kw)
    hb, sb = _run(b, objective, False, x, y, batch, steps, **kw)
    assert [list(h) for h in ha] == [list(h) for h in hb]
    for i, (ma, mb) in enumerate(zip(ha, hb)):
        for k in ma:
            assert ma[k] == pytest.approx(mb[k], rel=rtol, abs=atol), (i, k, ma, mb)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    names_a = {id(p): n for n, p in a.named_parameters()}
    names_b = {id(p): n for n, p in b.named_parameters()}
    assert [names_a[id(p)] for p in sa.params] == [names_b[id(p)] for p in sb.params]  # the same, in order
    for ba, bb in zip(sa.bufs, sb.bufs):
        torch.testing.assert_close(ba, bb, rtol=rtol, atol=atol)
    return ha, sa


RULES = [dict(), dict(l2=1e-3), dict(l1=1e-3, l2=1e-4), dict(momentum=0.9, l2=1e-3), dict(momentum=0.5, l1=1e-3)]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: ",".join(f"{k}={v}" for k, v in r.items()) or "plain")
def test_logreg(rule):
    torch.manual_seed(0)
    a = LogisticRegression(64, 10)
    with torch.no_grad():  # not zero, so every term of the update is exercised from the first step
        a.linear.weight.normal_(0, 0.1)
        a.linear.bias.normal_(0, 0.1)
    x, y = _data(300, 64)
    _compare(a, copy.deepcopy(a), "nll", x, y, batch=60, lr_change=0.05, **rule)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("rule", RULES[:2] + RULES[3:], ids=["plain", "l2", "momentum-l2", "momentum-l1"])
def test_mlp(activation, rule):
    torch.manual_seed(0)
    a = MLP(64, 10, (32, 16), activation)
    x, y = _data(200, 64)
    _compare(a, copy.deepcopy(a), "nll", x, y, **rule)


def test_mlp_batch_of_one_and_a_short_last_batch():
    torch.manual_seed(0)
    a = MLP(30, 10, (20,), "tanh")
    x, y = _data(50, 30)
    _compare(a, copy.deepcopy(a), "nll", x, y, batch=1, steps=20, l2=1e-3)
    _compare(a, copy.deepcopy(a), "nll", x[:7], y[:7], batch=7, steps=3)


@pytest.mark.parametrize("corruption", [0.0, 0.3])
@pytest.mark.parametrize("rule", [dict(), dict(momentum=0.9, l2=1e-3)], ids=["plain", "momentum-l2"])
def test_da(corruption, rule):
    torch.manual_seed(0)
    a = DenoisingAutoencoder(64, 24, corruption)
    x, _ = _data(200, 64)
    _compare(a, copy.deepcopy(a), "pretrain", x, None, **rule)


def test_da_batch_of_one():
    torch.manual_seed(0)
    a = DenoisingAutoencoder(40, 30, 0.1)
    x, _ = _data(60, 40)
    _compare(a, copy.deepcopy(a), "pretrain", x, None, batch=1, steps=30, lr=0.01)


@pytest.mark.parametrize("contraction", [0.0, 0.1, 1.0])
def test_ca(contraction):
    torch.manual_seed(0)
    a = ContractiveAutoencoder(64, 24, contraction)
    x, _ = _data(200, 64)
    history, _ = _compare(a, copy.deepcopy(a), "pretrain", x, None, lr=0.05)
    assert set(history[0]) == {"cost", "reconstruction", "contraction"}


@pytest.mark.parametrize("persistent,k", [(False, 1), (False, 3), (True, 1), (True, 15)])
def test_rbm(persistent, k):
    torch.manual_seed(0)
    a = RBM(64, 24, k=k, persistent=persistent, batch_size=20)
    with torch.no_grad():
        a.vbias.normal_(0, 0.5)
        a.hbias.normal_(0, 0.5)
    x, _ = _data(200, 64, binary=False)
    b = copy.deepcopy(a)
    _compare(a, b, "pretrain", x, None, steps=15)
    assert torch.equal(a.bit_i, b.bit_i)
    if persistent:  # the chains drew the same samples
        assert torch.equal(a.persistent_chain, b.persistent_chain)


def test_rbm_short_last_minibatch_advances_its_chains_only():
    torch.manual_seed(0)
    a = RBM(16, 8, k=2, persistent=True, batch_size=10)
    x, _ = _data(10, 16, binary=True)
    b = copy.deepcopy(a)
    _compare(a, b, "pretrain", x[:7], None, batch=7, steps=3)
    assert torch.equal(a.persistent_chain, b.persistent_chain) and not a.persistent_chain[7:].any()
    with pytest.raises(ValueError, match="persistent chains"):
        _step(a, "pretrain", True)(x.repeat(2, 1)[:12])


def test_sda_finetuning_and_each_layer_pretraining():
    torch.manual_seed(0)
    a = StackedDenoisingAutoencoder(64, 10, (32, 16), (0.1, 0.3))
    b = copy.deepcopy(a)
    x, y = _data(200, 64)
    h = x
    for la, lb in zip(a.pretrain_layers(), b.pretrain_layers()):
        _compare(la, lb, "pretrain", h, None, steps=8, lr=0.05)
        h = encode(la, h)
    _, step = _compare(a, b, "nll", x, y, momentum=0.5, l2=1e-3)
    assert len(step.params) == len(list(a.parameters())) - 2  # the dAs' visible biases: unused, left out


def test_dbn_finetuning_and_each_layer_pretraining():
    torch.manual_seed(0)
    a = DeepBeliefNetwork(64, 10, (32, 16), k=2, batch_size=20)
    b = copy.deepcopy(a)
    x, y = _data(200, 64)
    h = x
    for la, lb in zip(a.pretrain_layers(), b.pretrain_layers()):
        _compare(la, lb, "pretrain", h, None, steps=8)
        h = encode(la, h)
    _, step = _compare(a, b, "nll", x, y, l2=1e-4)
    assert len(step.params) == len(list(a.parameters())) - 2  # the RBMs' visible biases


@pytest.mark.parametrize("device", DEVICES)
def test_float64_and_device(device):
    torch.manual_seed(0)
    a = MLP(64, 10, (32,), "tanh").double().to(device)
    x, y = _data(200, 64, device=device)
    _compare(a, copy.deepcopy(a), "nll", x.double(), y, rtol=1e-9, atol=1e-11, momentum=0.9, l1=1e-3, l2=1e-3)
    r = RBM(64, 24, k=3, persistent=True, batch_size=20).double().to(device)
    _compare(r, copy.deepcopy(r), "pretrain", x.double().round(), None, rtol=1e-9, atol=1e-11)


def test_tensor_learning_rate_forms_the_gradients():
    """A CUDA graph passes the learning rate as a tensor: the gradients are formed, the same update."""
    torch.manual_seed(0)
    a = DenoisingAutoencoder(30, 12, 0.2)
    b = copy.deepcopy(a)
    x, _ = _data(40, 30)
    sa, sb = _step(a, "pretrain", True, momentum=0.5, l2=1e-3), _step(b, "pretrain", False, momentum=0.5, l2=1e-3)
    for s in (sa, sb):
        torch.manual_seed(1)
        for i in range(0, 40, 10):
            s.eager(x[i:i + 10], None, s.lr_tensor)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert sa.read()["cost"] == pytest.approx(sb.read()["cost"], rel=1e-5)


def test_closed_form_only_when_the_options_allow():
    model = MLP(8, 3, (4,), "tanh")
    assert _step(model, "nll", True).closed is not None
    assert _step(model, "pretrain", True).closed is None  # an MLP is not pretrained as a whole
    loss = lambda xb, yb: F.cross_entropy(model(xb), yb)  # noqa: E731
    params = list(model.parameters())
    assert SGDStep(model, loss, params, [], lr=0.1).closed is None  # no objective named: autograd
    assert SGDStep(model, loss, params, [], lr=0.1, objective="nll", autocast=torch.bfloat16).closed is None
    assert LeNet((1, 12, 12), 3, (2,), 3, 2, 4).closed_form("nll") is None


def test_resume_state_round_trips_on_the_closed_form():
    """state_dict / load_state_dict continue a closed-form run exactly (momentum, sums, lr)."""
    torch.manual_seed(0)
    a = StackedDenoisingAutoencoder(20, 10, (12,), (0.1,))
    x, y = _data(100, 20)
    ref = copy.deepcopy(a)
    s_ref = _step(ref, "nll", True, momentum=0.9, l2=1e-3)
    for i in range(0, 100, 10):
        s_ref(x[i:i + 10], y[i:i + 10])
    s1 = _step(a, "nll", True, momentum=0.9, l2=1e-3)
    for i in range(0, 50, 10):
        s1(x[i:i + 10], y[i:i + 10])
    state = copy.deepcopy(s1.state_dict())
    b = copy.deepcopy(a)
    s2 = _step(b, "nll", True, momentum=0.9, l2=1e-3)
    s2.load_state_dict(state)
    for i in range(50, 100, 10):
        s2(x[i:i + 10], y[i:i + 10])
    for pa, pb in zip(ref.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert s2.read() == s_ref.read()


def test_cpu_bernoulli_is_torch_bernoulli_draw_for_draw():
    for shape in [(20, 784), (1, 1000), (7, 3)]:
        p = torch.rand(shape)
        torch.manual_seed(3)
        want, after = torch.bernoulli(p), torch.rand(4)
        torch.manual_seed(3)
        got, after_got = bernoulli(p), torch.rand(4)
        assert torch.equal(got, want) and torch.equal(after, after_got) and got.dtype == p.dtype


def test_outer_and_sum_terms_update_like_the_formed_gradient():
    from dlexp.models.base import Outer, Sum
    from dlexp.train.step import sgd_update

    torch.manual_seed(0)
    for rows in (1, 3):  # one row: Outers stacked into one GEMM, Sums without a reduction
        w, b = torch.randn(5, 4), torch.randn(5)
        a1, b1, a2, b2 = torch.randn(rows, 5), torch.randn(rows, 4), torch.randn(rows, 5), torch.randn(rows, 4)
        d, e = torch.randn(5, 4), torch.randn(rows, 5)
        gw, gb = [Outer(a1, b1, 0.5), Outer(a2, b2, -2.0), d], [Sum(e, 0.25), b * 2]
        want_w, want_b = 0.5 * a1.t() @ b1 - 2.0 * a2.t() @ b2 + d, 0.25 * e.sum(0) + b * 2
        torch.testing.assert_close(fused.dense(gw), want_w)
        torch.testing.assert_close(fused.dense(gb), want_b)
        for momentum in (0.0, 0.9):
            p1, p2 = [w.clone(), b.clone()], [w.clone(), b.clone()]
            bufs1 = [torch.ones_like(w), torch.ones_like(b)] if momentum else []
            bufs2 = [t.clone() for t in bufs1]
            fused.update(p1, [gw, gb], 0.1, 1, 1e-2, 1e-2, momentum, bufs1)
            sgd_update(p2, [want_w.clone(), want_b.clone()], 0.1, 1, 1e-2, 1e-2, momentum, bufs2)
            for u, v in zip(p1 + bufs1, p2 + bufs2):
                torch.testing.assert_close(u, v)


def _registered():
    import dlexp.models  # noqa: F401  (imports every model module: the registry fills)
    from dlexp.models.registry import REGISTRY

    return sorted(REGISTRY.items())


@pytest.mark.parametrize("name,cls", _registered())
def test_every_registered_model_closed_form_equals_autograd(name, cls):
    """Every model the registry knows, built from its defaults on 8x8 inputs: each objective it offers in
    closed form (the whole model's NLL, each pretraining layer's loss) trains as autograd does."""
    from dlexp.models import build_model

    cfg = cls.Config()
    for key, small in (("hidden_sizes", [6]), ("hidden_layers_sizes", [6, 5]), ("corruption_levels", [0.1, 0.3]), ("n_hidden", 6),
                       ("nkerns", [2]), ("filter_size", 3), ("hidden_size", 4), ("n_chains", 4)):
        if hasattr(cfg, key):
            setattr(cfg, key, small)
    torch.manual_seed(0)
    a = build_model(cfg, (1, 8, 8), 10)
    b = copy.deepcopy(a)
    x, y = _data(60, 64, binary=True)
    offered = 0
    if a.closed_form_for("nll") is not None:
        _compare(a, b, "nll", x, y, batch=10, steps=6)
        offered += 1
    h = x
    for la, lb in zip(a.pretrain_layers(), b.pretrain_layers()):
        if la.closed_form_for("pretrain") is not None:
            _compare(la, lb, "pretrain", h, None, batch=10, steps=6)
            offered += 1
        h = encode(la, h)  # the next layer's input, as pretraining gives it
    assert offered or name == "lenet", f"{name} offers no closed form"


class DropoutMLP(MLP):
    """An MLP whose forward drops half its hidden units: MLP's hand-written gradient is not its gradient."""

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.hidden:
            h = F.dropout(self.activation(layer(h)), 0.5, self.training)
        return self.out(h)


def test_a_subclass_with_its_own_forward_trains_with_its_forward():
    torch.manual_seed(0)
    model = DropoutMLP(8, 10, (16,), "tanh")
    assert model.closed_form_for("nll") is None and MLP(8, 3, (4,)).closed_form_for("nll") is not None
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    step = _step(model, "nll", True)
    assert step.closed is None  # autograd: the closed form of MLP's objective is not DropoutMLP's
    x, y = _data(40, 8)
    torch.manual_seed(1)
    for i in range(0, 40, 10):
        step(x[i:i + 10], y[i:i + 10])
    assert len(calls) == 4  # its forward ran every step, dropout included
    twin = copy.deepcopy(model)
    twin.eval()  # without dropout the same weights give other outputs than with it
    model.train()
    torch.manual_seed(2)
    assert not torch.allclose(model(x), twin(x))
