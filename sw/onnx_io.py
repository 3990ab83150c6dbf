"""ONNX in and out for the float Network IR.

Import walks the graph from its single input along the chain of supported
ops: Gemm (transA, transB, alpha, beta), MatMul (+ Add of a constant bias),
Relu, Flatten/Reshape of the input, Cast to float, Identity/Dropout, and the
MAM pattern that :func:`export_onnx` writes (Unsqueeze, Mul, ReduceMax,
ReduceMin, Add). What follows the last linear layer and only post-processes
its output (Softmax, LogSoftmax, ArgMax, and what skl2onnx adds: ZipMap,
ArrayFeatureExtractor, Cast, Reshape, ...) is dropped with a notice: the
class answer (the first index of the largest logit) does not change. Any
other op is refused by name and position.

Export writes a MAM layer in standard ops: Unsqueeze(x, 1) * W -> ReduceMax
and ReduceMin over the last axis -> Add -> Add bias. onnxruntime runs it; it
materialises the B x M x N products, as standard ops must.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mamfpga.outputs import atomic_write_bytes
from mamfpga.sw.network import Layer, ModelFormatError, Network

__all__ = ["import_onnx", "export_onnx", "POSTPROCESS_OPS"]

#: Ops that only post-process the last layer's output; dropped with a notice.
POSTPROCESS_OPS = {"Softmax", "LogSoftmax", "ArgMax", "ZipMap", "ArrayFeatureExtractor", "Cast",
                   "Reshape", "Identity", "Flatten", "TopK", "Squeeze", "Unsqueeze", "Concat",
                   "Normalizer", "Gather", "Shape", "Sigmoid"}
OPSET = 17
IR_VERSION = 8


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper

        g = model.graph
        self.g = g
        self.consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.nodes = list(g.node)
        self.position = {id(n): k for k, n in enumerate(self.nodes)}
        for n in self.nodes:                       # Constant nodes become constants
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def where(self, node) -> str:
        return f"{node.op_type} node {node.name or '?'} (position {self.position[id(node)]})"

    def const(self, name: str, node) -> np.ndarray:
        if name not in self.consts:
            raise ModelFormatError(f"{self.where(node)}: input {name!r} must be a constant (an initializer)")
        return self.consts[name]

    def only_consumer(self, tensor: str):
        users = [n for n in self.consumers.get(tensor, []) if n.op_type != "Constant"]
        return users


def import_onnx(path: str | os.PathLike, log: Callable[[str], None] = print) -> Network:
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelFormatError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    g = _Graph(model)
    inputs = [i for i in g.g.input if i.name not in g.consts]
    if len(inputs) != 1:
        raise ModelFormatError(f"{path}: expected one graph input, found {len(inputs)}")
    cur = inputs[0].name
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    input_size = int(np.prod([d for d in dims[1:] if d > 0])) if len(dims) > 1 else None
    layers: list[Layer] = []
    pending: dict | None = None          # a MatMul waiting for its bias Add
    mam_parts: dict | None = None
    dropped: list[str] = []
    input_index = None

    def add_layer(w, b, mode):
        b = np.broadcast_to(np.asarray(b, dtype=np.float64).reshape(-1), (w.shape[0],)).copy()
        layers.append(Layer(w, b, mode, False, name=f"layer{len(layers)}"))

    def finish_pending():
        nonlocal pending
        if pending is not None:
            add_layer(pending["w"], 0.0, "mac")
            pending = None

    def refuse(node):
        raise ModelFormatError(f"{path}: {g.where(node)}: unsupported op {node.op_type!r} (mamfpga takes "
                               "Gemm, MatMul+Add, Relu, Flatten/Reshape of the input, and its own MAM pattern)")

    def at_layer_boundary() -> bool:
        return bool(layers) and pending is None and mam_parts is None

    while True:
        users = g.only_consumer(cur)
        if not users:
            break
        if len(users) > 1:          # e.g. skl2onnx: Softmax and ArgMax both read the logits
            if at_layer_boundary() and all(_is_postprocess(g, u) for u in users):
                dropped += _downstream_ops(g, cur)
                break
            refuse(next((u for u in users if not _is_postprocess(g, u)), users[0]))
        node = users[0]
        op, a = node.op_type, _attrs(node)
        other = next((i for i in node.input if i != cur), None)
        if op == "Gemm":
            finish_pending()
            if a.get("transA", 0):
                raise ModelFormatError(f"{path}: {g.where(node)}: transA=1 (a transposed activation) "
                                       "is not supported")
            w = g.const(node.input[1], node).astype(np.float64)
            w = (w if a.get("transB", 0) else w.T) * a.get("alpha", 1.0)
            b = (g.const(node.input[2], node).astype(np.float64) * a.get("beta", 1.0)
                 if len(node.input) > 2 and node.input[2] else 0.0)
            add_layer(w, b, "mac")
        elif op == "MatMul":
            finish_pending()
            w = g.const(node.input[1], node).astype(np.float64)
            if w.ndim != 2:
                raise ModelFormatError(f"{path}: {g.where(node)}: weight must be 2-D, not {w.shape}")
            pending = {"w": w.T}
        elif op == "Add" and pending is not None:
            add_layer(pending["w"], g.const(other, node), "mac")
            pending = None
        elif op == "Unsqueeze" and _starts_mam(g, node):
            finish_pending()
            mul = g.consumers[node.output[0]][0]
            w = g.const(next(i for i in mul.input if i != node.output[0]), mul).astype(np.float64)
            mam_parts = {"w": w}
            cur = _mam_reduce(g, mul, path)
            continue
        elif op == "Add" and mam_parts is not None:
            add_layer(mam_parts["w"], g.const(other, node), "mam")
            mam_parts = None
        elif op == "Relu":
            finish_pending()
            if not layers or layers[-1].relu:
                raise ModelFormatError(f"{path}: {g.where(node)}: Relu must follow a linear layer")
            layers[-1].relu = True
        elif op in ("Identity", "Dropout"):
            pass
        elif op in ("Flatten", "Reshape", "Cast") and not layers and pending is None:
            pass                                    # shaping of the input
        elif op == "Gather" and not layers and pending is None and input_index is None \
                and a.get("axis", 0) == 1 and node.input[0] == cur and node.input[1] in g.consts \
                and g.consts[node.input[1]].ndim == 1:
            input_index = g.consts[node.input[1]].astype(np.int64)   # input selection (our export)
        elif at_layer_boundary() and _is_postprocess(g, node):
            dropped += _downstream_ops(g, cur)
            break
        else:
            refuse(node)
        cur = node.output[0]
    finish_pending()
    if mam_parts is not None:
        raise ModelFormatError(f"{path}: an incomplete MAM pattern (Unsqueeze/Mul/ReduceMax/ReduceMin/Add)")
    if not layers:
        raise ModelFormatError(f"{path}: no Gemm or MatMul layer found")
    if dropped:
        log(f"note: dropped post-processing after the last layer ({', '.join(dict.fromkeys(dropped))}); "
            "the class answer is the first index of the largest output")
    if input_index is not None and input_size is None:
        raise ModelFormatError(f"{path}: an input selection needs a graph input of known width")
    return Network(layers, input_size or layers[0].cols, input_index)


def _is_postprocess(g: _Graph, node) -> bool:
    """True when node and everything downstream of it are post-processing ops."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op_type not in POSTPROCESS_OPS:
            return False
        for out in n.output:
            todo += g.consumers.get(out, [])
    return True


def _downstream_ops(g: _Graph, tensor: str) -> list[str]:
    ops, todo, seen = [], list(g.consumers.get(tensor, [])), set()
    while todo:
        n = todo.pop(0)
        if id(n) in seen:
            continue
        seen.add(id(n))
        ops.append(n.op_type)
        for out in n.output:
            todo += g.consumers.get(out, [])
    return ops


def _starts_mam(g: _Graph, unsqueeze) -> bool:
    """Unsqueeze(x) feeding exactly one Mul with a constant 2-D weight: the MAM pattern."""
    users = g.consumers.get(unsqueeze.output[0], [])
    if len(users) != 1 or users[0].op_type != "Mul":
        return False
    other = [i for i in users[0].input if i != unsqueeze.output[0]]
    return len(other) == 1 and other[0] in g.consts and g.consts[other[0]].ndim == 2


def _mam_reduce(g: _Graph, mul, path) -> str:
    """After Mul(Unsqueeze(x), W): ReduceMax and ReduceMin of it, added. Returns the sum tensor."""
    users = g.consumers.get(mul.output[0], [])
    kinds = sorted(u.op_type for u in users)
    if kinds != ["ReduceMax", "ReduceMin"]:
        raise ModelFormatError(f"{path}: {g.where(mul)}: a MAM product must feed one ReduceMax and one "
                               f"ReduceMin, not {kinds}")
    outs = {u.output[0] for u in users}
    adds = [n for o in outs for n in g.consumers.get(o, []) if n.op_type == "Add"]
    if len(adds) != 2 or adds[0] is not adds[1]:
        raise ModelFormatError(f"{path}: {g.where(mul)}: ReduceMax and ReduceMin must be added together")
    return adds[0].output[0]


def export_onnx(net: Network, path: str | os.PathLike, *, batch: int | None = None) -> Path:
    """Write ``net`` as an ONNX model (opset 17) that onnxruntime runs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    cur = "input"
    if net.input_index is not None:
        inits.append(numpy_helper.from_array(np.asarray(net.input_index, dtype=np.int64), "input_index"))
        nodes.append(helper.make_node("Gather", ["input", "input_index"], ["selected"], axis=1))
        cur = "selected"
    for k, layer in enumerate(net.layers):
        w = layer.weight.astype(np.float32)
        b = layer.bias.astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"b{k}")]
        out = f"z{k}"
        if layer.mode == "mac":
            nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"b{k}"], [out], transB=1, name=f"layer{k}"))
        else:
            inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), f"axis1_{k}"))
            nodes += [
                helper.make_node("Unsqueeze", [cur, f"axis1_{k}"], [f"x3_{k}"], name=f"layer{k}_unsqueeze"),
                helper.make_node("Mul", [f"x3_{k}", f"W{k}"], [f"p{k}"], name=f"layer{k}_products"),
                helper.make_node("ReduceMax", [f"p{k}"], [f"max{k}"], axes=[2], keepdims=0, name=f"layer{k}_max"),
                helper.make_node("ReduceMin", [f"p{k}"], [f"min{k}"], axes=[2], keepdims=0, name=f"layer{k}_min"),
                helper.make_node("Add", [f"max{k}", f"min{k}"], [f"mm{k}"], name=f"layer{k}_maxmin"),
                helper.make_node("Add", [f"mm{k}", f"b{k}"], [out], name=f"layer{k}_bias"),
            ]
        if layer.relu:
            nodes.append(helper.make_node("Relu", [out], [f"a{k}"], name=f"layer{k}_relu"))
            out = f"a{k}"
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["output"]))
    graph = helper.make_graph(
        nodes, "mamfpga",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch or "batch", net.input_size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch or "batch", net.output_size])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mamfpga")
    # IR 8 is what opset 17 needs; newer onnx writes a newer IR than some runtimes read
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return atomic_write_bytes(path, model.SerializeToString())
