"""Contract version 2 (DESIGN.md): conv2d, maxpool2d, per-channel scales, the .npz version 2.

The golden model is checked against an independent loop-level implementation of the
contract, written here from DESIGN.md's formulas in Python integers: one output value at a
time, the padding built by hand, no torch.
"""

import re
import subprocess
import sys

import numpy as np
import pytest

from mamfpga import cli
from mamfpga.sw import golden
from mamfpga.sw.qnet import QNetError, QuantLayer, QuantNetwork, load_qnet, save_qnet
from tests.support import conv_inputs as _inputs, random_requant, random_conv_network
from tests.support import random_scales as _scales, random_weights as _weights


def _requant(acc: int, mult: int, shift: int, relu: bool, act_max: int = 127, rounding: str = "half_up") -> int:
    r = acc * mult
    if shift > 0:
        q, rest = divmod(r, 2 ** shift)                    # floor division: rest in [0, 2**shift)
        half = 2 ** (shift - 1)
        up = rest > half or (rest == half and (rounding == "half_up" or q % 2 == 1))
        r = q + up
    return max(0 if relu else -(act_max + 1), min(act_max, r))


def _scale(v, i: int) -> int:
    return int(v) if np.ndim(v) == 0 else int(v[i])


def loop_reference(net: QuantNetwork, x: np.ndarray) -> np.ndarray:
    """One sample through the contract, loop by loop; returns the flattened int output."""
    h = np.asarray(x, dtype=object).reshape(net.input_shape)
    for layer in net.layers:
        if layer.kind == "dense":
            flat = h.reshape(-1)
            out = []
            for i in range(layer.weight.shape[0]):
                prods = [int(layer.weight[i, j]) * int(flat[j]) for j in range(len(flat))]
                acc = int(layer.bias[i]) + (sum(prods) if layer.mode == "mac" else max(prods) + min(prods))
                out.append(_requant(acc, _scale(layer.mult, i), _scale(layer.shift, i), bool(layer.relu),
                                    layer.act_max, layer.rounding))
            h = np.array(out, dtype=object)
        elif layer.kind == "conv2d":
            c, hh, ww = h.shape
            top, left, bottom, right = layer.padding
            xpad = np.zeros((c, hh + top + bottom, ww + left + right), dtype=object)
            xpad[:, top:top + hh, left:left + ww] = h
            m, _, kh, kw = layer.weight.shape
            sh, sw = layer.stride
            oh, ow = (xpad.shape[1] - kh) // sh + 1, (xpad.shape[2] - kw) // sw + 1
            out = np.zeros((m, oh, ow), dtype=object)
            for i in range(m):
                for oy in range(oh):
                    for ox in range(ow):
                        prods = [int(layer.weight[i, ci, ky, kx]) * int(xpad[ci, oy * sh + ky, ox * sw + kx])
                                 for ci in range(c) for ky in range(kh) for kx in range(kw)]
                        acc = int(layer.bias[i]) + (sum(prods) if layer.mode == "mac"
                                                    else max(prods) + min(prods))
                        out[i, oy, ox] = _requant(acc, _scale(layer.mult, i), _scale(layer.shift, i),
                                                  bool(layer.relu), layer.act_max, layer.rounding)
            h = out
        else:
            c, hh, ww = h.shape
            kh, kw = layer.kernel
            sh, sw = layer.stride
            oh, ow = (hh - kh) // sh + 1, (ww - kw) // sw + 1
            out = np.zeros((c, oh, ow), dtype=object)
            for ci in range(c):
                for oy in range(oh):
                    for ox in range(ow):
                        out[ci, oy, ox] = max(int(h[ci, oy * sh + ky, ox * sw + kx])
                                              for ky in range(kh) for kx in range(kw))
            h = out
    return np.array(h.reshape(-1), dtype=np.int64)


def random_conv_qnet(rng) -> QuantNetwork:
    """A random conv front end (conv2d and maxpool2d), sometimes a dense layer after it."""
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 10))
    if rng.random() < 0.2:
        h = 1                                                    # Conv1d: H = KH = 1
    shape = (c, h, w)
    layers = []
    for _ in range(int(rng.integers(1, 4))):
        cc, hh, ww = shape
        if layers and rng.random() < 0.3 and hh >= 2 and ww >= 2:
            k = (int(rng.integers(1, min(3, hh) + 1)), int(rng.integers(1, min(3, ww) + 1)))
            layer = QuantLayer(None, None, kind="maxpool2d", kernel=k,
                               stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))))
        else:
            pad = tuple(int(v) for v in rng.integers(0, 3, size=4))
            if hh == 1 and h == 1:
                pad = (0, pad[1], 0, pad[3])
            kh = 1 if hh == 1 and h == 1 else int(rng.integers(1, min(5, hh + pad[0] + pad[2]) + 1))
            kw = int(rng.integers(1, min(5, ww + pad[1] + pad[3]) + 1))
            m = int(rng.integers(1, 5))
            mult, shift = _scales(rng, m)
            bias_range = int(rng.choice([0, 100, 10**5, 2**31 - 1]))
            layer = QuantLayer(_weights(rng, (m, cc, kh, kw)),
                               rng.integers(-bias_range, bias_range + 1, size=m).astype(np.int32),
                               str(rng.choice(["mac", "mam"])), mult, shift, bool(rng.random() < 0.6),
                               kind="conv2d", stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                               padding=pad)
        layers.append(layer)
        shape = QuantNetwork(layers, input_shape=(c, h, w)).shapes[-1]
    if rng.random() < 0.5:
        m = int(rng.integers(1, 6))
        mult, shift = _scales(rng, m)
        layers.append(QuantLayer(_weights(rng, (m, int(np.prod(shape)))),
                                 rng.integers(-1000, 1001, size=m).astype(np.int32),
                                 str(rng.choice(["mac", "mam"])), mult, shift, bool(rng.random() < 0.5)))
    return QuantNetwork(layers, input_shape=(c, h, w))


def test_golden_equals_loop_reference_on_300_random_conv_networks(tmp_path):
    rng = np.random.default_rng(1302)
    kinds = {"conv2d": 0, "maxpool2d": 0, "dense": 0, "mam": 0, "per_channel": 0, "conv1d": 0}
    for n in range(300):
        net = random_conv_qnet(rng)
        x = _inputs(rng, net.input_shape)
        got = golden.run(net, x)
        for b in range(len(x)):
            want = loop_reference(net, x[b])
            assert np.array_equal(got[b].astype(np.int64), want), (n, b, got[b], want)
        # the .npz version 2 round trip keeps every layer
        path = tmp_path / f"n{n}.npz"
        save_qnet(net, path)
        assert np.array_equal(golden.run(load_qnet(path), x), got)
        for layer in net.layers:
            kinds[layer.kind] += 1
            kinds["mam"] += layer.mode == "mam" and layer.kind != "maxpool2d"
            kinds["per_channel"] += layer.kind != "maxpool2d" and layer.per_channel
        kinds["conv1d"] += net.input_shape[1] == 1
    assert min(kinds.values()) >= 20, kinds                      # every case was drawn, many times


def test_output_clamps_and_unsigned_bytes_equal_loop_reference(tmp_path):
    """act_max 2**n - 1 per layer, 255 (unsigned bytes read as 0..255 by the next layer: conv
    padding, pools, MAM zero candidates over them), halves rounded up or to even, on 120 random
    networks, and the file round trip."""
    rng = np.random.default_rng(1510)
    unsigned = 0
    for n in range(120):
        net = random_requant(rng, random_conv_network(rng))
        x = _inputs(rng, net.input_shape)
        got = golden.run(net, x)
        for b in range(len(x)):
            assert np.array_equal(got[b].astype(np.int64), loop_reference(net, x[b])), (n, b)
        save_qnet(net, tmp_path / "n.npz")
        back = load_qnet(tmp_path / "n.npz")
        assert [(l.act_max, l.rounding) for l in back.layers] == [(l.act_max, l.rounding) for l in net.layers]
        unsigned += any(l.act_max == 255 for l in net.layers)
    assert unsigned >= 40


@pytest.mark.parametrize("layer, words", [
    (dict(act_max=100), "must be 2**n - 1"),
    (dict(act_max=255, relu=False), "255 needs relu"),
])
def test_bad_act_max_named(layer, words):
    with pytest.raises(QNetError, match=f"layer0.act_max: .*{re.escape(words)}"):
        QuantNetwork([QuantLayer(np.ones((2, 3), np.int8), np.zeros(2, np.int32), **layer),
                      QuantLayer(np.ones((1, 2), np.int8), np.zeros(1, np.int32))])
    with pytest.raises(QNetError, match="layer0.act_max: 255: the network's outputs are int8"):
        QuantNetwork([QuantLayer(np.ones((2, 3), np.int8), np.zeros(2, np.int32), act_max=255, relu=True)])


def test_bad_rounding_named():
    with pytest.raises(QNetError, match="layer0.rounding: must be one of half_up, half_even, not 'floor'"):
        QuantNetwork([QuantLayer(np.ones((2, 3), np.int8), np.zeros(2, np.int32), rounding="floor")])


def test_conv_edge_cases_by_hand():
    """A 1 x 1 input padded to 3 x 3: a MAM filter sees the padding zeros as products."""
    w = np.array([[[[1, 1, 1], [1, 5, 1], [1, 1, 1]]]], np.int8)
    net = QuantNetwork([QuantLayer(w, np.zeros(1, np.int32), "mam", 1, 0, False, kind="conv2d",
                                   padding=(1, 1, 1, 1))], input_shape=(1, 1, 1))
    # products: 5 * 10 = 50 and eight zeros from the padding: max 50 + min 0
    assert golden.run(net, np.array([[[[10]]]], np.int8)).tolist() == [[50]]
    # negative input: max 0 (padding) + min -50
    assert golden.run(net, np.array([[[[-10]]]], np.int8)).tolist() == [[-50]]
    net.layers[0].mode = "mac"
    assert golden.run(net, np.array([[[[10]]]], np.int8)).tolist() == [[50]]
    # saturation and per-channel scales: two filters, one halves, one doubles
    w2 = np.ones((2, 1, 1, 1), np.int8) * 100
    net2 = QuantNetwork([QuantLayer(w2, np.zeros(2, np.int32), "mac", np.array([1, 2]), np.array([1, 0]), False,
                                    kind="conv2d")], input_shape=(1, 1, 2))
    assert golden.run(net2, np.array([[[[1, -1]]]], np.int8)).tolist() == [[50, -50, 127, -128]]


def test_maxpool_then_dense_reads_channel_major():
    x = np.arange(2 * 2 * 4, dtype=np.int8).reshape(1, 2, 2, 4)
    pool = QuantLayer(None, None, kind="maxpool2d", kernel=(2, 2), stride=(2, 2))
    eye = np.eye(4, dtype=np.int8)
    net = QuantNetwork([pool, QuantLayer(eye, np.zeros(4, np.int32), "mac", 1, 0, False)], input_shape=(2, 2, 4))
    # channel 0 pools to [5, 7], channel 1 to [13, 15]; flattened C, H, W
    assert golden.run(net, x).tolist() == [[5, 7, 13, 15]]
    assert golden.run(net, x.reshape(1, -1)).tolist() == [[5, 7, 13, 15]]   # flattened inputs too


def test_version1_files_still_read(tmp_path):
    path = tmp_path / "v1.npz"
    w = np.array([[1, -2]], np.int8)
    np.savez(path, format=np.array("mamfpga.qnet/1"), num_layers=np.array(1),
             **{"layer0.weight": w, "layer0.bias": np.zeros(1, np.int32), "layer0.mode": np.array("mac"),
                "layer0.mult": np.array(1), "layer0.shift": np.array(0), "layer0.relu": np.array(False)})
    net = load_qnet(path)
    assert net.input_shape == (2,) and net.layers[0].kind == "dense"
    assert golden.run(net, np.array([[3, 1]], np.int8)).tolist() == [[1]]


def _conv_file(tmp_path):
    rng = np.random.default_rng(5)
    w = rng.integers(-5, 6, size=(3, 2, 3, 3)).astype(np.int8)
    net = QuantNetwork([
        QuantLayer(w, np.zeros(3, np.int32), "mam", np.array([1, 2, 3]), np.array([0, 1, 2]), True,
                   kind="conv2d", stride=(1, 1), padding=(1, 1, 1, 1)),
        QuantLayer(None, None, kind="maxpool2d", kernel=(2, 2), stride=(2, 2)),
        QuantLayer(np.ones((4, 3 * 3 * 3), np.int8), np.zeros(4, np.int32), "mac", 1, 4, False)],
        input_shape=(2, 6, 6))
    path = tmp_path / "conv.npz"
    save_qnet(net, path)
    return net, path


def _rewrite(path, drop=(), **changes):
    z = dict(np.load(path))
    for k in drop:
        del z[k]
    z.update(changes)
    np.savez(path, **z)


@pytest.mark.parametrize("drop,changes,words", [
    ((), {"format": np.array("mamfpga.qnet/3")}, r"format: unknown format 'mamfpga.qnet/3'"),
    (("input_shape",), {}, r"input_shape: missing"),
    ((), {"input_shape": np.array([2, 6])}, r"input_shape: must be \[N\] or \[C, H, W\]"),
    ((), {"input_shape": np.array([3, 6, 6])}, r"layer0.weight: has filters of 2 channels but receives a "
                                               r"feature map \[3, 6, 6\]"),
    ((), {"layer0.kind": np.array("conv3d")}, r"layer0.kind: must be one of dense, conv2d, maxpool2d"),
    ((), {"layer0.weight": np.ones((3, 2, 3), np.int8)}, r"layer0.weight: must be a non-empty \[M, C, KH, KW\]"),
    ((), {"layer0.weight": np.ones((3, 2, 9, 9), np.int8)}, r"layer0.weight: a 9 x 9 kernel does not fit"),
    ((), {"layer0.bias": np.zeros(2, np.int32)}, r"layer0.bias: has shape \(2,\), but layer0.weight has 3 filters"),
    ((), {"layer0.mult": np.array([1, 2])}, r"layer0.mult: per-channel values must have shape \(3,\)"),
    ((), {"layer0.mult": np.array([1, 0, 3])}, r"layer0.mult: must be in \[1, 16777215\]; entry 1 is 0"),
    ((), {"layer0.shift": np.array([0, 63, 1])}, r"layer0.shift: must be in \[0, 62\]; entry 1 is 63"),
    ((), {"layer0.shift": np.array([0.5, 1, 1])}, r"layer0.shift: must hold integers"),
    ((), {"layer0.stride": np.array([1, 0])}, r"layer0.stride: must be 2 integers >= 1"),
    ((), {"layer0.stride": np.array([1, 1, 1])}, r"layer0.stride: must be 2 integers"),
    (("layer0.padding",), {}, r"layer0.padding: missing"),
    ((), {"layer0.padding": np.array([1, 1, -1, 1])}, r"layer0.padding: must be 4 integers >= 0"),
    ((), {"layer1.kernel": np.array([7, 7])}, r"layer1.kernel: a 7 x 7 window does not fit the 6 x 6"),
    ((), {"layer1.kernel": np.array([2.0, 2.0])}, r"layer1.kernel: must hold integers"),
    ((), {"layer1.weight": np.ones((1, 1), np.int8)}, r"layer1.weight: a maxpool2d layer has no weights"),
    ((), {"layer2.weight": np.ones((4, 26), np.int8)}, r"layer2.weight: has 26 columns but receives a "
                                                       r"feature map \[3, 3, 3\] \(27 values\)"),
    ((), {"layer0.weight_bits": np.array(3)}, r"layer0.weight_bits: says 3 bits, but a weight of 5 exceeds 3"),
])
def test_malformed_version2_files_name_the_key(tmp_path, drop, changes, words):
    _, path = _conv_file(tmp_path)
    _rewrite(path, drop, **changes)
    with pytest.raises(QNetError, match=words):
        load_qnet(path)


def test_golden_cli_takes_image_batches(tmp_path, capsys):
    net, path = _conv_file(tmp_path)
    x = np.random.default_rng(0).integers(-128, 128, size=(5, 2, 6, 6)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["golden", str(path), "--inputs", str(tmp_path / "x.npy"),
                     "--outputs", str(tmp_path / "y.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "y.npy"), golden.run(net, x))
    # a batch of the wrong image shape: one line, exit 2, nothing written
    np.save(tmp_path / "bad.npy", x[:, :, :5])
    res = subprocess.run([sys.executable, "-m", "mamfpga", "golden", str(path), "--inputs",
                          str(tmp_path / "bad.npy"), "--outputs", str(tmp_path / "y2.npy")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "inputs: must be [B, 2, 6, 6] or [B, 72], not shape (5, 2, 5, 6)" in res.stderr
    assert not (tmp_path / "y2.npy").exists()


def test_compiler_takes_a_conv_network_and_refuses_overlapping_pools(tmp_path):
    net, path = _conv_file(tmp_path)
    res = subprocess.run([sys.executable, "-m", "mamfpga", "compile", str(path), "-o", str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert res.returncode == 0 and (tmp_path / "b" / "accelerator.v").exists(), res.stderr
    # a pool whose windows overlap is not fused: one line, exit 2, nothing written
    _rewrite(path, **{"layer1.kernel": np.array([3, 3]), "layer1.stride": np.array([2, 2]),
                      "layer2.weight": np.ones((4, 3 * 2 * 2), np.int8)})
    res = subprocess.run([sys.executable, "-m", "mamfpga", "compile", str(path), "-o", str(tmp_path / "c")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "layer1 is a 3 x 3 max pool with stride 2 x 2; the accelerator fuses pools whose stride equals " \
        "their kernel" in res.stderr
    assert not (tmp_path / "c").exists()
