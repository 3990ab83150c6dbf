"""Quantization-aware training of narrow weights: the grid, the straight-through estimator,
and train --weight-bits -> prune -> quantize keeping the trained scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mamfpga import cli
from mamfpga.sw.mam import MAMLinear
from mamfpga.sw.qnet import load_qnet
from mamfpga.sw.train import fake_quant, quantized_weights, snap_weights


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quant_puts_each_row_on_its_grid(bits):
    lim = 2 ** (bits - 1) - 1
    w = torch.randn(6, 3, 3, 3)
    w[2] = 0                                                   # an empty filter stays empty
    mask = (torch.rand_like(w) > 0.5).float()
    q = fake_quant(w, bits, mask)
    for r in range(6):
        row, live = q[r].flatten(), (w[r] * mask[r]).flatten()
        if live.abs().max() == 0:
            assert (row == 0).all()
            continue
        step = live.abs().max() / lim
        k = row / step
        assert torch.allclose(k, k.round(), atol=1e-4) and k.abs().max() <= lim + 1e-4
        assert (row[mask[r].flatten() == 0] == 0).all()        # pruned weights stay 0
        assert torch.isclose(row.abs().max(), live.abs().max())


def test_straight_through_training_moves_the_float_weights():
    torch.manual_seed(0)
    model = nn.Sequential(MAMLinear(8, 4, beta=0.0), nn.ReLU(), nn.Linear(4, 3))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    with quantized_weights(model, 2):
        for row in model[2].weight.detach().abs():           # 2 bits: each row 0 or +-its largest
            assert set(row.unique().tolist()) <= {0.0, row.max().item()}
        nn.functional.cross_entropy(model(x), y).backward()
    # outside the block the float weights are back, then the optimizer moves them
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    opt.step()
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    snap_weights(model, 2)
    assert all(len(row.unique()) <= 2 for row in model[2].weight.detach().abs())


@pytest.mark.parametrize("arch", [None, "conv4k3,pool2"])
def test_train_weight_bits_prune_quantize_keeps_the_trained_grid(arch, tmp_path, capsys):
    shape = ["--arch", arch] if arch else ["--hidden", "48,48"]
    m, p, q = tmp_path / "m.pt", tmp_path / "p.pt", tmp_path / "q.npz"
    assert cli.main(["train", "--mode", "mam", *shape, "--epochs", "12", "--vc-epochs", "4", "--weight-bits", "4",
                     "-q", "-o", str(m)]) == 0
    assert cli.main(["prune", str(m), "--method", "gmp", "--sparsity", "0.8", "--finetune", "2", "-q",
                     "-o", str(p)]) == 0
    capsys.readouterr()
    assert cli.main(["quantize", str(p), "--calib", "digits", "-o", str(q)]) == 0
    text = capsys.readouterr().out
    assert "4-bit (trained) weights" in text
    f_acc, q_acc = (float(v) for v in text.split("float ")[1].split(" (")[0].split(", quantized "))
    assert f_acc > 0.6 and abs(q_acc - f_acc) <= 0.03
    net = load_qnet(q)
    weighted = [l for l in net.layers if l.weight is not None]
    assert all(l.weight_bits == 4 and np.abs(l.weight.astype(int)).max() <= 7 for l in weighted)
    # the trained grid is the integers: each row reaches +-7 (its scale is its largest weight)
    assert all((np.abs(l.weight.reshape(l.rows, -1).astype(int)).max(1) == 7)[l.weight.reshape(l.rows, -1).any(1)].all()
               for l in weighted)
    import mamfpga.compile as compiler
    from mamfpga.compile.arch import ArchConfig
    assert compiler.compile_network(net, ArchConfig(pes=2, lanes=2)).config.weight_bits == 4


def test_bad_weight_bits_one_line(tmp_path, capsys):
    assert cli.main(["train", "--weight-bits", "9", "-q", "-o", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weight-bits must be between 2 and 8, not 9" in err[0]
    assert not (tmp_path / "m.pt").exists()


def test_demo_bad_weight_bits_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--weight-bits", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weight-bits must be between 2 and 8, not 1" in err[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- narrow activations

def test_act_quant_grid_clamp_and_straight_through():
    from mamfpga.sw.train import ActQuant

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6), nn.Linear(6, 3))
    aq = ActQuant(model, 3)
    assert aq.relu == [True, False] and aq.ranges == [None, None]
    x = torch.randn(64, 8, requires_grad=True)
    model.train()
    model(x)                                                     # training tracks the ranges
    r0, r1 = aq.ranges
    assert r0 > 0 and r1 > 0
    model.eval()
    outs = {}
    hooks = [model[k].register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o)) for k in (0, 2)]
    model(x)
    for h in hooks:
        h.remove()
    assert aq.ranges == [r0, r1]                                 # frozen in eval mode
    # after the ReLU: 0..7 steps of r0 / 7; without one: -4..3 steps of r1 / 3
    k0 = outs[0].detach() / (r0 / 7)
    assert torch.allclose(k0, k0.round(), atol=1e-4) and k0.min() >= 0 and k0.max() <= 7 + 1e-4
    k1 = outs[2].detach() / (r1 / 3)
    assert torch.allclose(k1, k1.round(), atol=1e-4) and k1.min() >= -4 - 1e-4 and k1.max() <= 3 + 1e-4
    # gradients pass inside the clamp, not outside it
    z = torch.linspace(-2 * r0, 2 * r0, 41, requires_grad=True)
    out = aq._hook(0)(model[0], None, z)
    out.sum().backward()
    inside = (z.detach() > 0) & (z.detach() < r0)
    assert (z.grad[inside] == 1).all() and (z.grad[(z.detach() < 0) | (z.detach() > r0)] == 0).all()
    aq.remove()
    assert not hasattr(model, "act_quant")


def test_train_act_bits_prune_quantize_uses_the_trained_ranges(tmp_path, capsys):
    """train --act-bits 3 (and 4-bit weights) -> prune --finetune -> quantize: the hidden layers
    clamp at 7 (ReLU: 0..7), at the ranges training tracked; the integer network's accuracy is the
    quantization-aware model's, within a few samples."""
    from mamfpga import stages
    from mamfpga.sw import golden

    m, p, q = tmp_path / "m.pt", tmp_path / "p.pt", tmp_path / "q.npz"
    assert cli.main(["train", "--mode", "mam", "--hidden", "48,48", "--epochs", "12", "--vc-epochs", "4",
                     "--weight-bits", "4", "--act-bits", "3", "-q", "-o", str(m)]) == 0
    assert "3-bit activations (quantization-aware)" in capsys.readouterr().out
    assert cli.main(["prune", str(m), "--method", "gmp", "--sparsity", "0.8", "--finetune", "2", "-q",
                     "-o", str(p)]) == 0
    model, meta = stages.load_model(p)
    assert meta["act_bits"] == 3 and len(meta["act_ranges"]) == 2 and hasattr(model, "act_quant")
    ds = stages.load_dataset("digits")
    qat_acc = stages.accuracy(model, ds.x_test, ds.y_test)
    assert abs(qat_acc - meta["accuracy"]) < 1e-9                # loaded, it computes as it was saved
    capsys.readouterr()
    assert cli.main(["quantize", str(p), "--calib", "digits", "-o", str(q)]) == 0
    assert "3-bit hidden activations (trained ranges)" in capsys.readouterr().out
    net = load_qnet(q)
    assert [l.act_max for l in net.layers] == [7, 7, 127] and [l.relu for l in net.layers] == [True, True, False]
    int_acc = float((golden.classify(golden.run(net, ds.x_test)) == ds.y_test).mean())
    assert qat_acc > 0.5 and abs(int_acc - qat_acc) <= 0.03
    import mamfpga.compile as compiler
    from mamfpga.compile.arch import ArchConfig
    assert compiler.compile_network(net, ArchConfig(pes=2, lanes=2)).config.weight_bits == 4


def test_bad_act_bits_one_line(tmp_path, capsys):
    assert cli.main(["train", "--act-bits", "1", "-q", "-o", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--act-bits must be between 2 and 8, not 1" in err[0]
    assert not (tmp_path / "m.pt").exists()
