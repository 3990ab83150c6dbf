"""ONNX in and out for the float Network IR.

Import walks the graph from its single input along the chain of supported
ops: Gemm (transA, transB, alpha, beta), MatMul (+ Add of a constant bias),
Conv (1-D and 2-D; group 1, dilation 1, explicit or VALID padding),
MaxPool (no padding, floor), BatchNormalization (folded into the conv or
linear layer before it), Relu, Flatten/Reshape of the input or of a feature
map, Cast to float, Identity/Dropout, and the MAM pattern that
:func:`export_onnx` writes (Unsqueeze, Mul, ReduceMax, ReduceMin, Add). What follows the last linear layer and only post-processes
its output (Softmax, LogSoftmax, ArgMax, and what skl2onnx adds: ZipMap,
ArrayFeatureExtractor, Cast, Reshape, ...) is dropped with a notice: the
class answer (the first index of the largest logit) does not change. Any
other op is refused by name and position.

Export writes a MAM layer in standard ops: Unsqueeze(x, 1) * W -> ReduceMax
and ReduceMin over the product axis -> Add -> Add bias; a MAM convolution first
takes its windows with a one-hot Conv (outputs [B, C*KH*KW, OH, OW]) and
multiplies them by W as [M, C*KH*KW, 1, 1]. onnxruntime runs it; it
materialises the products, as standard ops must. A network with a feature-map
input takes [B, C, H, W].
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mamfpga.outputs import atomic_write_bytes
from mamfpga.sw.network import Layer, ModelFormatError, Network

__all__ = ["import_onnx", "export_onnx", "read_onnx", "POSTPROCESS_OPS"]

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
    def __init__(self, model, path=None):
        self.path = f"{path}: " if path is not None else ""
        g = model.graph
        self.g = g
        self.nodes = list(g.node)
        self.position = {id(n): k for k, n in enumerate(self.nodes)}
        self.consts = {t.name: self._array(t, f"{self.path}initializer {t.name!r}") for t in g.initializer}
        for n in self.nodes:                       # Constant nodes become constants
            if n.op_type == "Constant":
                value = _attrs(n).get("value")
                if value is None or not n.output:
                    raise ModelFormatError(f"{self.path}{self.where(n)}: a Constant without a tensor value")
                self.consts[n.output[0]] = self._array(value, self.path + self.where(n))
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    @staticmethod
    def _array(t, what: str) -> np.ndarray:
        """A tensor's values, or one line naming it: unreadable (its dims and data disagree, an
        unknown type), or not finite."""
        from onnx import numpy_helper

        try:
            a = numpy_helper.to_array(t)
        except Exception as exc:                  # onnx raises ValueError, TypeError, KeyError ...
            raise ModelFormatError(f"{what}: unreadable tensor (dims {list(t.dims)}, data type {t.data_type}): "
                                   f"{exc}") from None
        if a.dtype.kind not in "biuf":
            raise ModelFormatError(f"{what}: tensor of {a.dtype} values, not numbers")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ModelFormatError(f"{what}: tensor holds NaN or infinite values")
        return a

    def where(self, node) -> str:
        return f"{node.op_type} node {node.name or '?'} (position {self.position[id(node)]})"

    def const_input(self, node, k: int) -> np.ndarray:
        """Input ``k`` of ``node``, which must be a constant."""
        if len(node.input) <= k or not node.input[k]:
            raise ModelFormatError(f"{self.path}{self.where(node)}: has {len(node.input)} inputs; input {k + 1} "
                                   "(a constant) is missing")
        return self.const(node.input[k], node)

    def const(self, name: str, node) -> np.ndarray:
        if name not in self.consts:
            raise ModelFormatError(f"{self.where(node)}: input {name!r} must be a constant (an initializer)")
        return self.consts[name]

    def only_consumer(self, tensor: str):
        users = [n for n in self.consumers.get(tensor, []) if n.op_type != "Constant"]
        return users


def read_onnx(path: str | os.PathLike):
    """The ONNX model in ``path``; ModelFormatError (one line) when it cannot be read."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelFormatError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None


def _graph_input(g: "_Graph", path):
    """The graph's one input that is not a constant."""
    inputs = [i for i in g.g.input if i.name not in g.consts]
    if len(inputs) != 1:
        raise ModelFormatError(f"{path}: expected one graph input, found {len(inputs)}")
    return inputs[0]


def import_onnx(path: str | os.PathLike, log: Callable[[str], None] = print) -> Network:
    path = Path(path)
    g = _Graph(read_onnx(path), path)
    graph_input = _graph_input(g, path)
    cur = graph_input.name
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
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
                               "Gemm, MatMul+Add, Conv, MaxPool, BatchNormalization, Relu, Flatten/Reshape, and its own "
                               "MAM pattern)")

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
            w = g.const_input(node, 1).astype(np.float64)
            w = (w if a.get("transB", 0) else w.T) * a.get("alpha", 1.0)
            b = (g.const_input(node, 2).astype(np.float64) * a.get("beta", 1.0)
                 if len(node.input) > 2 and node.input[2] else 0.0)
            add_layer(w, b, "mac")
        elif op == "MatMul":
            finish_pending()
            w = g.const_input(node, 1).astype(np.float64)
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
            if "layer" in mam_parts:
                lay = mam_parts["layer"]
                lay.bias = np.broadcast_to(g.const(other, node).astype(np.float64).reshape(-1), (lay.rows,)).copy()
            else:
                add_layer(mam_parts["w"], g.const(other, node), "mam")
            mam_parts = None
        elif op == "Conv":
            finish_pending()
            layer = _conv_layer(g, node, path, f"layer{len(layers)}")
            users = g.consumers.get(node.output[0], [])
            if len(users) == 1 and users[0].op_type == "Unsqueeze" and _starts_mam(g, users[0], ndim=4):
                # the MAM convolution export_onnx writes: windows (a one-hot Conv), products, max + min
                mul = g.consumers[users[0].output[0]][0]
                wm = g.const(next(i for i in mul.input if i != users[0].output[0]), mul).astype(np.float64)
                layer = _mam_conv_layer(g, node, layer, wm, path)
                layers.append(layer)
                mam_parts = {"layer": layer}
                cur = _mam_reduce(g, mul, path)
                continue
            layers.append(layer)
        elif op == "MaxPool":
            finish_pending()
            layers.append(_pool_layer(g, node, path, f"layer{len(layers)}"))
        elif op == "BatchNormalization":
            finish_pending()
            if not layers or layers[-1].kind == "maxpool2d" or layers[-1].relu:
                raise ModelFormatError(f"{path}: {g.where(node)}: BatchNormalization must directly follow a "
                                       "Conv or linear layer (it is folded into it)")
            _fold_onnx_bn(g, node, layers[-1], path)
        elif op == "Relu":
            finish_pending()
            target = layers[-1] if layers else None
            if target is not None and target.kind == "maxpool2d" and len(layers) > 1 \
                    and layers[-2].kind != "maxpool2d":
                target = layers[-2]            # Relu after MaxPool = MaxPool after Relu (max is monotone)
            if target is None or target.kind == "maxpool2d" or target.relu:
                raise ModelFormatError(f"{path}: {g.where(node)}: Relu must follow a linear or Conv layer")
            target.relu = True
        elif op in ("Identity", "Dropout"):
            pass
        elif op in ("Flatten", "Reshape", "Cast") and not layers and pending is None:
            pass                                    # shaping of the input
        elif op in ("Flatten", "Reshape") and layers and layers[-1].kind != "dense" and pending is None \
                and _flattens(g, node):
            pass                                    # a feature map read flattened by the next layer
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
    if layers[0].kind != "dense":
        shape = dims[1:]
        if len(shape) == 2:
            shape = [shape[0], 1, shape[1]]                 # Conv1d: a feature map of height 1
        if len(shape) != 3 or min(shape) < 1:
            raise ModelFormatError(f"{path}: a model that starts with Conv or MaxPool needs a graph input of "
                                   f"known shape [B, C, H, W] or [B, C, L], not {dims}")
        return Network(layers, int(np.prod(shape)), None, input_shape=tuple(shape))
    return Network(layers, input_size or layers[0].cols, input_index)


def _flattens(g: _Graph, node) -> bool:
    """Flatten(axis 1), or Reshape to [B, -1] / [0, -1] / [-1, N]: the next layer reads it flattened."""
    if node.op_type == "Flatten":
        return _attrs(node).get("axis", 1) == 1
    shape = g.consts.get(node.input[1]) if len(node.input) > 1 else None
    return shape is not None and shape.ndim == 1 and len(shape) == 2


def _ints_attr(a: dict, key: str, n: int, default: int, g: _Graph, node, path) -> list[int]:
    v = list(a.get(key, [default] * n))
    if len(v) != n:
        raise ModelFormatError(f"{path}: {g.where(node)}: {key} {v} should have {n} entries")
    return [int(e) for e in v]


def _conv_layer(g: _Graph, node, path, name: str) -> Layer:
    a = _attrs(node)
    w = g.const_input(node, 1).astype(np.float64)
    if w.ndim not in (3, 4):
        raise ModelFormatError(f"{path}: {g.where(node)}: only 1-D and 2-D convolutions are supported "
                               f"(weight of shape {w.shape})")
    nd = w.ndim - 2
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1] * nd)) or auto not in ("NOTSET", "VALID"):
        raise ModelFormatError(f"{path}: {g.where(node)}: only group=1, dilation 1 and explicit padding are "
                               f"supported (group={a.get('group', 1)}, dilations={a.get('dilations')}, "
                               f"auto_pad={auto})")
    pads = _ints_attr(a, "pads", 2 * nd, 0, g, node, path)
    strides = _ints_attr(a, "strides", nd, 1, g, node, path)
    b = (g.const_input(node, 2).astype(np.float64) if len(node.input) > 2 and node.input[2]
         else np.zeros(w.shape[0]))
    if nd == 1:
        return Layer(w[:, :, None, :], b, "mac", False, name, kind="conv2d", stride=(1, strides[0]),
                     padding=(0, pads[0], 0, pads[1]))
    return Layer(w, b, "mac", False, name, kind="conv2d", stride=tuple(strides), padding=tuple(pads))


def _pool_layer(g: _Graph, node, path, name: str) -> Layer:
    a = _attrs(node)
    if "kernel_shape" not in a:
        raise ModelFormatError(f"{g.path}{g.where(node)}: no kernel_shape attribute")
    kernel = [int(v) for v in a["kernel_shape"]]
    nd = len(kernel)
    if nd not in (1, 2) or any(_ints_attr(a, "pads", 2 * nd, 0, g, node, path)) or a.get("ceil_mode", 0) \
            or any(d != 1 for d in a.get("dilations", [1] * nd)) or len(node.output) > 1:
        raise ModelFormatError(f"{path}: {g.where(node)}: only 1-D and 2-D max pooling without padding, "
                               "dilation, ceil_mode or indices is supported")
    strides = _ints_attr(a, "strides", nd, 1, g, node, path)
    if nd == 1:
        return Layer(None, None, name=name, kind="maxpool2d", kernel=(1, kernel[0]), stride=(1, strides[0]))
    return Layer(None, None, name=name, kind="maxpool2d", kernel=tuple(kernel), stride=tuple(strides))


def _fold_onnx_bn(g: _Graph, node, layer: Layer, path) -> None:
    scale, bias, mean, var = (g.const_input(node, k).astype(np.float64) for k in range(1, 5))
    eps = float(_attrs(node).get("epsilon", 1e-5))
    if len(scale) != layer.rows:
        raise ModelFormatError(f"{path}: {g.where(node)}: {len(scale)} channels, but the layer before it has "
                               f"{layer.rows} outputs")
    s = scale / np.sqrt(var + eps)
    layer.weight = layer.weight * s.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
    layer.bias = (layer.bias - mean) * s + bias


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


def _starts_mam(g: _Graph, unsqueeze, ndim: int = 2) -> bool:
    """Unsqueeze(x) feeding exactly one Mul with a constant weight of ``ndim`` dimensions (2 for
    a dense layer, 4 for a convolution's [M, C*KH*KW, 1, 1]): the MAM pattern."""
    users = g.consumers.get(unsqueeze.output[0], [])
    if len(users) != 1 or users[0].op_type != "Mul":
        return False
    other = [i for i in users[0].input if i != unsqueeze.output[0]]
    return len(other) == 1 and other[0] in g.consts and g.consts[other[0]].ndim == ndim


def _window_weight(c: int, kh: int, kw: int) -> np.ndarray:
    """The one-hot Conv weight [C*KH*KW, C, KH, KW] whose outputs are a window's values, in
    C, KH, KW order (what torch's unfold gives)."""
    return np.eye(c * kh * kw, dtype=np.float32).reshape(c * kh * kw, c, kh, kw)


def _mam_conv_layer(g: _Graph, conv, windows: Layer, wm: np.ndarray, path) -> Layer:
    """A MAM conv layer from its window Conv (``windows``) and the product weight ``wm``."""
    cols, c, kh, kw = windows.weight.shape
    if not np.array_equal(windows.weight, _window_weight(c, kh, kw)) or wm.shape[1:] != (cols, 1, 1):
        raise ModelFormatError(f"{path}: {g.where(conv)}: a Conv feeding a MAM product must be the one-hot "
                               f"window extractor, and the product weight [M, {cols}, 1, 1], not {wm.shape}")
    if np.any(windows.bias):
        raise ModelFormatError(f"{path}: {g.where(conv)}: the window extractor of a MAM conv has no bias")
    return Layer(wm.reshape(len(wm), c, kh, kw), np.zeros(len(wm)), "mam", False, windows.name, kind="conv2d",
                 stride=windows.stride, padding=windows.padding)


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
    shapes = net.shapes
    for k, layer in enumerate(net.layers):
        out = f"z{k}"
        if layer.kind == "maxpool2d":
            nodes.append(helper.make_node("MaxPool", [cur], [out], kernel_shape=list(layer.kernel),
                                          strides=list(layer.stride), name=f"layer{k}"))
            cur = out
            continue
        if layer.kind == "dense" and len(shapes[k]) == 3:
            nodes.append(helper.make_node("Flatten", [cur], [f"flat{k}"], axis=1, name=f"layer{k}_flatten"))
            cur = f"flat{k}"
        w = layer.weight.astype(np.float32)
        b = layer.bias.astype(np.float32)
        conv = dict(pads=list(layer.padding), strides=list(layer.stride)) if layer.kind == "conv2d" else None
        if layer.mode == "mac":
            inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"b{k}")]
            if conv:
                nodes.append(helper.make_node("Conv", [cur, f"W{k}", f"b{k}"], [out], name=f"layer{k}", **conv))
            else:
                nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"b{k}"], [out], transB=1, name=f"layer{k}"))
        else:
            if conv:
                # windows by a one-hot Conv [B, C*KH*KW, OH, OW], then the products with W [M, C*KH*KW, 1, 1]
                m, c, kh, kw = w.shape
                inits += [numpy_helper.from_array(_window_weight(c, kh, kw), f"E{k}"),
                          numpy_helper.from_array(w.reshape(m, c * kh * kw, 1, 1), f"W{k}"),
                          numpy_helper.from_array(b.reshape(m, 1, 1), f"b{k}")]
                nodes.append(helper.make_node("Conv", [cur, f"E{k}"], [f"win{k}"], name=f"layer{k}_windows", **conv))
                cur = f"win{k}"
            else:
                inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"b{k}")]
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
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       [batch or "batch", *(net.input_shape if net.input_index is None
                                                            else (net.input_size,))])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch or "batch", net.output_size])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mamfpga")
    # IR 8 is what opset 17 needs; newer onnx writes a newer IR than some runtimes read
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return atomic_write_bytes(path, model.SerializeToString())
