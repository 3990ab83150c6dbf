import numpy as np
import pytest
import torch

from mamfpga.sw.network import Layer, Network, from_torch, to_torch
from mamfpga.sw.simplify import simplify


def random_net(rng, sizes, modes, density, relu_last=False):
    layers = []
    for k, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(size=(m, n)) * (rng.random((m, n)) < density)
        if rng.random() < 0.5 and m > 1:
            w[rng.integers(m)] = 0                        # a dead neuron
        b = rng.normal(size=m)
        relu = k < len(sizes) - 2 or relu_last
        layers.append(Layer(w, b, modes[k], relu))
    return Network(layers, sizes[0])


@pytest.mark.parametrize("seed", range(40))
def test_simplified_network_computes_the_same(seed):
    rng = np.random.default_rng(seed)
    depth = rng.integers(2, 5)
    sizes = [int(rng.integers(3, 30)) for _ in range(depth + 1)]
    modes = [str(rng.choice(["mac", "mam"])) for _ in range(depth)]
    net = random_net(rng, sizes, modes, density=float(rng.choice([0.05, 0.2, 0.6])))
    simple, report = simplify(net)
    x = rng.normal(size=(64, sizes[0]))
    x[:8] = 0
    assert np.allclose(simple.forward(x), net.forward(x), atol=1e-9)
    assert sum(simple.nnz()) <= sum(net.nnz())
    # and through torch (float32)
    model = to_torch(simple)
    with torch.no_grad():
        y = model(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    assert np.allclose(y, net.forward(x), atol=1e-4)


def test_shrinks_a_sparse_network():
    w1 = np.zeros((4, 3)); w1[0, 0] = 1.0; w1[1, 1] = -2.0   # neurons 2, 3 dead; input 2 unread
    w2 = np.zeros((2, 4)); w2[0, 0] = 1.0; w2[1, 2] = 3.0    # reads dead neuron 2
    net = Network([Layer(w1, [0.0, 0.0, 0.5, -1.0], "mac", True), Layer(w2, [0.1, 0.2], "mac", False)], 3)
    simple, report = simplify(net)
    assert report.sizes_after == [1, 1, 2]      # neuron 1 is unread too, then so is input 1
    assert np.allclose(simple.layers[1].bias, [0.1, 0.2 + 3.0 * 0.5])
    x = np.random.default_rng(0).normal(size=(10, 3))
    assert np.allclose(simple.forward(x), net.forward(x))


def test_mam_keeps_a_zero_candidate():
    """A MAM row with no pruned weight left must keep the zero-product column it reads."""
    w1 = np.array([[1.0, 0.0], [0.0, 0.0]])               # neuron 1 dead, constant relu(-1) = 0
    w2 = np.array([[2.0, 5.0]])                            # dense MAM row: its 0 candidate is column 1
    net = Network([Layer(w1, [0.0, -1.0], "mac", True), Layer(w2, [0.0], "mam", False)], 2)
    simple, _ = simplify(net)
    assert simple.layers[1].cols == 2
    x = np.array([[-3.0, 1.0], [4.0, 0.0]])
    assert np.allclose(simple.forward(x), net.forward(x))


def test_from_torch_round_trip():
    rng = np.random.default_rng(1)
    net = random_net(rng, [5, 7, 3], ["mam", "mac"], 0.5)
    again = from_torch(to_torch(net))
    assert [l.mode for l in again.layers] == ["mam", "mac"]
    assert np.allclose(again.layers[0].weight, net.layers[0].weight, atol=1e-6)


def test_simplified_model_stays_pruned_through_finetuning():
    from mamfpga.sw import data
    from mamfpga.sw.prune import effective_weight
    from mamfpga.sw.train import finetune

    rng = np.random.default_rng(4)
    net = random_net(rng, [64, 32, 10], ["mam", "mac"], density=0.1)
    model = to_torch(simplify(net)[0])
    zeros = [(effective_weight(m) == 0).sum().item() for m in model if isinstance(m, torch.nn.Linear)]
    finetune(model, data.load(), epochs=2, progress=False)
    after = [(effective_weight(m) == 0).sum().item() for m in model if isinstance(m, torch.nn.Linear)]
    assert after == zeros and zeros[0] > 0
