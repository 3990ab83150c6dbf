import copy
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from mamfpga.sw import data, golden, prune
from mamfpga.sw.network import ModelFormatError, from_torch, to_torch
from mamfpga.sw.onnx_io import export_onnx, import_onnx
from mamfpga.sw.qnet import QNetError
from mamfpga.sw.quantize import mult_shift, quantize
from mamfpga.sw.simplify import simplify
from mamfpga.sw.train import TrainConfig, accuracy, build_mlp, fit


@pytest.fixture(scope="module")
def digits():
    return data.load()


@pytest.fixture(scope="module")
def pruned_mam(digits):
    model = build_mlp(64, 10, (256, 256), mode="mam")
    fit(model, digits, TrainConfig(epochs=40, vc_epochs=12), progress=False)
    prune.prune_model(model, "gmp", 0.99)
    return model


def _quant_acc(q, ds):
    return float((golden.classify(golden.run(q, ds.x_test)) == ds.y_test).mean())


def test_mult_shift():
    for scale in (1e-9, 3.7e-5, 0.5, 0.999, 1.0, 123.4, 65535.0):
        mult, shift = mult_shift(scale)
        assert 1 <= mult < 2**16 and 0 <= shift <= 62
        assert abs(mult / 2**shift - scale) <= scale * 2**-15 + 2**-62
    # the import's 24-bit mults: 2**-23 relative, trailing zeros shifted out (a power of two
    # stays a narrow mult, same value)
    for scale in (3.7e-5, 0.999, 1 / 3, 123.4):
        mult, shift = mult_shift(scale, 24)
        assert 1 <= mult < 2**24 and abs(mult / 2**shift - scale) <= scale * 2**-23
    assert mult_shift(0.375, 24) == (3, 3) and mult_shift(2.0 ** -40, 24) == (1, 40)
    with pytest.raises(QNetError):
        mult_shift(2.0 ** 24, 24)


def test_quantized_mam_within_one_point_of_float(pruned_mam, digits):
    net, _ = simplify(from_torch(pruned_mam))
    f_acc = accuracy(pruned_mam, digits.x_test, digits.y_test)
    q = quantize(net, digits.x_train)
    assert q.extra.get("input_index") is not None              # dead inputs were dropped
    assert abs(_quant_acc(q, digits) - f_acc) <= 0.01


def test_torch_onnx_export_agrees(digits, tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.as_tensor(digits.x_train)), torch.as_tensor(digits.y_train)).backward()
        opt.step()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(nn.Sequential(model, nn.Softmax(dim=1)), (torch.zeros(1, 64),), str(path), dynamo=False)
    notes = []
    net = import_onnx(path, log=notes.append)
    assert any("Softmax" in n for n in notes)
    q = quantize(net, digits.x_train)
    with torch.no_grad():
        ref = model(torch.as_tensor(digits.x_test)).argmax(1).numpy()
    agree = float((golden.classify(golden.run(q, digits.x_test)) == ref).mean())
    assert agree >= 0.97, agree


def test_sklearn_mlp_through_skl2onnx_agrees(digits, tmp_path):
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((64,), max_iter=300, random_state=0).fit(digits.x_train, digits.y_train)
    path = tmp_path / "skl.onnx"
    path.write_bytes(to_onnx(clf, digits.x_train[:1].astype(np.float32)).SerializeToString())
    notes = []
    net = import_onnx(path, log=notes.append)
    assert "ZipMap" in notes[0] and "ArgMax" in notes[0]
    q = quantize(net, digits.x_train)
    agree = float((golden.classify(golden.run(q, digits.x_test)) == clf.predict(digits.x_test)).mean())
    assert agree >= 0.97, agree


def test_mam_export_runs_in_onnxruntime_and_reimports(pruned_mam, digits, tmp_path):
    net, _ = simplify(from_torch(pruned_mam))
    path = tmp_path / "mam.onnx"
    export_onnx(net, path)
    y = ort.InferenceSession(str(path)).run(None, {"input": digits.x_test})[0]
    with torch.no_grad():
        ref = pruned_mam(torch.as_tensor(digits.x_test)).numpy()
    assert np.abs(y - ref).max() < 1e-4
    back = import_onnx(path, log=lambda s: None)
    assert [l.mode for l in back.layers] == [l.mode for l in net.layers]
    assert np.abs(back.forward(digits.x_test) - ref).max() < 1e-4


def test_unsupported_op_refused_by_name_and_position(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Tanh", ["h"], ["t"], name="act"),
             helper.make_node("MatMul", ["t", "W2"], ["y"], name="mm2")]
    w2 = numpy_helper.from_array(np.ones((3, 2), np.float32), "W2")
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w, w2])
    path = tmp_path / "t.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(ModelFormatError, match=r"Tanh node act \(position 1\): unsupported op 'Tanh'"):
        import_onnx(path)


def test_blend_beta_refused():
    m = build_mlp(4, 2, (3,), mode="mam")
    m[0].beta = 0.4
    with pytest.raises(ModelFormatError, match="beta=0.4 is a MAC/MAM blend"):
        from_torch(m)


def test_to_torch_roundtrip_equal(pruned_mam, digits):
    net = from_torch(pruned_mam)
    with torch.no_grad():
        a = pruned_mam(torch.as_tensor(digits.x_test))
        b = to_torch(net)(torch.as_tensor(digits.x_test))
    assert torch.allclose(a, b, atol=1e-5)
    assert copy.deepcopy(net).nnz() == net.nnz()
