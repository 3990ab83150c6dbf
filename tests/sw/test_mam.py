import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mamfpga.sw import kernel, mam
from mamfpga.sw.mam import MAMLinear, SelectionCounter, to_mac, to_mam


def explicit_reference(x, w, b, beta):
    """Autograd through the full B x M x N product tensor (small shapes only)."""
    prod = x[:, None, :] * w[None, :, :]
    z = prod.max(dim=2).values + prod.min(dim=2).values
    return beta * (x @ w.t()) + (1 - beta) * z + b


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (16, 33, 20), (9, 64, 130)])
@pytest.mark.parametrize("impl", ["fused", "torch"])
def test_gradients_equal_explicit_autograd(shape, beta, impl, monkeypatch):
    if impl == "torch":
        monkeypatch.setattr(mam, "_fused_ok", lambda x, w: False)
    else:
        assert kernel.available(), kernel.reason_unavailable()
    B, N, M = shape
    g = torch.Generator().manual_seed(B * 1000 + N * 10 + M)
    x = torch.randn(B, N, generator=g)
    x[:, ::4] = 0                                   # zero inputs
    layer = MAMLinear(N, M, beta=beta)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(M, N, generator=g))
        layer.weight[:, ::3] = 0                    # pruned weights: zero products
    xr = x.clone().requires_grad_(True)
    wr = layer.weight.detach().clone().requires_grad_(True)
    br = layer.bias.detach().clone().requires_grad_(True)
    xa = x.clone().requires_grad_(True)
    out = layer(xa)
    ref = explicit_reference(xr, wr, br, beta)
    assert torch.allclose(out, ref, atol=1e-5)
    gy = torch.randn(out.shape, generator=g)
    out.backward(gy)
    ref.backward(gy)
    assert torch.allclose(xa.grad, xr.grad, atol=1e-5)
    assert torch.allclose(layer.weight.grad, wr.grad, atol=1e-5)
    assert torch.allclose(layer.bias.grad, br.grad, atol=1e-5)


def test_ties_send_gradient_to_first_index():
    layer = MAMLinear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0, -1.0, -1.0]]))
    x = torch.ones(1, 4)
    layer(x).sum().backward()
    # max 1 at columns 0 and 1 -> column 0; min -1 at columns 2, 3 -> column 2
    assert layer.weight.grad.tolist() == [[1.0, 0.0, 1.0, 0.0]]


def test_fused_kernel_matches_torch_bit_for_bit():
    g = torch.Generator().manual_seed(5)
    for B, N, M in [(1, 1, 9), (7, 300, 17), (70, 129, 260)]:
        x = torch.randn(B, N, generator=g).round()
        w = torch.randn(M, N, generator=g).round()   # many ties
        a = mam.maxmin_indices_torch(x, w)
        b = mam.maxmin_indices(x, w)
        assert all(torch.equal(p, q) for p, q in zip(a, b))
        vmax, vmin = mam.maxmin_values(x, w)
        assert torch.equal(vmax, a[0]) and torch.equal(vmin, a[2])


def test_state_dict_is_nn_linear():
    lin = nn.Linear(6, 4)
    m = MAMLinear(6, 4)
    m.load_state_dict(lin.state_dict())
    assert set(m.state_dict()) == {"weight", "bias"}
    lin.load_state_dict(m.state_dict())


def test_wrong_input_width_is_named():
    with pytest.raises(ValueError, match="expects inputs with 6 features, got shape \\(2, 5\\)"):
        MAMLinear(6, 4)(torch.zeros(2, 5))


def test_memory_does_not_grow_as_b_m_n():
    """A 256 x 1024 x 1024 forward+backward would need 1 GiB of products; the chunked
    PyTorch path stays within the chunk budget (checked in a fresh process)."""
    code = (
        "import resource, torch\n"
        "from mamfpga.sw import mam\n"
        "mam._fused_ok = lambda x, w: False\n"
        "layer = mam.MAMLinear(1024, 1024)\n"
        "x = torch.randn(256, 1024, requires_grad=True)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "layer(x).sum().backward()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    grown_mib = int(res.stdout.strip())
    assert grown_mib < 400, f"peak memory grew by {grown_mib} MiB (B*M*N floats would be 1024 MiB)"


def test_selection_counts_repeated_indices_and_both_roles():
    layer = MAMLinear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    counter = SelectionCounter(layer.weight.shape)
    x = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    counter.observe(x, layer.weight)
    # row 0: samples 1-2 max col 2, min col 0; sample 3 products (-1, 2, 3): max 2, min 0
    # row 1: all products 0: max and min both at col 0, three times
    assert counter.counts.tolist() == [[3.0, 0.0, 3.0], [6.0, 0.0, 0.0]]
    assert counter.samples == 3
    assert torch.allclose(counter.probability()[0], torch.tensor([1.0, 0.0, 1.0]))


def test_to_mam_to_mac_keep_weights_and_masks():
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    torch_prune.random_unstructured(model[0], "weight", amount=0.5)
    mask = model[0].weight_mask.clone()
    w = model[0].weight.detach().clone()
    to_mam(model)
    assert isinstance(model[0], MAMLinear) and type(model[2]) is nn.Linear
    assert torch.equal(model[0].weight_mask, mask) and torch.equal(model[0].weight, w)
    to_mac(model)
    assert type(model[0]) is nn.Linear
    assert torch.equal(model[0].weight_mask, mask)
    torch_prune.remove(model[0], "weight")
    assert torch.equal(model[0].weight.detach(), w)


def test_to_mam_unknown_layer_named():
    with pytest.raises(ValueError, match="no Linear or Conv layer named 'fc9'"):
        to_mam(nn.Sequential(nn.Linear(2, 2)), ["fc9"])


@pytest.mark.skipif(os.environ.get("MAMFPGA_KERNEL") == "torch", reason="kernel disabled by the user")
def test_kernel_is_built_here():
    """On these machines (gcc present) the fused kernel must build; the fallback is for others."""
    assert kernel.available(), kernel.reason_unavailable()


def test_flops_count_kept_weights_at_every_conv_position():
    """2 FLOPs a MAC weight, 3 a MAM weight, 5 while blending; a conv pays its kept weights at
    every output position; a pruned weight costs nothing."""
    import torch

    from mamfpga.sw.flops import flops
    from mamfpga.sw.train import build_model

    model = build_model("conv4k3,pool2", (1, 8, 8), 10, mode="mam")     # MAM conv, beta = 1 to start
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1
    with torch.no_grad():
        convs[0].weight[0] = 0                                         # one empty filter
    f = flops(model, (64,))
    conv_l, fc_l = f["layers"]
    assert conv_l["positions"] == 6 * 6 and conv_l["kind"] == "blend"
    assert conv_l["nnz"] == 3 * 9 and conv_l["weights"] == 4 * 9
    assert conv_l["flops"] == 5 * 27 * 36 and conv_l["flops_dense"] == 5 * 36 * 36
    assert fc_l["kind"] == "mac" and fc_l["positions"] == 1 and fc_l["flops"] == 2 * fc_l["nnz"]
    for m in model.modules():
        if hasattr(m, "beta"):
            m.beta = 0.0
    assert flops(model, (64,))["layers"][0]["flops"] == 3 * 27 * 36
    assert f["saved"] == pytest.approx(1 - f["flops"] / f["flops_dense"])
