import numpy as np
import pytest

from mamfpga.sw import golden
from mamfpga.sw.qnet import QNetError, QuantLayer, QuantNetwork, load_qnet, save_qnet


def loop_reference(net: QuantNetwork, x) -> list[int]:
    """DESIGN.md's contract, in plain Python integers, one sample."""
    h = [int(v) for v in x]
    for layer in net.layers:
        out = []
        for i in range(layer.rows):
            prods = [int(layer.weight[i, j]) * h[j] for j in range(layer.cols)]
            acc = int(layer.bias[i]) + (sum(prods) if layer.mode == "mac" else max(prods) + min(prods))
            r = acc * int(layer.mult)
            if layer.shift > 0:
                r = (r + 2 ** (layer.shift - 1)) // 2 ** layer.shift
            out.append(max(0 if layer.relu else -128, min(127, r)))
        h = out
    return h


def random_qnet(rng, max_size=40) -> QuantNetwork:
    depth = int(rng.integers(1, 4))
    sizes = [int(rng.integers(1, max_size)) for _ in range(depth + 1)]
    layers = []
    for k in range(depth):
        m, n = sizes[k + 1], sizes[k]
        density = float(rng.choice([0.0, 0.02, 0.1, 0.5, 1.0]))
        w = rng.integers(-127, 128, size=(m, n)) * (rng.random((m, n)) < density)
        if m > 1 and rng.random() < 0.5:
            w[rng.integers(m)] = 0                                  # an empty row
        if m > 1 and rng.random() < 0.5:
            w[rng.integers(m)] = rng.choice([-127, 127], size=n)    # a dense row of extremes
        bias_range = int(rng.choice([0, 100, 10**5, 2**31 - 1]))
        b = rng.integers(-bias_range, bias_range + 1, size=m)
        mult = int(rng.choice([1, int(rng.integers(1, 2**16)), 2**16 - 1]))
        shift = int(rng.choice([0, int(rng.integers(1, 30)), 62]))
        layers.append(QuantLayer(w.astype(np.int8), b.astype(np.int32), str(rng.choice(["mac", "mam"])),
                                 mult, shift, bool(rng.random() < 0.6)))
    return QuantNetwork(layers)


def random_inputs(rng, n, count=6):
    x = rng.integers(-128, 128, size=(count, n))
    x[0] = 0                                         # all-zero input
    x[1] = 127
    if count > 2:
        x[2] = -128
    return x.astype(np.int8)


def test_golden_equals_loop_reference_on_200_random_networks():
    rng = np.random.default_rng(2026)
    mismatches = 0
    for _ in range(220):
        net = random_qnet(rng)
        x = random_inputs(rng, net.input_size)
        got = golden.run(net, x)
        want = np.array([loop_reference(net, s) for s in x])
        mismatches += int((got != want).any())
    assert mismatches == 0


def test_saturation_and_rounding_edges():
    w = np.array([[127, 127], [-127, -127], [1, 0], [0, 0]], np.int8)
    net = QuantNetwork([QuantLayer(w, np.array([0, 0, 1, -3], np.int32), "mac", 1, 1, False)])
    y = golden.run(net, np.array([[127, 127], [-128, 0]], np.int8))
    # (x + 1) >> 1 rounds half up: 1 -> 1, -3 -> -1; saturation at both ends
    assert y.tolist() == [[127, -128, 64, -1], [-128, 127, -63, -1]]


def test_mam_zero_candidate_rule():
    # row 0 has a zero weight: 0 competes in max/min; row 1 is dense: it does not
    w = np.array([[5, 0, 3], [5, 2, 3]], np.int8)
    net = QuantNetwork([QuantLayer(w, np.zeros(2, np.int32), "mam", 1, 0, False)])
    y = golden.run(net, np.array([[2, 9, 1]], np.int8))
    assert y.tolist() == [[10 + 0, 18 + 3]]


def test_float_inputs_need_input_scale():
    net = QuantNetwork([QuantLayer(np.ones((1, 2), np.int8), np.zeros(1, np.int32), "mac", 1, 0, False)])
    with pytest.raises(QNetError, match="input_scale: absent"):
        golden.run(net, np.zeros((1, 2), np.float32))
    net.input_scale = 0.5
    assert golden.prepare_inputs(net, np.array([[0.25, -0.75]])).tolist() == [[1, -2]]   # half away from 0


def test_wrong_input_width_named():
    net = QuantNetwork([QuantLayer(np.ones((1, 2), np.int8), np.zeros(1, np.int32), "mac", 1, 0, False)])
    with pytest.raises(QNetError, match="have 3 values per sample, the network takes 2"):
        golden.run(net, np.zeros((1, 3), np.int8))


# ---------------------------------------------------------------- the .npz format

def _good(tmp_path):
    rng = np.random.default_rng(0)
    net = random_qnet(rng)
    net.input_scale = 0.01
    path = tmp_path / "net.npz"
    save_qnet(net, path)
    return net, path


def test_round_trip(tmp_path):
    net, path = _good(tmp_path)
    again = load_qnet(path)
    x = random_inputs(np.random.default_rng(1), net.input_size)
    assert np.array_equal(golden.run(again, x), golden.run(net, x))
    assert again.input_scale == 0.01


def _rewrite(path, **changes):
    z = dict(np.load(path))
    for k, v in changes.items():
        if v is None:
            z.pop(k)
        else:
            z[k] = v
    np.savez(path, **z)


@pytest.mark.parametrize("changes,words", [
    ({"format": None}, "format: missing"),
    ({"format": np.array("other/9")}, "format: unknown format 'other/9'"),
    ({"layer0.weight": np.zeros((2, 2), np.float32)}, "layer0.weight: must be int8, not float32"),
    ({"layer0.weight": np.full((2, 2), -128, np.int8)}, "layer0.weight: holds -128"),
    ({"layer0.bias": np.zeros(5, np.int64)}, "layer0.bias: must be int32, not int64"),
    ({"layer0.mode": np.array("conv")}, "layer0.mode: must be 'mac' or 'mam', not 'conv'"),
    ({"layer0.mult": np.array(0)}, r"layer0.mult: must be an integer in \[1, 16777215\], not 0"),
    ({"layer0.mult": np.array(1 << 24)}, r"layer0.mult: must be an integer in \[1, 16777215\]"),
    ({"layer0.shift": np.array(63)}, r"layer0.shift: must be an integer in \[0, 62\], not 63"),
    ({"layer0.relu": np.array(1)}, "layer0.relu: must be a bool, not int64"),
    ({"num_layers": np.array(9)}, r"layer\d.weight: missing"),
    ({"input_scale": np.array(-1.0)}, "input_scale: must be a positive finite float"),
    ({"layer0.shift": None}, "layer0.shift: missing"),
])
def test_malformed_files_name_the_key(tmp_path, changes, words):
    _, path = _good(tmp_path)
    _rewrite(path, **changes)
    with pytest.raises(QNetError, match=words):
        load_qnet(path)


def test_shape_mismatch_between_layers(tmp_path):
    w0 = np.ones((3, 2), np.int8)
    w1 = np.ones((1, 4), np.int8)
    path = tmp_path / "n.npz"
    np.savez(path, format=np.array("mamfpga.qnet/1"), num_layers=np.array(2),
             **{f"layer{k}.{f}": v for k, w in enumerate((w0, w1)) for f, v in (
                 ("weight", w), ("bias", np.zeros(w.shape[0], np.int32)), ("mode", np.array("mac")),
                 ("mult", np.array(1)), ("shift", np.array(0)), ("relu", np.array(False)))})
    with pytest.raises(QNetError, match="layer1.weight: has 4 columns but layer0 has 3 rows"):
        load_qnet(path)


def test_truncated_file(tmp_path):
    _, path = _good(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(QNetError, match="truncated or corrupt|not a readable"):
        load_qnet(path)
