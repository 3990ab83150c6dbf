"""Post-training quantization of a float Network into a QuantNetwork (contract v2).

- weights: symmetric int8, s_w = max|W| / 127, per output channel for conv
  layers (the default; ``per_channel`` sets it for every weighted layer) or
  per layer; a model trained with b-bit weights (``weight_bits``): per row,
  s_w = max|W_row| / (2**(b-1) - 1), its trained grid, so the integers are exact;
- activations: int8, one scale per layer output, calibrated on data: the
  largest float activation over the calibration set maps to 127 (ReLU
  outputs use 0..127; the logits of the last layer use -127..127); a max
  pool keeps its input's scale;
- bias: int32, b / (s_w * s_in);
- requantization: y = acc * (s_w * s_in / s_out) as mult / 2**shift, with the
  largest shift that keeps mult < 2**16 (most precision), one per output
  channel or row when the weights are scaled per channel.

A network simplified beforehand may read only some input columns; the
QuantNetwork then carries ``input_index`` and ``input_size`` (optional keys)
and :func:`mamfpga.sw.golden.prepare_inputs` selects those columns from a
full-width input.
"""

from __future__ import annotations

import math

import numpy as np

from mamfpga.sw.network import Network
from mamfpga.sw.qnet import MULT_MAX, SHIFT_MAX, QNetError, QuantLayer, QuantNetwork, round_half_away

__all__ = ["quantize", "mult_shift"]

INT32_MAX = (1 << 31) - 1


def mult_shift(scale: float, bits: int = 16) -> tuple[int, int]:
    """(mult, shift) with mult / 2**shift ~= scale, 1 <= mult < 2**bits (``bits`` <= 24, the
    contract's widest), 0 <= shift <= 62: the largest shift that keeps mult in range (most
    precision). With ``bits`` > 16 a mult's trailing zero bits are shifted out (the same value,
    so a power-of-two scale keeps a narrow mult and the hardware its 16-bit requantizer)."""
    top = 1 << bits
    if not 1 <= bits <= MULT_MAX.bit_length() - 1:
        raise ValueError(f"mult bits must be in [1, {MULT_MAX.bit_length() - 1}], not {bits}")
    if not math.isfinite(scale) or scale <= 0:
        raise QNetError(f"requantization scale must be positive and finite, not {scale}")
    if scale >= top:
        raise QNetError(f"requantization scale {scale:g} needs mult >= 2**{bits}; the contract allows less")
    shift = min(SHIFT_MAX, max(0, math.floor(math.log2((top - 1) / scale))))
    mult = int(round(scale * (1 << shift)))
    while mult >= top and shift > 0:
        shift -= 1
        mult = int(round(scale * (1 << shift)))
    if bits > 16:
        while mult > 1 and mult % 2 == 0 and shift > 0:
            mult, shift = mult >> 1, shift - 1
    return max(1, mult), shift


def _scale(max_abs: float, lim: int = 127) -> float:
    return max_abs / lim if max_abs > 0 else 1.0


def quantize(net: Network, calib: np.ndarray, *, per_channel: bool | None = None,
             weight_bits: int | None = None, act_bits: int | None = None,
             act_ranges: list[float] | None = None) -> QuantNetwork:
    """Quantize ``net`` with activation ranges measured on ``calib`` (float [B, input_size] or
    [B, *input_shape]). ``per_channel``: weight scales per output row/channel for every layer
    (True), for none (False), or for conv layers only (None, the default). ``weight_bits``: the
    network was trained on b-bit grids (``mamfpga train --weight-bits``): every layer's weights
    get its rows' trained scales, max |w_row| / (2**(b-1) - 1), and become b-bit integers.
    ``act_bits``: every weighted layer's output but the last is b bits, [0, 2**b - 1] after a
    ReLU (``act_max``; b = 8: unsigned bytes) or [-2**(b-1), 2**(b-1) - 1], its step its range
    over that: the trained ``act_ranges`` (one per such output, ``mamfpga train --act-bits``),
    else the calibration data's largest activation."""
    calib = np.asarray(calib, dtype=np.float64).reshape(len(calib), -1)
    if calib.shape[1] != net.input_size:
        raise QNetError(f"calibration data has {calib.shape[1]} features per sample, the network takes "
                        f"{net.input_size}")
    if len(calib) == 0:
        raise QNetError("calibration data is empty")
    x = calib[:, net.input_index] if net.input_index is not None else calib
    x = x.reshape((len(x),) + net.input_shape)
    s_in = _scale(float(np.abs(x).max()))
    input_scale = s_in
    layers = []
    hidden = [k for k, l in enumerate(net.layers) if l.kind != "maxpool2d"][:-1]
    if act_ranges is not None and len(act_ranges) != len(hidden):
        raise QNetError(f"{len(act_ranges)} trained activation ranges for {len(hidden)} hidden layer outputs")
    for k, layer in enumerate(net.layers):
        z = layer.forward(x)
        if layer.kind == "maxpool2d":
            layers.append(QuantLayer(None, None, kind="maxpool2d", kernel=layer.kernel, stride=layer.stride))
            x = z
            continue
        w = layer.weight
        lim = 127 if weight_bits is None else (1 << (weight_bits - 1)) - 1
        channel = weight_bits is not None or (per_channel if per_channel is not None else layer.kind == "conv2d")
        if channel:
            s_w = np.array([_scale(float(np.abs(row).max()), lim) for row in w.reshape(len(w), -1)])
        else:
            s_w = np.full(len(w), _scale(float(np.abs(w).max())))
        wq = np.clip(round_half_away(w / s_w.reshape((-1,) + (1,) * (w.ndim - 1))), -lim, lim).astype(np.int8)
        bq = round_half_away(layer.bias / (s_w * s_in))
        if np.abs(bq).max(initial=0) > INT32_MAX:
            raise QNetError(f"layer{k}.bias: a bias of {np.abs(layer.bias).max():g} does not fit int32 "
                            f"at scale {float(np.min(s_w)) * s_in:g}")
        act_max = 127
        if act_bits is not None and k in hidden:
            act_max = (1 << act_bits) - 1 if layer.relu else (1 << (act_bits - 1)) - 1
            r = (act_ranges[hidden.index(k)] if act_ranges is not None
                 else float(np.max(z) if layer.relu else np.abs(z).max()))
            s_out = _scale(float(r), act_max)
        else:
            s_out = _scale(float(np.abs(z).max()))
        pairs = [mult_shift(float(sw) * s_in / s_out) for sw in (s_w if channel else s_w[:1])]
        if channel:
            mult = np.array([p[0] for p in pairs], np.int64)
            shift = np.array([p[1] for p in pairs], np.int64)
        else:
            mult, shift = pairs[0]
        layers.append(QuantLayer(wq, bq.astype(np.int32), layer.mode, mult, shift, bool(layer.relu),
                                 kind=layer.kind, stride=layer.stride, padding=layer.padding,
                                 weight_bits=weight_bits, act_max=act_max))
        x, s_in = z, s_out
    extra = {}
    if net.input_index is not None:
        extra = {"input_index": np.asarray(net.input_index, dtype=np.int64),
                 "input_size": np.array(net.input_size, dtype=np.int64)}
    return QuantNetwork(layers, input_scale=input_scale, output_scale=s_in, extra=extra,
                        input_shape=net.input_shape)
