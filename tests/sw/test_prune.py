import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mamfpga.sw import data, prune
from mamfpga.sw.mam import MAMLinear
from mamfpga.sw.train import TrainConfig, build_mlp, finetune, fit


def small_model(mode="mam"):
    model = build_mlp(64, 10, (24, 16), mode=mode, seed=1)
    for m in model:
        if isinstance(m, MAMLinear):
            m.beta = 0.0
    return model


def pruning_set(n=64):
    ds = data.load()
    return list(data.loader(ds.x_train[:n], ds.y_train[:n], 32, shuffle=False))


@pytest.mark.parametrize("method", list(prune.METHODS))
def test_every_method_reaches_the_sparsity(method):
    model = small_model()
    info = prune.prune_model(model, method, 0.9, data=pruning_set())
    targets = prune.prunable_layers(model)
    assert [n for n, _ in targets] == ["0", "2"]            # the MAM layers, not the classifier
    total = sum(m.weight_orig.numel() for _, m in targets)
    assert info["sparsity"] == pytest.approx(1 - round(0.1 * total) / total)
    if prune.METHODS[method][1] == "local":
        for name, m in targets:
            assert prune.layer_sparsity(m) == pytest.approx(0.9, abs=1 / m.weight_orig.numel())
    assert not hasattr(model[4], "weight_mask")


def test_global_magnitude_keeps_the_largest():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -5.0], [0.2, 0.3]]))
    prune.prune_model(model, "gmp", 0.5, layers=["0", "2"])
    w0 = prune.effective_weight(model[0])
    assert w0[0, 1] == -5.0 and w0[0, 0] == 0 and w0[1, 0] == 0


def test_pruning_is_cumulative_and_pruned_stay_zero_through_finetuning():
    ds = data.load()
    model = small_model()
    prune.prune_model(model, "rp", 0.5, seed=3)
    first = model[0].weight_mask.clone()
    prune.prune_model(model, "lmp", 0.8)
    assert torch.all(model[0].weight_mask <= first)       # nothing revived
    finetune(model, ds, epochs=2, progress=False)
    w = prune.effective_weight(model[0]).detach()
    assert torch.all(w[model[0].weight_mask == 0] == 0)
    assert prune.sparsity(model) == pytest.approx(0.8, abs=0.01)
    torch_prune.remove(model[0], "weight")
    assert float((model[0].weight == 0).float().mean()) == pytest.approx(0.8, abs=0.01)


def test_selection_pruning_refuses_mac_layers():
    with pytest.raises(ValueError, match="needs MAM layers.*layer '0' is MAC"):
        prune.prune_model(small_model("mac"), "gpsp", 0.5, data=pruning_set())


def test_methods_needing_data_say_so():
    with pytest.raises(ValueError, match="ggp pruning needs a pruning set"):
        prune.prune_model(small_model(), "ggp", 0.5)


def test_bad_sparsity_and_method():
    with pytest.raises(ValueError, match="sparsity must be between 0 and 1, got 1.5"):
        prune.prune_model(small_model(), "gmp", 1.5)
    with pytest.raises(ValueError, match="unknown pruning method 'obd'"):
        prune.prune_model(small_model(), "obd", 0.5)


def test_iterative_pruning_with_patience():
    ds = data.load()
    model = build_mlp(64, 10, (32,), mode="mam", seed=0)
    fit(model, ds, TrainConfig(epochs=4, vc_epochs=2, weight_decay=1e-4), progress=False)
    hist = prune.iterative_prune(model, "lmp", 0.9, rounds=3,
                                 finetune=lambda r: finetune(model, ds, epochs=3, patience=1, progress=False),
                                 log=lambda s: None)
    assert [h["round"] for h in hist] == [1, 2, 3]
    assert hist[0]["sparsity"] < hist[1]["sparsity"] < hist[2]["sparsity"] == pytest.approx(0.9, abs=0.01)


def test_pruning_before_convergence():
    ds = data.load()
    model = build_mlp(64, 10, (32,), mode="mam", seed=0)
    fit(model, ds, TrainConfig(epochs=5, vc_epochs=2), progress=False, prune_at=3,
        prune_fn=lambda m: prune.prune_model(m, "gmp", 0.9))
    assert prune.sparsity(model) == pytest.approx(0.9, abs=0.01)
    w = prune.effective_weight(model[0]).detach()
    assert torch.all(w[model[0].weight_mask == 0] == 0)


def test_a_just_pruned_model_can_be_copied():
    model = small_model()
    prune.prune_model(model, "gmp", 0.5)
    prune.prune_model(model, "lmp", 0.5, layers=["4"])
    copied = copy.deepcopy(model)
    assert torch.equal(prune.effective_weight(copied[4]), prune.effective_weight(model[4]))


@pytest.mark.parametrize("method", list(prune.STRUCTURED))
def test_structured_methods_remove_whole_units_and_what_reads_them(method):
    """A removed neuron: its row pruned and its column in the next layer, so simplify can take
    it out exactly; the amount is the fraction of hidden units; the classifier's units stay."""
    from mamfpga.sw.network import from_torch
    from mamfpga.sw.simplify import simplify

    model = small_model()
    x = torch.as_tensor(data.load().x_test[:50])
    info = prune.prune_model(model, method, 0.5, data=pruning_set())
    removed = info["units"]
    if prune.STRUCTURED[method][1] == "local":
        assert removed == {"0": (12, 24), "2": (8, 16)}
    else:
        assert sum(r for r, _ in removed.values()) == 20 and all(r < u for r, u in removed.values())
    for name, nxt in (("0", "2"), ("2", "4")):
        rows = prune.effective_weight(model[int(name)]).abs().sum(dim=1) == 0
        assert int(rows.sum()) == removed[name][0]
        w_next = prune.effective_weight(model[int(nxt)])
        assert bool((w_next[:, rows] == 0).all())             # nothing reads a removed unit
    before = model(x)
    net, report = simplify(from_torch(model))
    assert report.sizes_after[1] <= 24 - removed["0"][0] + 1 and report.sizes_after[2] <= 16 - removed["2"][0] + 1
    from mamfpga.sw.network import to_torch
    assert torch.allclose(to_torch(net)(x), before, atol=1e-5)   # exactly the same function


def test_structured_pruning_of_conv_channels_reads_through_the_flatten():
    """A conv layer's output channel: its filter, the next conv's input channel, or the H*W
    columns of the dense layer reading the flattened map."""
    from mamfpga.sw.train import build_model

    model = build_model("conv4k3,conv3k3,pool2", (1, 8, 8), 10, mode="mac")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    info = prune.prune_model(model, "ll1n", 0.5, layers=names)
    assert {n: r for n, (r, _) in info["units"].items()} == {names[0]: 2, names[1]: 1}   # 4 -> keep 2, 3 -> keep 2
    gone0 = [c for c in range(4) if not prune.effective_weight(convs[0])[c].any()]
    assert not prune.effective_weight(convs[1])[:, gone0].any()
    gone1 = [c for c in range(3) if not prune.effective_weight(convs[1])[c].any()]
    per = fc.in_features // 3
    for c in gone1:
        assert not prune.effective_weight(fc)[:, c * per:(c + 1) * per].any()
    with pytest.raises(ValueError, match="output layer"):
        prune.prune_model(model, "ll1n", 0.5, layers=[n for n, m in model.named_modules() if m is fc])
