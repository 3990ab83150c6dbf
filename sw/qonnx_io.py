"""QONNX import: a model quantized elsewhere (Brevitas ``export_qonnx``) to a QuantNetwork.

A QONNX graph carries its own quantization in ``Quant`` nodes
(``y = s * (clip(round(x / s + z), qmin, qmax) - z)``, qmin/qmax from the bit width,
signedness and narrow range). The integer network is read off the model's own scales; no
calibration data is needed:

- the input's Quant (signed 8-bit) gives ``input_scale``;
- a Quant on a constant weight (2-8 bits, per tensor or per output channel, zero point 0)
  gives the int8 weights W_q = clip(round(W / s_w)) exactly, and the layer's
  ``weight_bits``;
- the bias (a Quant, Brevitas's Int32Bias, or float) becomes int32 at the accumulator's
  scale s_acc = s_in * s_w (per channel);
- the Quant after a layer (after its Relu, if any) gives the output scale s_out; each
  row's requantization ``mult / 2**shift`` approximates s_acc / s_out (a mult of up to
  24 bits, float32's precision, the largest shift; a power-of-two ratio gives a narrow one), and the quantizer's range gives the clamp (``relu``, ``act_max``): an
  unsigned b-bit quantizer (or any after a Relu) [0, 2**b - 1] (b = 8: unsigned bytes, which
  the next layer reads as 0..255), a signed b-bit one [-2**(b-1), 2**(b-1) - 1];
- MaxPool passes the scale through (before or after the Quant: max commutes with a
  monotone quantizer); Flatten/Reshape to [B, -1] pass; Identity passes.

What the contract cannot express is refused by node name and reason, before anything
is written: narrow-range activation quantizers (a clamp at -(2**(b-1) - 1)), activations
wider than 8 bits, unsigned outputs of the last layer (the network's outputs are int8), a
nonzero zero point, BipolarQuant, Trunc, MultiThreshold, rounding modes other
than ROUND on activations, a layer whose input is not quantized, a last layer without an
output Quant (mamfpga's outputs are int8 at a scale the model must fix).

Exactness: the contract multiplies by a mult of up to 24 bits and shifts, rounding a half as the
model's quantizer does (QONNX's ROUND: to even); QONNX divides by the float scale.
:class:`ImportReport` gives per layer the worst-case deviation the mult/shift approximation can
cause over the reachable accumulators (in output steps), and :func:`exactness` counts the
outputs that differ on given inputs. With power-of-two scales the mult is exact, and so is the
network.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mamfpga.sw.network import Layer, ModelFormatError
from mamfpga.sw.onnx_io import _attrs, _conv_layer, _flattens, _Graph, _graph_input, _pool_layer, read_onnx
from mamfpga.sw.qnet import ACT_MAX, ACT_MIN, QuantLayer, QuantNetwork, act_range
from mamfpga.sw.quantize import INT32_MAX, mult_shift

__all__ = ["is_qonnx", "import_qonnx", "ImportReport", "LayerScale", "exactness", "Exactness", "QUANT_OPS"]

#: QONNX quantization ops; only Quant is mapped.
#: the requantizer's mult for a model's float scale ratios: 24 bits (float32's precision, which
#: qonnx's own execution computes in), so that the approximation's error (2**-25 relative) is no
#: larger than float32's rounding; a 16-bit mult flipped 0.1-0.4 % of a CNN's outputs
MULT_BITS_IMPORT = 24
QUANT_OPS = {"Quant", "BipolarQuant", "Trunc", "MultiThreshold", "IntQuant", "FloatQuant"}


def is_qonnx(model) -> bool:
    """Whether an ONNX model carries QONNX quantization nodes."""
    return any(n.op_type in QUANT_OPS or n.domain.startswith(("qonnx", "finn")) for n in model.graph.node)


@dataclass
class _Q:
    """A Quant node's parameters."""
    scale: np.ndarray        # float64, broadcastable to the input
    zero: np.ndarray
    bits: int
    signed: bool
    narrow: bool
    rounding: str

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1 - (1 if self.narrow else 0)

    def describe(self) -> str:
        return (f"{self.bits}-bit {'signed' if self.signed else 'unsigned'}{' narrow' if self.narrow else ''} "
                f"[{self.qmin}, {self.qmax}]")


_ROUND = {
    "ROUND": np.round,                 # half to even, as numpy and QONNX do
    "HALF_EVEN": np.round,
    "ROUND_TO_ZERO": np.trunc,
    "FLOOR": np.floor,
    "CEIL": np.ceil,
    "HALF_UP": lambda v: np.floor(v + 0.5),
    "HALF_DOWN": lambda v: np.ceil(v - 0.5),
}


@dataclass
class LayerScale:
    """How one weighted layer's requantization approximates the model's scales."""
    name: str                    # the ONNX node
    ratio: np.ndarray            # s_acc / s_out per row (the exact requantization)
    mult: np.ndarray
    shift: np.ndarray
    acc_bound: np.ndarray        # |acc| any input can reach, per row
    lo: int
    hi: int

    @property
    def worst_steps(self) -> float:
        """Largest |acc * (mult / 2**shift - ratio)| over reachable accumulators, in output steps."""
        approx = self.mult / np.exp2(self.shift.astype(np.float64))
        return float(np.max(self.acc_bound * np.abs(approx - self.ratio)))


@dataclass
class ImportReport:
    scales: list[LayerScale] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = list(self.notes)
        for s in self.scales:
            pow2 = bool(np.all(s.mult / np.exp2(s.shift.astype(np.float64)) == s.ratio))
            out.append(f"{s.name}: requantization {'exact (power-of-two ratio)' if pow2 else 'mult/2^shift'}, "
                       f"worst-case deviation {s.worst_steps:.2e} output steps over |acc| <= "
                       f"{int(s.acc_bound.max())} (an output can differ by one step only when that deviation "
                       f"crosses a rounding boundary)")
        return out


def _const_param(g: _Graph, node, k: int, what: str) -> np.ndarray:
    name = node.input[k] if len(node.input) > k else ""
    if not name or name not in g.consts:
        raise ModelFormatError(f"{g.where(node)}: its {what} must be a constant (an initializer)")
    return np.asarray(g.consts[name], dtype=np.float64)


def _quant_params(g: _Graph, node, path) -> _Q:
    if node.op_type != "Quant":
        why = {"BipolarQuant": "binary (bipolar) quantization has no int8 equivalent in the contract",
               "Trunc": "truncation (average pooling's rescaling) is not a contract operation",
               "MultiThreshold": "thresholds (FINN's streamlined activations) are not a contract operation",
               }.get(node.op_type, "it is not a quantizer mamfpga maps")
        raise ModelFormatError(f"{path}: {g.where(node)}: {node.op_type} is not supported: {why}")
    a = _attrs(node)
    scale = _const_param(g, node, 1, "scale")
    zero = _const_param(g, node, 2, "zero point")
    bits = _const_param(g, node, 3, "bit width")
    if bits.size != 1 or bits.reshape(-1)[0] != round(float(bits.reshape(-1)[0])):
        raise ModelFormatError(f"{path}: {g.where(node)}: bit width {bits.reshape(-1).tolist()} must be one "
                               "integer")
    rounding = a.get("rounding_mode", b"ROUND")
    rounding = rounding.decode() if isinstance(rounding, bytes) else str(rounding)
    q = _Q(scale, zero, int(round(float(bits.reshape(-1)[0]))), bool(a.get("signed", 1)), bool(a.get("narrow", 0)),
           rounding.upper())
    if q.rounding not in _ROUND:
        raise ModelFormatError(f"{path}: {g.where(node)}: rounding mode {q.rounding!r} is not one QONNX defines")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ModelFormatError(f"{path}: {g.where(node)}: scale must be positive and finite")
    if np.any(zero != 0):
        raise ModelFormatError(f"{path}: {g.where(node)}: zero point {zero.reshape(-1)[:4].tolist()} is not 0; "
                               "the contract's int8 values are symmetric (no zero point)")
    return q


def import_qonnx(path: str | os.PathLike, mult_bits: int = MULT_BITS_IMPORT) -> tuple[QuantNetwork, ImportReport]:
    """The QuantNetwork of a QONNX model, and how exactly it reproduces the model's scales.
    ``mult_bits`` (16-24): the requantizers' mult width; 16 saves two DSP blocks per requantizer
    and moves some outputs by a step (the report says how far)."""
    if isinstance(mult_bits, bool) or not isinstance(mult_bits, int) or not 16 <= mult_bits <= MULT_BITS_IMPORT:
        raise ModelFormatError(f"the mult width must be 16 to {MULT_BITS_IMPORT} bits, not {mult_bits!r}")
    path = Path(path)
    g = _Graph(read_onnx(path), path)
    report = ImportReport()

    # weights and biases: a Quant on a constant is a quantized constant (its integer values and
    # scale kept; the dequantized floats stand in the graph so that the layer readers see them)
    qconst: dict[str, tuple[np.ndarray, _Q]] = {}
    for node in g.nodes:
        if node.op_type in QUANT_OPS and node.input and node.input[0] in g.consts:
            q = _quant_params(g, node, path)
            x = np.asarray(g.consts[node.input[0]], dtype=np.float64)
            ints = np.clip(_ROUND[q.rounding](x / q.scale), q.qmin, q.qmax)
            qconst[node.output[0]] = (ints, q)
            g.consts[node.output[0]] = ints * q.scale

    graph_input = _graph_input(g, path)
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    cur = graph_input.name
    layers: list[QuantLayer] = []
    scale: np.ndarray | float | None = None       # the integer scale of cur (None: still float)
    input_scale = None
    pending: dict | None = None                   # a weighted layer awaiting its output Quant
    after: list[QuantLayer] = []                  # max pools between a layer and its output Quant

    def bias_int(node, b_real, s_acc) -> np.ndarray:
        """A float bias as int32 at the accumulator's scale (per row)."""
        b_real = np.broadcast_to(np.asarray(b_real, dtype=np.float64).reshape(-1), s_acc.shape)
        b_int = np.rint(b_real / s_acc)
        if np.any(np.abs(b_int) > INT32_MAX):
            raise ModelFormatError(f"{path}: {g.where(node)}: a bias is {int(np.abs(b_int).max())} accumulator "
                                   "steps, beyond int32")
        moved = np.abs(b_int * s_acc - b_real) / s_acc
        if np.any(moved > 1e-6):
            report.notes.append(f"{node.name or node.op_type}: bias rounded to the accumulator scale s_in * s_w "
                                f"(largest change {moved.max():.3f} steps)")
        return b_int.astype(np.int32)

    def weighted(node, w_name, kind_layer: Layer):
        """Start a weighted layer on the quantized ``cur`` (``kind_layer``: the float layer the
        node reads as, for its shape and geometry): int weights, int32 bias, acc scale."""
        nonlocal pending
        if scale is None:
            raise ModelFormatError(f"{path}: {g.where(node)}: its input is not quantized (no Quant node "
                                   "before it); add an input quantizer (Brevitas QuantIdentity)")
        if pending is not None:
            raise ModelFormatError(f"{path}: {g.where(node)}: the layer before it has no output Quant")
        if w_name not in qconst:
            raise ModelFormatError(f"{path}: {g.where(node)}: its weight is not quantized (no Quant node on it)")
        wq, q = qconst[w_name]
        wq = np.asarray(wq)
        if wq.shape != kind_layer.weight.shape:
            raise ModelFormatError(f"{path}: {g.where(node)}: weight of shape {list(wq.shape)}, expected "
                                   f"{list(kind_layer.weight.shape)}")
        if q.bits > 8 or q.bits < 2:
            raise ModelFormatError(f"{path}: {g.where(node)}: weights of {q.bits} bits; mamfpga takes 2 to 8")
        if wq.min() < -127:
            raise ModelFormatError(f"{path}: {g.where(node)}: a weight quantizes to {int(wq.min())}; the contract's "
                                   "weights lie in [-127, 127] (use narrow range for 8-bit weights)")
        rows = kind_layer.weight.shape[0]
        sw = np.asarray(q.scale, dtype=np.float64)
        if sw.size == 1:
            s_w = np.full(rows, float(sw.reshape(-1)[0]))
        elif sw.shape[:1] == (rows,) and sw.size == rows:
            s_w = sw.reshape(rows).copy()
        else:
            raise ModelFormatError(f"{path}: {g.where(node)}: a weight scale of shape {list(sw.shape)} is neither per "
                                   f"tensor nor per output channel ({rows} rows)")
        s_acc = s_w * float(scale)
        # the model's width, one more where a non-narrow quantizer used its -2^(b-1)
        bits = q.bits if np.abs(wq).max(initial=0) <= (1 << (q.bits - 1)) - 1 else q.bits + 1
        pending = {"node": node, "layer": QuantLayer(
            wq.astype(np.int8), bias_int(node, kind_layer.bias, s_acc), "mac", 1, 0, False, kind=kind_layer.kind,
            stride=kind_layer.stride, padding=kind_layer.padding, weight_bits=bits), "s_acc": s_acc,
            "relu": False}

    def finish(node, q: _Q):
        """The output Quant of the pending layer: its requantization and clamp."""
        nonlocal pending, scale
        lay, s_acc = pending["layer"], pending["s_acc"]
        if np.size(q.scale) != 1:
            raise ModelFormatError(f"{path}: {g.where(node)}: per-channel activation scales are not supported "
                                   "(the next layer's weights would need one scale per input column)")
        s_out = float(np.asarray(q.scale).reshape(-1)[0])
        relu, act_max = _act_range(q, pending["relu"], g, node, path)
        lo, hi = (0 if relu else -(act_max + 1)), act_max
        if q.rounding not in ("ROUND", "HALF_EVEN", "HALF_UP"):
            raise ModelFormatError(f"{path}: {g.where(node)}: activation rounding {q.rounding}; the contract rounds "
                                   "to nearest (a half up or to even)")
        lay.rounding = "half_up" if q.rounding == "HALF_UP" else "half_even"
        ratio = s_acc / s_out
        ms = [mult_shift(float(r), mult_bits) for r in ratio]
        mult = np.array([m for m, _ in ms], dtype=np.int64)
        shift = np.array([s for _, s in ms], dtype=np.int64)
        lay.relu, lay.act_max = relu, act_max
        if np.all(mult == mult[0]) and np.all(shift == shift[0]):
            lay.mult, lay.shift = int(mult[0]), int(shift[0])
        else:
            lay.mult, lay.shift = mult, shift
        w = lay.weight.reshape(lay.rows, -1).astype(np.int64)
        bound = np.abs(lay.bias.astype(np.int64)) + np.abs(w).sum(1) * 128
        report.scales.append(LayerScale(pending["node"].name or pending["node"].op_type, ratio, mult, shift,
                                        bound, lo, hi))
        layers.append(lay)
        layers.extend(after)
        after.clear()
        scale = s_out
        pending = None

    while True:
        users = g.only_consumer(cur)
        if not users:
            break
        if len(users) > 1:
            raise ModelFormatError(f"{path}: tensor {cur!r} feeds {len(users)} nodes "
                                   f"({', '.join(u.op_type for u in users)}); mamfpga takes a chain of layers")
        node = users[0]
        op, a = node.op_type, _attrs(node)
        if op in QUANT_OPS:
            q = _quant_params(g, node, path)
            if pending is not None:
                finish(node, q)
            elif scale is None:                         # the input quantizer
                if np.size(q.scale) != 1:
                    raise ModelFormatError(f"{path}: {g.where(node)}: the input needs one scale, not "
                                           f"{np.size(q.scale)}")
                if not (q.signed and q.bits == 8 and not q.narrow):
                    raise ModelFormatError(f"{path}: {g.where(node)}: the input quantizer is {q.describe()}; "
                                           "mamfpga's inputs are int8 [-128, 127] (signed 8-bit, not narrow)")
                scale = input_scale = float(q.scale.reshape(-1)[0])
            else:                                        # a requantization of a quantized tensor
                same = np.size(q.scale) == 1 and math.isclose(float(q.scale.reshape(-1)[0]), float(scale),
                                                              rel_tol=1e-9)
                weighted_before = [l for l in layers if l.kind != "maxpool2d"]
                lo, hi = act_range(weighted_before[-1]) if weighted_before else (ACT_MIN, ACT_MAX)
                if not same or q.qmin > lo or q.qmax < hi:
                    raise ModelFormatError(f"{path}: {g.where(node)}: a Quant ({q.describe()}) of an already "
                                           "quantized tensor at another scale or a narrower range is not a "
                                           "contract operation")
        elif op in ("Gemm", "MatMul", "Conv"):
            g.const_input(node, 1)                # present and constant, else one line naming the node
            w_name = node.input[1]
            if op == "Gemm":
                if a.get("transA", 0):
                    raise ModelFormatError(f"{path}: {g.where(node)}: transA=1 is not supported")
                w = g.const(w_name, node).astype(np.float64)
                w = w if a.get("transB", 0) else w.T
                if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                    raise ModelFormatError(f"{path}: {g.where(node)}: alpha and beta must be 1 in a quantized Gemm")
                b = (g.const_input(node, 2).astype(np.float64).reshape(-1)
                     if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0]))
                # the float layer (dequantized weights) gives the geometry; the integers come from the Quant
                kl = Layer(w, np.broadcast_to(b, (w.shape[0],)).copy(), "mac", False, node.name)
                if not a.get("transB", 0) and w_name in qconst:
                    qconst[w_name] = (qconst[w_name][0].T, _transposed(qconst[w_name][1]))
            elif op == "MatMul":
                w = g.const(w_name, node).astype(np.float64)
                if w.ndim != 2:
                    raise ModelFormatError(f"{path}: {g.where(node)}: weight must be 2-D, not {list(w.shape)}")
                kl = Layer(w.T, np.zeros(w.shape[1]), "mac", False, node.name)
                if w_name in qconst:
                    qconst[w_name] = (qconst[w_name][0].T, _transposed(qconst[w_name][1]))
            else:
                if g.const(w_name, node).ndim != 4:
                    raise ModelFormatError(f"{path}: {g.where(node)}: only 2-D convolutions are imported from QONNX")
                kl = _conv_layer(g, node, path, node.name)
            weighted(node, w_name, kl)
        elif op == "Add" and pending is not None and pending["node"].op_type == "MatMul" \
                and not pending["relu"] and not pending["layer"].bias.any():
            other = next(i for i in node.input if i != cur)           # MatMul + Add: the bias
            pending["layer"].bias = bias_int(node, g.const(other, node), pending["s_acc"])
        elif op == "Relu":
            if pending is None or pending["relu"]:
                raise ModelFormatError(f"{path}: {g.where(node)}: Relu must follow a Gemm, MatMul or Conv")
            pending["relu"] = True
        elif op == "MaxPool":
            fl = _pool_layer(g, node, path, "pool")
            pool = QuantLayer(None, None, kind="maxpool2d", kernel=fl.kernel, stride=fl.stride)
            if pending is not None:
                after.append(pool)
            elif scale is None:
                raise ModelFormatError(f"{path}: {g.where(node)}: max pooling of the float input; quantize first")
            else:
                layers.append(pool)
        elif op in ("Flatten", "Reshape") and (scale is None and not layers or _flattens(g, node)):
            pass
        elif op in ("Identity", "Dropout"):
            pass
        else:
            raise ModelFormatError(f"{path}: {g.where(node)}: unsupported op {op!r} (a QONNX model for mamfpga "
                                   "takes Quant, Gemm, MatMul(+Add), Conv, Relu, MaxPool, Flatten/Reshape)")
        cur = node.output[0]
    if pending is not None:
        raise ModelFormatError(f"{path}: {g.where(pending['node'])}: the last layer's output has no Quant node; "
                               "mamfpga's outputs are int8, so add an output quantizer (a signed 8-bit "
                               "QuantIdentity)")
    if not any(l.kind != "maxpool2d" for l in layers):
        raise ModelFormatError(f"{path}: no quantized Gemm, MatMul or Conv layer found")
    last = [l for l in layers if l.kind != "maxpool2d"][-1]
    if last.act_max > ACT_MAX:
        raise ModelFormatError(f"{path}: the output quantizer of {report.scales[-1].name} is unsigned 8-bit "
                               "[0, 255]; the network's outputs are int8 (use a signed 8-bit or a 7-bit output "
                               "quantizer)")
    shape = [d for d in dims[1:]]
    if layers[0].kind != "dense":
        if len(shape) != 3 or min(shape) < 1:
            raise ModelFormatError(f"{path}: a model that starts with Conv needs a graph input of known shape "
                                   f"[B, C, H, W], not {dims}")
        in_shape = tuple(shape)
    else:
        in_shape = (layers[0].weight.shape[1],)
    net = QuantNetwork(layers, input_scale=input_scale, output_scale=float(scale), input_shape=in_shape,
                       extra={"provenance": np.array(f"qonnx:{path.name}")})
    return net, report


def _transposed(q: _Q) -> _Q:
    """A weight quantizer's parameters for the transposed weight (scale per row either way)."""
    s = np.asarray(q.scale)
    return _Q(s.T if s.ndim == 2 else s, q.zero, q.bits, q.signed, q.narrow, q.rounding)


def _act_range(q: _Q, relu: bool, g: _Graph, node, path) -> tuple[bool, int]:
    """The contract's clamp for an activation quantizer, as (relu, act_max): [0, 2**n - 1]
    (unsigned n-bit, or any quantizer after a Relu) or [-2**n, 2**n - 1] (signed n+1-bit)."""
    lo, hi = q.qmin, q.qmax
    if relu:
        lo = max(lo, 0)
    if hi >= 1 and hi & (hi + 1) == 0 and hi <= 255 and lo in (0, -(hi + 1)) and not (lo < 0 and hi > ACT_MAX):
        return lo == 0, hi
    why = ("the contract clamps to [0, 2^n - 1] or [-2^n, 2^n - 1] with n <= 8 (unsigned up to 8 bits, signed "
           "up to 8 bits, not narrow)")
    raise ModelFormatError(f"{path}: {g.where(node)}: activation quantizer {q.describe()}"
                           f"{' after a Relu' if relu else ''}: its range [{lo}, {hi}] cannot be expressed: {why}")


@dataclass
class Exactness:
    """How the contract's requantization compares with the model's exact one on some inputs."""
    differ: int          # layer outputs that differ
    total: int           # layer outputs in all
    worst: float         # largest difference, in output steps
    unexplained: int     # differing outputs that the mult/shift deviation does not explain (0 when
                         # the arithmetic is right: each one lies within it of a rounding boundary)


def exactness(net: QuantNetwork, report: ImportReport, x: np.ndarray) -> Exactness:
    """Each weighted layer's requantization against the exact one (the model's float ratio, its
    rounding), layer by layer on the network's own activations, for inputs ``x`` (float, or
    int8)."""
    import torch

    from mamfpga.sw import golden

    h = torch.from_numpy(golden.prepare_inputs(net, x).astype(np.int64)).reshape((len(x),) + net.input_shape)
    scales = iter(report.scales)
    out = Exactness(0, 0, 0.0, 0)
    for layer in net.layers:
        if layer.kind == "maxpool2d":
            h = golden.layer_forward(layer, h)
            continue
        s = next(scales)
        acc = golden.accumulate(layer, h)
        ours = golden.requantize(layer, acc).numpy()
        shape = (1, -1) + (1,) * (acc.ndim - 2)
        a = acc.numpy().astype(np.float64)
        value = a * s.ratio.reshape(shape)
        exact = np.clip(np.round(value) if layer.rounding == "half_even" else np.floor(value + 0.5), s.lo, s.hi)
        diff = np.abs(ours - exact)
        # how far the contract's value a * mult / 2**shift can be from the exact one, and how far
        # the exact one lies from the nearest rounding boundary (k + 1/2)
        deviation = np.abs(a) * np.abs(s.mult / np.exp2(s.shift.astype(np.float64)) - s.ratio).reshape(shape)
        margin = np.abs(value - np.floor(value) - 0.5)
        out.differ += int(np.count_nonzero(diff))
        out.total += diff.size
        out.worst = max(out.worst, float(diff.max()) if diff.size else 0.0)
        out.unexplained += int(np.count_nonzero((diff > 0) & (margin > deviation + 1e-9 * (1 + np.abs(value)))))
        h = torch.from_numpy(ours)
    return out
