"""QONNX import: Brevitas models exported with export_qonnx, against qonnx's own execution and
through the RTL; what the contract cannot express refused by node name."""

from __future__ import annotations

import numpy as np
import pytest

from mamfpga import cli
from mamfpga.sw import golden
from mamfpga.sw.network import ModelFormatError
from mamfpga.sw.qnet import load_qnet
from mamfpga.sw.qonnx_io import exactness, import_qonnx

brevitas = pytest.importorskip("brevitas", reason="Brevitas is the optional extra mamfpga[qonnx]")
pytest.importorskip("qonnx", reason="qonnx is the optional extra mamfpga[qonnx]")


# ----------------------------------------------------------------------------- the reference

def qonnx_execute(path, x: np.ndarray) -> np.ndarray:
    """The model's own output for float inputs ``x``, by qonnx's executor (onnxruntime per node).

    Two things are adjusted for it, neither touching the arithmetic: the one-node models qonnx
    builds get IR version 10 (onnx 1.23 writes 14, onnxruntime 1.31 reads up to 13), and the
    batch of 1 that the exporter fixed in Reshape shapes becomes -1."""
    import qonnx.core.onnx_exec as oe
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    make = oe.qonnx_make_model

    def make_ir10(*a, **k):
        m = make(*a, **k)
        m.ir_version = 10
        return m

    m = cleanup_model(ModelWrapper(str(path)))
    for n in m.graph.node:
        if n.op_type == "Reshape":
            shape = m.get_initializer(n.input[1])
            if shape is not None and len(shape) and shape[0] == 1:
                shape = shape.copy()
                shape[0] = -1
                m.set_initializer(n.input[1], shape)
    i, o = m.graph.input[0].name, m.graph.output[0].name
    out_shape = m.get_tensor_shape(o)
    del m.graph.value_info[:]
    m.set_tensor_shape(i, list(x.shape))
    m.set_tensor_shape(o, [len(x), *out_shape[1:]])
    m = m.transform(InferShapes())
    oe.qonnx_make_model = make_ir10
    try:
        return np.asarray(oe.execute_onnx(m, {i: x.astype(np.float32)})[o]).reshape(len(x), -1)
    finally:
        oe.qonnx_make_model = make


# ----------------------------------------------------------------------------- Brevitas models

def _models():
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat, Int32Bias
    from torch import nn

    def linear(n, m, bits, per_channel):
        return qnn.QuantLinear(n, m, bias=True, weight_bit_width=bits, bias_quant=Int32Bias, return_quant_tensor=True,
                               weight_quant=Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat)

    def mlp(bits, per_channel):
        return nn.Sequential(qnn.QuantIdentity(bit_width=8, return_quant_tensor=True),
                             linear(64, 32, bits, per_channel),
                             qnn.QuantReLU(bit_width=8, return_quant_tensor=True),     # unsigned, [0, 255]
                             linear(32, 10, bits, per_channel),
                             qnn.QuantIdentity(bit_width=8, return_quant_tensor=False))

    def conv(c, m, **kw):
        return qnn.QuantConv2d(c, m, 3, weight_bit_width=4, weight_quant=Int8WeightPerChannelFloat,
                               bias_quant=Int32Bias, return_quant_tensor=True, **kw)

    cnn = nn.Sequential(qnn.QuantIdentity(bit_width=8, return_quant_tensor=True),
                        conv(1, 8, padding=1), qnn.QuantReLU(bit_width=8, return_quant_tensor=True), nn.MaxPool2d(2),
                        conv(8, 8), qnn.QuantReLU(bit_width=4, return_quant_tensor=True), nn.Flatten(),
                        linear(32, 10, 4, True), qnn.QuantIdentity(bit_width=8, return_quant_tensor=False))
    torch.manual_seed(0)
    return {"mlp-w4-a8": (mlp(4, False), (64,)), "mlp-w8-per-tensor": (mlp(8, False), (64,)),
            "cnn-w4-per-channel": (cnn, (1, 8, 8))}


def export(model, shape, path):
    """Calibrate the activation scales (a few batches in training mode), then export_qonnx."""
    import torch
    from brevitas.export import export_qonnx

    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(64, *shape))
    model.eval()
    export_qonnx(model, torch.randn(1, *shape), str(path))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qonnx")
    return {name: (export(m, shape, folder / f"{name}.onnx"), shape) for name, (m, shape) in _models().items()}


# The import's mults are 24 bits wide, so the requantization's error (2**-25 relative) is no
# larger than float32's own rounding in qonnx's execution: an output can still differ where the
# float computation lands within that error of a rounding boundary. Measured over four export
# seeds (the export is not reproducible to the bit here: the calibration varies from run to run),
# 2000 inputs each: every output value equal to qonnx's, every class. The bounds, asserted:
AGREE = {"mlp-w4-a8": 0.999, "mlp-w8-per-tensor": 0.999, "cnn-w4-per-channel": 0.999}
MAX_STEPS = {"mlp-w4-a8": 1, "mlp-w8-per-tensor": 1, "cnn-w4-per-channel": 1}


@pytest.mark.parametrize("name", list(AGREE))
def test_brevitas_model_matches_qonnx_execution(exported, name):
    path, shape = exported[name]
    net, report = import_qonnx(path)
    x = np.random.default_rng(1).standard_normal((2000, *shape)).astype(np.float32)
    want = qonnx_execute(path, x)
    got = golden.run(net, x.reshape(len(x), -1)).astype(np.float64) * net.output_scale
    steps = np.rint(np.abs(got - want) / net.output_scale)
    assert steps.max() <= MAX_STEPS[name], f"an output {steps.max():.0f} steps from the model's"
    assert (steps == 0).mean() >= AGREE[name]
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.995
    # weights of the model's own bit width, per-channel scales where the model has them
    weighted = [l for l in net.layers if l.weight is not None]
    bits = 8 if "w8" in name else 4
    assert all(l.weight_bits == bits and np.abs(l.weight.astype(int)).max() <= 2 ** (bits - 1) - 1 for l in weighted)
    assert ("per-channel" in name) == any(np.ndim(l.mult) > 0 for l in weighted)
    # layer by layer: few outputs differ from the exact requantization, by one step, and each
    # lies within the mult's deviation of a rounding boundary (or on a tie)
    e = exactness(net, report, x)
    assert e.differ <= 1e-3 * e.total and e.worst <= 1 and e.unexplained == 0, e


def test_quantize_cli_needs_no_calibration_and_reports_scales(exported, tmp_path, capsys):
    path, shape = exported["cnn-w4-per-channel"]
    out = tmp_path / "net.npz"
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(2).standard_normal((200, *shape)).astype(np.float32))
    assert cli.main(["quantize", str(path), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "imported QONNX: 4 layers (conv2d mac, maxpool2d, conv2d mac, mac)" in text
    assert "worst-case deviation" in text
    net = load_qnet(out)
    assert [l.weight_bits for l in net.layers] == [4, None, 4, 4]
    assert cli.main(["quantize", str(path), "-o", str(out), "--force", "--calib", str(x)]) == 0
    assert "layer outputs differ from the model's exact requantization" in capsys.readouterr().out
    # the requantizers' mult: 24 bits by default (the compiler builds them that wide), 16 on request
    from mamfpga.compile import compile_network
    from mamfpga.compile.arch import ArchConfig
    assert compile_network(net, ArchConfig(pes=1, lanes=1)).config.mult_bits == 24
    assert cli.main(["quantize", str(path), "-o", str(out), "--force", "--mult-bits", "16"]) == 0
    net16 = load_qnet(out)
    assert all(np.max(l.mult) < 2 ** 16 for l in net16.layers if l.weight is not None)
    assert compile_network(net16, ArchConfig(pes=1, lanes=1)).config.mult_bits == 16
    capsys.readouterr()
    out2 = tmp_path / "other.npz"
    assert cli.main(["quantize", str(path), "-o", str(out2), "--mult-bits", "25"]) == 2
    assert "16 to 24" in capsys.readouterr().err and not out2.exists()


def test_power_of_two_scales_bit_exact(tmp_path):
    """Brevitas's FixedPoint quantizers (power-of-two scales, 8-bit ReLU): the mult is exact and
    the requantization rounds halves to even as QONNX does, so every output equals the model's
    for inputs on the input's grid (float inputs add the contract's own input rounding, half away
    from zero, which differs from QONNX's only on exact ties)."""
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias,
                                Uint8ActPerTensorFixedPoint)
    from torch import nn

    def linear(n, m):
        return qnn.QuantLinear(n, m, bias=True, weight_bit_width=4, weight_quant=Int8WeightPerTensorFixedPoint,
                               bias_quant=Int32Bias, return_quant_tensor=True)

    model = nn.Sequential(qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
                          linear(64, 32), qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
                          linear(32, 10), qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint))
    path = export(model, (64,), tmp_path / "pot.onnx")
    net, report = import_qonnx(path)
    assert all(l.rounding == "half_even" for l in net.layers)
    assert all(s.worst_steps == 0 for s in report.scales)             # mult / 2**shift is the ratio
    x = (np.random.default_rng(4).integers(-128, 128, (2000, 64)) * net.input_scale).astype(np.float32)
    got = golden.run(net, x).astype(np.float64) * net.output_scale
    assert np.array_equal(got, qonnx_execute(path, x).astype(np.float64))
    e = exactness(net, report, x)
    assert e.differ == 0


@pytest.mark.sim
@pytest.mark.parametrize("name", list(AGREE))
def test_imported_model_on_the_rtl_bit_exact(exported, tmp_path, name):
    """Each Brevitas model, imported (24-bit mults, unsigned 8-bit activations, 4-bit weights),
    on the generated RTL: 0 mismatches against the golden model, cycles equal to the model's."""
    import mamfpga.compile as compiler
    from mamfpga.compile.arch import ArchConfig
    from mamfpga.hw.emit import emit
    from mamfpga.sim.cosim import cosimulate

    path, shape = exported[name]
    net, _ = import_qonnx(path)
    program = compiler.compile_network(net, ArchConfig(pes=2, lanes=2))
    assert program.config.mult_bits == 24
    x = net.quantize_input(np.random.default_rng(3).standard_normal((20, int(np.prod(shape)))))
    res = cosimulate(program, emit(program, tmp_path / "build"), x)
    assert res.mismatches == 0, res.first_mismatch
    assert set(res.cycles) == {program.cycles_model}


# ----------------------------------------------------------------------------- refusals

def test_unsigned_output_refused_by_node(tmp_path, capsys):
    """An unsigned 8-bit output quantizer: the network's outputs are int8."""
    from brevitas import nn as qnn
    from torch import nn

    model = nn.Sequential(qnn.QuantIdentity(bit_width=8, return_quant_tensor=True),
                          qnn.QuantLinear(16, 8, bias=False, weight_bit_width=4, return_quant_tensor=True),
                          qnn.QuantReLU(bit_width=8))
    path = export(model, (16,), tmp_path / "relu_out.onnx")
    out = tmp_path / "net.npz"
    assert cli.main(["quantize", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output quantizer of" in err[0] and "unsigned 8-bit [0, 255]" in err[0]
    assert not out.exists()


def _graph(tmp_path, *, act=None, extra_nodes=(), out_quant=True, weight_zero=0.0, quant_op="Quant"):
    """A hand-written QONNX graph: Quant(input) -> Gemm(Quant(W)) [-> extra] [-> Quant]."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, v):
        return numpy_helper.from_array(np.asarray(v, np.float32), name)

    inits = [const("W", np.arange(12).reshape(3, 4) / 10 - 0.5), const("s_in", 0.05), const("s_w", 0.1),
             const("s_out", 0.2), const("z", 0.0), const("zw", weight_zero), const("b8", 8), const("b4", 4)]
    act = act or {"signed": 1, "narrow": 0}
    nodes = [helper.make_node("Quant", ["x", "s_in", "z", "b8"], ["xq"], name="qin", domain="qonnx.custom_op.general",
                              signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node(quant_op, ["W", "s_w", "zw", "b4"], ["wq"], name="qw", domain="qonnx.custom_op.general",
                              signed=1, narrow=1, rounding_mode="ROUND"),
             helper.make_node("Gemm", ["xq", "wq"], ["h"], name="fc", transB=1)]
    last = "h"
    for k, op in enumerate(extra_nodes):
        nodes.append(helper.make_node(op, [last], [f"e{k}"], name=f"extra{k}"))
        last = f"e{k}"
    if out_quant:
        nodes.append(helper.make_node("Quant", [last, "s_out", "z", "b8"], ["y"], name="qout",
                                      domain="qonnx.custom_op.general", rounding_mode="ROUND", **act))
        last = "y"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, 3])], inits)
    path = tmp_path / "g.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                                         helper.make_opsetid("qonnx.custom_op.general", 1)])
                     .SerializeToString())
    return path


def test_hand_written_graph_imports_exactly(tmp_path):
    net, report = import_qonnx(_graph(tmp_path))
    (layer,) = net.layers
    w = np.clip(np.round((np.arange(12).reshape(3, 4) / 10 - 0.5) / 0.1), -7, 7)
    assert np.array_equal(layer.weight, w) and layer.weight_bits == 4 and not layer.relu
    # s_acc / s_out = 0.05 * 0.1 / 0.2 = 1/40: not a power of two, 16-bit mult
    assert net.input_scale == pytest.approx(0.05) and net.output_scale == pytest.approx(0.2)
    assert layer.mult / 2 ** layer.shift == pytest.approx(1 / 40, rel=2 ** -16)
    assert report.scales[0].worst_steps < 0.01


@pytest.mark.parametrize("kw, match", [
    (dict(act={"signed": 1, "narrow": 1}), r"Quant node qout \(position 3\): activation quantizer 8-bit signed narrow"),
    (dict(act={"signed": 0, "narrow": 0}, extra_nodes=("Relu",)), r"the output quantizer of fc is unsigned 8-bit"),
    (dict(act={"signed": 0, "narrow": 1}), r"qout \(position 3\): activation quantizer 8-bit unsigned narrow"),
    (dict(extra_nodes=("Sigmoid",)), r"Sigmoid node extra0 \(position 3\): unsupported op 'Sigmoid'"),
    (dict(out_quant=False), r"Gemm node fc \(position 2\): the last layer's output has no Quant node"),
    (dict(weight_zero=1.0), r"Quant node qw \(position 1\): zero point \[1.0\] is not 0"),
    (dict(quant_op="BipolarQuant"), r"BipolarQuant node qw \(position 1\): BipolarQuant is not supported"),
])
def test_unmappable_graph_refused_by_node(tmp_path, kw, match):
    with pytest.raises(ModelFormatError, match=match):
        import_qonnx(_graph(tmp_path, **kw))


def test_unmappable_graph_cli_one_line_nothing_written(tmp_path, capsys):
    path = _graph(tmp_path, extra_nodes=("Sigmoid",))
    out = tmp_path / "net.npz"
    assert cli.main(["quantize", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Sigmoid" in err[0] and not out.exists()


def test_float_onnx_still_needs_calibration(tmp_path, capsys):
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                          [numpy_helper.from_array(np.ones((3, 4), np.float32), "W")])
    path = tmp_path / "f.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    assert cli.main(["quantize", str(path), "-o", str(tmp_path / "n.npz")]) == 2
    assert "--calib is needed" in capsys.readouterr().err
