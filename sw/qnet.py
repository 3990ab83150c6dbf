"""QuantNetwork: the integer network every later stage consumes (DESIGN.md, contract v1).

Layers k = 0..K-1 with N_{k+1} = M_k; weight int8 [M, N] in [-127, 127]
(0 = pruned), bias int32 [M], mode "mac" | "mam", 1 <= mult < 2**16,
0 <= shift <= 62, relu bool. Stored as ``.npz`` with the keys of DESIGN.md;
validated on load, each problem reported as one line naming the key.
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

__all__ = ["FORMAT", "QuantLayer", "QuantNetwork", "QNetError", "load_qnet", "save_qnet", "ACT_MIN", "ACT_MAX",
           "round_half_away"]

FORMAT = "mamfpga.qnet/1"
ACT_MIN, ACT_MAX = -128, 127
MULT_MAX = 1 << 16
SHIFT_MAX = 62


class QNetError(MamfpgaError, ValueError):
    """A QuantNetwork (file or object) that breaks the format; the message names the key."""

    exit_code = 2


@dataclass
class QuantLayer:
    weight: np.ndarray      # int8 [M, N]
    bias: np.ndarray        # int32 [M]
    mode: str
    mult: int
    shift: int
    relu: bool

    @property
    def rows(self) -> int:
        return self.weight.shape[0]

    @property
    def cols(self) -> int:
        return self.weight.shape[1]

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.weight))


@dataclass
class QuantNetwork:
    layers: list[QuantLayer]
    input_scale: float | None = None
    output_scale: float | None = None
    extra: dict = field(default_factory=dict)   # optional keys (names, provenance), kept on save

    def __post_init__(self):
        validate(self)

    @property
    def input_size(self) -> int:
        return self.layers[0].cols

    @property
    def output_size(self) -> int:
        return self.layers[-1].rows

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float inputs to int8 through input_scale (round half away from zero, saturate)."""
        if self.input_scale is None:
            raise QNetError("input_scale: absent, so float inputs cannot be quantized; give int8 inputs")
        q = round_half_away(np.asarray(x, dtype=np.float64) / self.input_scale)
        return np.clip(q, ACT_MIN, ACT_MAX).astype(np.int8)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """The contract's rounding of a float to an integer: half away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _fail(key: str, problem: str):
    raise QNetError(f"{key}: {problem}")


def validate(net: QuantNetwork) -> None:
    if not net.layers:
        _fail("num_layers", "must be at least 1")
    prev = None
    for k, layer in enumerate(net.layers):
        p = f"layer{k}"
        w, b = layer.weight, layer.bias
        if not isinstance(w, np.ndarray) or w.dtype != np.int8:
            _fail(f"{p}.weight", f"must be int8, not {getattr(w, 'dtype', type(w).__name__)}")
        if w.ndim != 2 or 0 in w.shape:
            _fail(f"{p}.weight", f"must be a non-empty [M, N] matrix, not shape {w.shape}")
        if (w == -128).any():
            _fail(f"{p}.weight", "holds -128; weights must be in [-127, 127]")
        if not isinstance(b, np.ndarray) or b.dtype != np.int32:
            _fail(f"{p}.bias", f"must be int32, not {getattr(b, 'dtype', type(b).__name__)}")
        if b.shape != (w.shape[0],):
            _fail(f"{p}.bias", f"has shape {b.shape}, but {p}.weight has {w.shape[0]} rows")
        if layer.mode not in ("mac", "mam"):
            _fail(f"{p}.mode", f"must be 'mac' or 'mam', not {layer.mode!r}")
        if isinstance(layer.mult, bool) or not isinstance(layer.mult, (int, np.integer)) \
                or not 1 <= layer.mult < MULT_MAX:
            _fail(f"{p}.mult", f"must be an integer in [1, {MULT_MAX - 1}], not {layer.mult!r}")
        if isinstance(layer.shift, bool) or not isinstance(layer.shift, (int, np.integer)) \
                or not 0 <= layer.shift <= SHIFT_MAX:
            _fail(f"{p}.shift", f"must be an integer in [0, {SHIFT_MAX}], not {layer.shift!r}")
        if not isinstance(layer.relu, (bool, np.bool_)):
            _fail(f"{p}.relu", f"must be a bool, not {layer.relu!r}")
        if prev is not None and w.shape[1] != prev:
            _fail(f"{p}.weight", f"has {w.shape[1]} columns but layer{k - 1} has {prev} rows")
        prev = w.shape[0]
    for key in ("input_scale", "output_scale"):
        v = getattr(net, key)
        if v is not None and (not isinstance(v, (float, int, np.floating)) or not math.isfinite(v) or v <= 0):
            _fail(key, f"must be a positive finite float, not {v!r}")


def save_qnet(net: QuantNetwork, path: str | os.PathLike) -> Path:
    validate(net)
    arrays = {"format": np.array(FORMAT), "num_layers": np.array(len(net.layers), dtype=np.int64)}
    for k, layer in enumerate(net.layers):
        arrays[f"layer{k}.weight"] = layer.weight
        arrays[f"layer{k}.bias"] = layer.bias
        arrays[f"layer{k}.mode"] = np.array(layer.mode)
        arrays[f"layer{k}.mult"] = np.array(int(layer.mult), dtype=np.int64)
        arrays[f"layer{k}.shift"] = np.array(int(layer.shift), dtype=np.int64)
        arrays[f"layer{k}.relu"] = np.array(bool(layer.relu))
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
        if fmt != FORMAT:
            _fail("format", f"unknown format {fmt!r}; this mamfpga reads {FORMAT!r}")
        n = _scalar(z, "num_layers", int)
        if not 1 <= n <= 4096:
            _fail("num_layers", f"must be between 1 and 4096, not {n}")
        layers = []
        for k in range(n):
            p = f"layer{k}"
            for key in ("weight", "bias"):
                if f"{p}.{key}" not in keys:
                    _fail(f"{p}.{key}", "missing")
            layers.append(QuantLayer(
                weight=z[f"{p}.weight"], bias=z[f"{p}.bias"],
                mode=_scalar(z, f"{p}.mode", str), mult=_scalar(z, f"{p}.mult", int),
                shift=_scalar(z, f"{p}.shift", int), relu=_scalar(z, f"{p}.relu", bool)))
        input_scale = _scalar(z, "input_scale", float) if "input_scale" in keys else None
        output_scale = _scalar(z, "output_scale", float) if "output_scale" in keys else None
        known = {"format", "num_layers", "input_scale", "output_scale"} | {
            f"layer{k}.{f}" for k in range(n) for f in ("weight", "bias", "mode", "mult", "shift", "relu")}
        extra = {}
        for key in keys - known:
            if key.startswith("layer") and key.split(".")[0][5:].isdigit() and int(key.split(".")[0][5:]) >= n:
                _fail(key, f"belongs to a layer beyond num_layers={n}")
            extra[key] = z[key]
        return QuantNetwork(layers, input_scale, output_scale, extra)
    except QNetError as exc:
        raise QNetError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as exc:
        raise QNetError(f"{path}: truncated or corrupt .npz ({type(exc).__name__}: {exc})") from None
