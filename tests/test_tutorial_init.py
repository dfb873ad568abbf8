"""``model.init_seed``: mlp and LeNet start from the weights the tutorials' own code draws.

mlp.py: ``rng = RandomState(1234)``, W = asarray(rng.uniform(-a, a, (n_in, n_out)), float32), a =
sqrt(6 / (n_in + n_out)); convolutional_mlp.py: ``RandomState(23455)``, the filter banks (K, C, k, k) with
fan_out = K k^2 // p^2, then the hidden layer, and Theano's conv2d convolves (flips the bank) where torch
correlates. Each draw is written out here with numpy alone, as the tutorials write it.
"""
import numpy as np
import torch
import torch.nn.functional as F

from dlexp.models.lenet import LeNet, LeNetConfig
from dlexp.models.mlp import MLP, MLPConfig


def test_mlp_starts_from_mlp_py_weights():
    model = MLP.build(MLPConfig(init_seed=1234), (1, 28, 28), 10)
    rng = np.random.RandomState(1234)
    a = np.sqrt(6.0 / (784 + 500))
    W = np.asarray(rng.uniform(low=-a, high=a, size=(784, 500)), dtype=np.float32)
    assert np.array_equal(model.hidden[0].weight.detach().numpy(), W.T)
    assert not model.hidden[0].bias.any() and not model.out.weight.any()
    other = MLP.build(MLPConfig(), (1, 28, 28), 10)  # torch's generator: other weights
    assert not torch.equal(other.hidden[0].weight, model.hidden[0].weight)


def test_sigmoid_mlp_scales_the_float32_draw_by_4():
    model = MLP.build(MLPConfig(init_seed=7, activation="sigmoid", hidden_sizes=[30]), (1, 8, 8), 10)
    a = np.sqrt(6.0 / (64 + 30))
    W = np.asarray(np.random.RandomState(7).uniform(-a, a, (64, 30)), dtype=np.float32) * np.float32(4)
    assert np.array_equal(model.hidden[0].weight.detach().numpy(), W.T)


def theano_conv_valid(x, w):
    """Theano's conv2d (a true convolution, filters flipped), 'valid', for one image and one bank."""
    k = w.shape[-1]
    out = np.zeros((w.shape[0], x.shape[-2] - k + 1, x.shape[-1] - k + 1), dtype=np.float64)
    for o in range(w.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[o, i, j] = (x[:, i:i + k, j:j + k] * w[o, :, ::-1, ::-1]).sum()
    return out


def test_lenet_starts_from_convolutional_mlp_py_weights():
    model = LeNet.build(LeNetConfig(init_seed=23455), (1, 28, 28), 10)
    rng = np.random.RandomState(23455)
    banks = []
    for shape in ((20, 1, 5, 5), (50, 20, 5, 5)):
        fan_in, fan_out = np.prod(shape[1:]), shape[0] * np.prod(shape[2:]) // 4
        a = np.sqrt(6.0 / (fan_in + fan_out))
        banks.append(np.asarray(rng.uniform(low=-a, high=a, size=shape), dtype=np.float32))
    a = np.sqrt(6.0 / (800 + 500))
    hidden = np.asarray(rng.uniform(low=-a, high=a, size=(800, 500)), dtype=np.float32)
    assert np.array_equal(model.hidden.weight.detach().numpy(), hidden.T)
    x = np.random.RandomState(0).rand(1, 28, 28).astype(np.float32)
    ours = F.conv2d(torch.from_numpy(x)[None], model.convs[0].conv.weight.detach())[0].numpy()
    assert np.allclose(ours, theano_conv_valid(x, banks[0]), atol=1e-5)  # the same first layer as Theano's
