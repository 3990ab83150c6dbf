"""QuantNetwork: the integer network every later stage consumes (DESIGN.md, contract v2).

Layers k = 0..K-1 of three kinds, each reading the previous one's int8
activations (a vector [N] or a feature map [C, H, W], channel-major):

- ``dense``: weight int8 [M, N] in [-127, 127] (0 = pruned), bias int32 [M];
  a feature map is read flattened in C, H, W order;
- ``conv2d``: weight int8 [M, C, KH, KW], bias int32 [M], ``stride`` (sh, sw),
  zero ``padding`` (top, left, bottom, right); Conv1d is H = KH = 1;
- ``maxpool2d``: ``kernel`` (kh, kw), ``stride`` (sh, sw), no padding, floor.

dense and conv2d layers have a mode "mac" | "mam", ``mult`` in [1, 2**24) and
``shift`` in [0, 62] (each one integer, or one per output row / channel), a
``relu`` and an ``act_max`` (2**n - 1: outputs clamp to [0 or -(act_max + 1), act_max];
255 makes them unsigned bytes, which the next layer reads as 0..255) and a ``rounding``
of the requantization's halves, "half_up" (default) or "half_even". Stored as ``.npz`` with the keys of DESIGN.md (format
``mamfpga.qnet/2``; ``mamfpga.qnet/1`` files, all dense with scalar scales,
are read too); validated on load, each problem reported as one line naming
the key.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mamfpga.errors import MamfpgaError
from mamfpga.outputs import atomic_write_bytes

__all__ = ["FORMAT", "FORMATS_READ", "KINDS", "QuantLayer", "QuantNetwork", "QNetError", "load_qnet", "save_qnet",
           "ACT_MIN", "ACT_MAX", "ACT_MAXES", "ROUNDINGS", "round_half_away", "out_shape", "act_range",
           "input_max"]

FORMAT = "mamfpga.qnet/2"
FORMATS_READ = ("mamfpga.qnet/1", FORMAT)
KINDS = ("dense", "conv2d", "maxpool2d")
ACT_MIN, ACT_MAX = -128, 127
#: the clamps a layer's outputs may have: 2**n - 1, n = 1..8 (255: unsigned bytes, with relu)
ACT_MAXES = tuple((1 << n) - 1 for n in range(1, 9))
#: how the requantization rounds a half: up (the default, contract v1) or to even (QONNX's ROUND)
ROUNDINGS = ("half_up", "half_even")
#: mult < 2**24: mamfpga's own quantizer uses 16 bits (one DSP-sized operand); an imported model's
#: float scales take up to 24 (float32's precision); 40-bit accumulators x 24 bits fit int64
MULT_MAX = 1 << 24
SHIFT_MAX = 62


class QNetError(MamfpgaError, ValueError):
    """A QuantNetwork (file or object) that breaks the format; the message names the key."""

    exit_code = 2


@dataclass
class QuantLayer:
    weight: np.ndarray | None   # int8: [M, N] dense, [M, C, KH, KW] conv2d; None for maxpool2d
    bias: np.ndarray | None     # int32 [M]; None for maxpool2d
    mode: str = "mac"
    mult: int | np.ndarray = 1  # one integer, or int [M]: one per output row / channel
    shift: int | np.ndarray = 0
    relu: bool = False
    kind: str = "dense"
    stride: tuple = (1, 1)      # conv2d, maxpool2d
    padding: tuple = (0, 0, 0, 0)   # conv2d: top, left, bottom, right
    kernel: tuple = (1, 1)      # maxpool2d (a conv's kernel is its weight's shape)
    weight_bits: int | None = None  # every weight fits this many bits (2..8); None: 8
    act_max: int = 127          # the outputs' clamp: [0 if relu else -(act_max + 1), act_max]
    rounding: str = "half_up"   # of the requantization's halves: "half_up" or "half_even"

    @property
    def rows(self) -> int:
        """Output rows (dense) or channels (conv2d)."""
        return self.weight.shape[0]

    @property
    def cols(self) -> int:
        """Inputs of one row (dense) or one filter (conv2d: C * KH * KW)."""
        return int(np.prod(self.weight.shape[1:]))

    @property
    def nnz(self) -> int:
        return 0 if self.weight is None else int(np.count_nonzero(self.weight))

    @property
    def per_channel(self) -> bool:
        """Whether mult or shift is an array (one per output row / channel)."""
        return np.ndim(self.mult) > 0 or np.ndim(self.shift) > 0


def out_shape(layer: QuantLayer, shape: tuple, where: str = "layer") -> tuple:
    """The activation shape ``layer`` makes of ``shape`` ([N] or [C, H, W]); QNetError when it
    cannot take it (the message names ``where`` and the numbers)."""
    if layer.kind == "dense":
        n = int(np.prod(shape))
        if layer.weight.shape[1] != n:
            what = f"a feature map {list(shape)} ({n} values)" if len(shape) == 3 else f"{n} values"
            _fail(f"{where}.weight", f"has {layer.weight.shape[1]} columns but receives {what}")
        return (layer.weight.shape[0],)
    if len(shape) != 3:
        _fail(f"{where}.kind", f"a {layer.kind} layer needs a feature map [C, H, W], but receives a vector of "
                               f"{shape[0]}")
    c, h, w = shape
    if layer.kind == "conv2d":
        m, wc, kh, kw = layer.weight.shape
        if wc != c:
            _fail(f"{where}.weight", f"has filters of {wc} channels but receives a feature map {list(shape)}")
        top, left, bottom, right = layer.padding
        hp, wp = h + top + bottom, w + left + right
        if hp < kh or wp < kw:
            _fail(f"{where}.weight", f"a {kh} x {kw} kernel does not fit the padded {hp} x {wp} feature map")
        return (m, (hp - kh) // layer.stride[0] + 1, (wp - kw) // layer.stride[1] + 1)
    kh, kw = layer.kernel
    if h < kh or w < kw:
        _fail(f"{where}.kernel", f"a {kh} x {kw} window does not fit the {h} x {w} feature map")
    return (c, (h - kh) // layer.stride[0] + 1, (w - kw) // layer.stride[1] + 1)


@dataclass
class QuantNetwork:
    layers: list[QuantLayer]
    input_scale: float | None = None
    output_scale: float | None = None
    extra: dict = field(default_factory=dict)   # optional keys (names, provenance), kept on save
    input_shape: tuple | None = None            # (N,) or (C, H, W); (N,) of a dense layer 0 if absent

    def __post_init__(self):
        if self.input_shape is None and self.layers and self.layers[0].kind == "dense" \
                and isinstance(self.layers[0].weight, np.ndarray) and self.layers[0].weight.ndim == 2:
            self.input_shape = (self.layers[0].weight.shape[1],)
        if self.input_shape is not None:
            self.input_shape = tuple(int(v) for v in self.input_shape)
        validate(self)

    @property
    def shapes(self) -> list[tuple]:
        """The activation shapes: the input's, then each layer's output."""
        shapes = [self.input_shape]
        for k, layer in enumerate(self.layers):
            shapes.append(out_shape(layer, shapes[-1], f"layer{k}"))
        return shapes

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def output_size(self) -> int:
        return int(np.prod(self.shapes[-1]))

    @property
    def dense_only(self) -> bool:
        """Version 1: every layer dense, one mult and shift each."""
        return all(l.kind == "dense" and not l.per_channel for l in self.layers)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float inputs to int8 through input_scale (round half away from zero, saturate)."""
        if self.input_scale is None:
            raise QNetError("input_scale: absent, so float inputs cannot be quantized; give int8 inputs")
        q = round_half_away(np.asarray(x, dtype=np.float64) / self.input_scale)
        return np.clip(q, ACT_MIN, ACT_MAX).astype(np.int8)


def act_range(layer: QuantLayer) -> tuple[int, int]:
    """The clamp of a weighted layer's outputs: [0, act_max] with relu, else [-(act_max + 1), act_max]."""
    return (0 if layer.relu else -(layer.act_max + 1)), layer.act_max


def input_max(layers: list[QuantLayer], k: int) -> int:
    """The largest |value| layer ``k`` reads: 255 when the weighted layer before it (through its
    pools) writes unsigned bytes, else 128 (int8; the network's input is int8)."""
    for prev in reversed(layers[:k]):
        if prev.kind != "maxpool2d":
            return 255 if prev.act_max > ACT_MAX else 128
    return 128


def round_half_away(x: np.ndarray) -> np.ndarray:
    """The contract's rounding of a float to an integer: half away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _fail(key: str, problem: str):
    raise QNetError(f"{key}: {problem}")


def _is_int(v) -> bool:
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer))


def _check_scale(p: str, name: str, v, lo: int, hi: int, rows: int):
    """mult/shift: an integer in [lo, hi], or an integer array [rows] of them."""
    if isinstance(v, np.ndarray) and v.ndim > 0:
        if v.dtype.kind not in "iu":
            _fail(f"{p}.{name}", f"must hold integers, not {v.dtype}")
        if v.shape != (rows,):
            _fail(f"{p}.{name}", f"per-channel values must have shape ({rows},), one per output, not {v.shape}")
        bad = (v < lo) | (v > hi)
        if bad.any():
            i = int(np.argmax(bad))
            _fail(f"{p}.{name}", f"must be in [{lo}, {hi}]; entry {i} is {int(v[i])}")
        return
    if not _is_int(v) or not lo <= v <= hi:
        _fail(f"{p}.{name}", f"must be an integer in [{lo}, {hi}], not {v!r}")


def _pair(p: str, name: str, v, n: int, lo: int) -> tuple:
    t = tuple(v) if isinstance(v, (tuple, list, np.ndarray)) else None
    if t is None or len(t) != n or not all(_is_int(e) for e in t) or any(e < lo for e in t):
        _fail(f"{p}.{name}", f"must be {n} integers >= {lo}, not {v!r}")
    return tuple(int(e) for e in t)


def validate(net: QuantNetwork) -> None:
    if not net.layers:
        _fail("num_layers", "must be at least 1")
    if net.input_shape is None:
        _fail("input_shape", "missing; a network whose first layer is not dense must say its input's [C, H, W]")
    if len(net.input_shape) not in (1, 3) or min(net.input_shape) < 1:
        _fail("input_shape", f"must be [N] or [C, H, W] of positive sizes, not {list(net.input_shape)}")
    shape = net.input_shape
    for k, layer in enumerate(net.layers):
        p = f"layer{k}"
        if layer.kind not in KINDS:
            _fail(f"{p}.kind", f"must be one of {', '.join(KINDS)}, not {layer.kind!r}")
        if layer.kind == "maxpool2d":
            if layer.weight is not None or layer.bias is not None:
                _fail(f"{p}.weight", "a maxpool2d layer has no weights or bias")
            layer.kernel = _pair(p, "kernel", layer.kernel, 2, 1)
            layer.stride = _pair(p, "stride", layer.stride, 2, 1)
            shape = out_shape(layer, shape, p)
            continue
        w, b = layer.weight, layer.bias
        if not isinstance(w, np.ndarray) or w.dtype != np.int8:
            _fail(f"{p}.weight", f"must be int8, not {getattr(w, 'dtype', type(w).__name__)}")
        want = 2 if layer.kind == "dense" else 4
        if w.ndim != want or 0 in w.shape:
            dims = "[M, N] matrix" if want == 2 else "[M, C, KH, KW] array"
            _fail(f"{p}.weight", f"must be a non-empty {dims}, not shape {w.shape}")
        if (w == -128).any():
            _fail(f"{p}.weight", "holds -128; weights must be in [-127, 127]")
        if not isinstance(b, np.ndarray) or b.dtype != np.int32:
            _fail(f"{p}.bias", f"must be int32, not {getattr(b, 'dtype', type(b).__name__)}")
        if b.shape != (w.shape[0],):
            _fail(f"{p}.bias", f"has shape {b.shape}, but {p}.weight has {w.shape[0]} "
                               f"{'rows' if want == 2 else 'filters'}")
        if layer.mode not in ("mac", "mam"):
            _fail(f"{p}.mode", f"must be 'mac' or 'mam', not {layer.mode!r}")
        _check_scale(p, "mult", layer.mult, 1, MULT_MAX - 1, w.shape[0])
        _check_scale(p, "shift", layer.shift, 0, SHIFT_MAX, w.shape[0])
        if not isinstance(layer.relu, (bool, np.bool_)):
            _fail(f"{p}.relu", f"must be a bool, not {layer.relu!r}")
        if layer.kind == "conv2d":
            layer.stride = _pair(p, "stride", layer.stride, 2, 1)
            layer.padding = _pair(p, "padding", layer.padding, 4, 0)
        if layer.rounding not in ROUNDINGS:
            _fail(f"{p}.rounding", f"must be one of {', '.join(ROUNDINGS)}, not {layer.rounding!r}")
        if not _is_int(layer.act_max) or layer.act_max not in ACT_MAXES:
            _fail(f"{p}.act_max", f"must be 2**n - 1 for n in 1..8 (1, 3, 7, ..., 255), not {layer.act_max!r}")
        if layer.act_max > ACT_MAX and not layer.relu:
            _fail(f"{p}.act_max", f"{layer.act_max} needs relu (outputs above 127 are unsigned bytes, [0, 255])")
        if layer.act_max > ACT_MAX and k == len(net.layers) - 1:
            _fail(f"{p}.act_max", f"{layer.act_max}: the network's outputs are int8, so the last layer's "
                                  "act_max is at most 127")
        if layer.weight_bits is not None:
            bits = layer.weight_bits
            if not _is_int(bits) or not 2 <= bits <= 8:
                _fail(f"{p}.weight_bits", f"must be an integer in [2, 8], not {bits!r}")
            lim = (1 << (bits - 1)) - 1
            if w.size and np.abs(w.astype(np.int64)).max() > lim:
                _fail(f"{p}.weight_bits", f"says {bits} bits, but a weight of "
                                          f"{int(np.abs(w.astype(np.int64)).max())} exceeds {lim}")
        if k > 0 and layer.kind == "dense" and len(shape) == 1 and w.shape[1] != shape[0] \
                and net.layers[k - 1].kind == "dense":
            _fail(f"{p}.weight", f"has {w.shape[1]} columns but layer{k - 1} has {shape[0]} rows")
        shape = out_shape(layer, shape, p)
    for key in ("input_scale", "output_scale"):
        v = getattr(net, key)
        if v is not None and (not isinstance(v, (float, int, np.floating)) or not math.isfinite(v) or v <= 0):
            _fail(key, f"must be a positive finite float, not {v!r}")


def save_qnet(net: QuantNetwork, path: str | os.PathLike) -> Path:
    validate(net)
    arrays = {"format": np.array(FORMAT), "num_layers": np.array(len(net.layers), dtype=np.int64),
              "input_shape": np.array(net.input_shape, dtype=np.int64)}
    for k, layer in enumerate(net.layers):
        p = f"layer{k}"
        arrays[f"{p}.kind"] = np.array(layer.kind)
        if layer.kind == "maxpool2d":
            arrays[f"{p}.kernel"] = np.array(layer.kernel, dtype=np.int64)
            arrays[f"{p}.stride"] = np.array(layer.stride, dtype=np.int64)
            continue
        arrays[f"{p}.weight"] = layer.weight
        arrays[f"{p}.bias"] = layer.bias
        arrays[f"{p}.mode"] = np.array(layer.mode)
        arrays[f"{p}.mult"] = np.asarray(layer.mult, dtype=np.int64)
        arrays[f"{p}.shift"] = np.asarray(layer.shift, dtype=np.int64)
        arrays[f"{p}.relu"] = np.array(bool(layer.relu))
        if layer.kind == "conv2d":
            arrays[f"{p}.stride"] = np.array(layer.stride, dtype=np.int64)
            arrays[f"{p}.padding"] = np.array(layer.padding, dtype=np.int64)
        if layer.weight_bits is not None:
            arrays[f"{p}.weight_bits"] = np.array(int(layer.weight_bits), dtype=np.int64)
        if layer.act_max != ACT_MAX:
            arrays[f"{p}.act_max"] = np.array(int(layer.act_max), dtype=np.int64)
        if layer.rounding != ROUNDINGS[0]:
            arrays[f"{p}.rounding"] = np.array(layer.rounding)
    if net.input_scale is not None:
        arrays["input_scale"] = np.array(float(net.input_scale))
    if net.output_scale is not None:
        arrays["output_scale"] = np.array(float(net.output_scale))
    for key, value in net.extra.items():
        if key not in arrays:
            arrays[key] = np.asarray(value)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def _scalar(z, key: str, kind):
    if key not in z:
        _fail(key, "missing")
    a = z[key]
    if a.shape != ():
        _fail(key, f"must be a scalar, not an array of shape {a.shape}")
    v = a.item()
    if kind is int:
        if a.dtype.kind not in "iu":
            _fail(key, f"must be an integer, not {a.dtype}")
        return int(v)
    if kind is bool:
        if a.dtype != np.bool_:
            _fail(key, f"must be a bool, not {a.dtype}")
        return bool(v)
    if kind is float:
        if a.dtype.kind not in "fiu":
            _fail(key, f"must be a float, not {a.dtype}")
        return float(v)
    if a.dtype.kind != "U":
        _fail(key, f"must be a string, not {a.dtype}")
    return str(v)


def _ints(z, key: str, n: int | None = None) -> np.ndarray:
    """An integer array (of length ``n`` when given) stored under ``key``."""
    if key not in z.files:
        _fail(key, "missing")
    a = z[key]
    if a.dtype.kind not in "iu":
        _fail(key, f"must hold integers, not {a.dtype}")
    if n is not None and a.shape != (n,):
        _fail(key, f"must be {n} integers, not shape {a.shape}")
    return a.astype(np.int64)


def _scale_value(z, key: str):
    """mult/shift: a scalar integer, or an integer array [M] (per channel)."""
    if key not in z.files:
        _fail(key, "missing")
    a = z[key]
    if a.shape == ():
        return _scalar(z, key, int)
    if a.dtype.kind not in "iu":
        _fail(key, f"must hold integers, not {a.dtype}")
    if a.ndim != 1:
        _fail(key, f"must be an integer or one integer per output, not shape {a.shape}")
    return a.astype(np.int64)


_LAYER_KEYS = {"dense": ("kind", "weight", "bias", "mode", "mult", "shift", "relu", "weight_bits", "act_max",
                         "rounding"),
               "conv2d": ("kind", "weight", "bias", "mode", "mult", "shift", "relu", "stride", "padding",
                          "weight_bits", "act_max", "rounding"),
               "maxpool2d": ("kind", "kernel", "stride")}


def load_qnet(path: str | os.PathLike) -> QuantNetwork:
    path = Path(path)
    if not path.is_file():
        raise QNetError(f"{path}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise QNetError(f"{path}: not a readable .npz file (truncated or corrupt: {exc})") from None
    try:
        if "format" not in keys:
            _fail("format", "missing (not a mamfpga QuantNetwork)")
        fmt = _scalar(z, "format", str)
        if fmt not in FORMATS_READ:
            _fail("format", f"unknown format {fmt!r}; this mamfpga reads {' and '.join(map(repr, FORMATS_READ))}")
        v1 = fmt == FORMATS_READ[0]
        n = _scalar(z, "num_layers", int)
        if not 1 <= n <= 4096:
            _fail("num_layers", f"must be between 1 and 4096, not {n}")
        input_shape = None
        if "input_shape" in keys and not v1:
            a = _ints(z, "input_shape")
            if a.ndim != 1 or len(a) not in (1, 3) or (a < 1).any():
                _fail("input_shape", f"must be [N] or [C, H, W] of positive sizes, not {a.tolist()}")
            input_shape = tuple(int(v) for v in a)
        layers = []
        known = {"format", "num_layers", "input_scale", "output_scale", "input_shape"}
        for k in range(n):
            p = f"layer{k}"
            kind = "dense" if v1 or f"{p}.kind" not in keys else _scalar(z, f"{p}.kind", str)
            if kind not in KINDS:
                _fail(f"{p}.kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
            known |= {f"{p}.{f}" for f in _LAYER_KEYS[kind]}
            if kind == "maxpool2d":
                stray = sorted(f"{p}.{f}" for f in ("weight", "bias", "mode", "mult", "shift", "relu")
                               if f"{p}.{f}" in keys)
                if stray:
                    _fail(stray[0], "a maxpool2d layer has no weights, bias or scales")
                layers.append(QuantLayer(None, None, kind="maxpool2d",
                                         kernel=tuple(_ints(z, f"{p}.kernel", 2)),
                                         stride=tuple(_ints(z, f"{p}.stride", 2))))
                continue
            for key in ("weight", "bias"):
                if f"{p}.{key}" not in keys:
                    _fail(f"{p}.{key}", "missing")
            scale = _scalar if v1 else (lambda z_, key, _kind: _scale_value(z_, key))
            layer = QuantLayer(
                weight=z[f"{p}.weight"], bias=z[f"{p}.bias"],
                mode=_scalar(z, f"{p}.mode", str), mult=scale(z, f"{p}.mult", int),
                shift=scale(z, f"{p}.shift", int), relu=_scalar(z, f"{p}.relu", bool), kind=kind)
            if kind == "conv2d":
                layer.stride = tuple(_ints(z, f"{p}.stride", 2))
                layer.padding = tuple(_ints(z, f"{p}.padding", 4))
            if f"{p}.weight_bits" in keys:
                layer.weight_bits = _scalar(z, f"{p}.weight_bits", int)      # checked by validate
            if f"{p}.act_max" in keys:
                layer.act_max = _scalar(z, f"{p}.act_max", int)              # checked by validate
            if f"{p}.rounding" in keys:
                layer.rounding = _scalar(z, f"{p}.rounding", str)            # checked by validate
            layers.append(layer)
        input_scale = _scalar(z, "input_scale", float) if "input_scale" in keys else None
        output_scale = _scalar(z, "output_scale", float) if "output_scale" in keys else None
        extra = {}
        for key in keys - known:
            head = key.split(".")[0]
            if head.startswith("layer") and head[5:].isdigit() and int(head[5:]) >= n:
                _fail(key, f"belongs to a layer beyond num_layers={n}")
            extra[key] = z[key]
        return QuantNetwork(layers, input_scale, output_scale, extra, input_shape=input_shape)
    except QNetError as exc:
        raise QNetError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as exc:
        raise QNetError(f"{path}: truncated or corrupt .npz ({type(exc).__name__}: {exc})") from None
