"""The golden model: DESIGN.md's arithmetic contract (version 2), exactly, on batches.

    p     = W * x over a row (dense) or a window of the zero-padded input (conv2d)
    mac:  acc = b + sum p
    mam:  acc = b + max p + min p                        (zero products included)
    r     = floor((acc * mult + 2**(shift-1)) / 2**shift)     if shift > 0 (a tie to even instead
                                                              with rounding "half_even")
          = acc * mult                                        if shift = 0
    y     = clamp(r, 0 if relu else -(act_max+1), act_max)  (mult, shift per row / channel or one;
                                                          act_max 127 unless the layer says)
    maxpool2d: y = max over the window (no padding, floor)

Integers throughout (int64). MAC sums are exact in int64 (dense) or in
float64 (conv2d through torch's convolution: every partial sum is an integer
far below 2**53). The MAM max and min run on float32 copies of the operands
(int8 weights, activations in [-128, 255]), where every product (|p| <= 32385 < 2**24) is
exact, so the fused CPU kernel serves them bit for bit; a conv layer's
windows are unfolded into rows for it, a batch chunk at a time. Memory stays
of the order of the activations: no B x M x (C*KH*KW) x positions tensor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from mamfpga.sw.mam import CHUNK_ELEMENTS, maxmin_values
from mamfpga.sw.qnet import ACT_MAX, ACT_MIN, QNetError, QuantLayer, QuantNetwork

__all__ = ["layer_forward", "run", "run_layers", "accumulate", "requantize", "requantize_values", "prepare_inputs"]


def _conv_windows(x: torch.Tensor, layer: QuantLayer) -> tuple[torch.Tensor, int, int]:
    """The zero-padded input's windows as rows [B * OH * OW, C * KH * KW] (float32), OH, OW."""
    top, left, bottom, right = layer.padding
    xp = F.pad(x.to(torch.float32), (left, right, top, bottom))
    kh, kw = layer.weight.shape[2:]
    cols = F.unfold(xp, (kh, kw), stride=layer.stride)          # [B, C*KH*KW, OH*OW]
    oh = (xp.shape[2] - kh) // layer.stride[0] + 1
    ow = (xp.shape[3] - kw) // layer.stride[1] + 1
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]), oh, ow


def accumulate(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    """acc (int64) of one dense or conv2d layer: [B, M] for x [B, N], [B, M, OH, OW] for x [B, C, H, W]."""
    w = torch.from_numpy(layer.weight.astype(np.int64))
    b = torch.from_numpy(layer.bias.astype(np.int64))
    if layer.kind == "conv2d":
        m = w.shape[0]
        if layer.mode == "mac":
            top, left, bottom, right = layer.padding
            xp = F.pad(x.to(torch.float64), (left, right, top, bottom))
            acc = F.conv2d(xp, w.to(torch.float64), stride=layer.stride).round().to(torch.int64)
            return acc + b[:, None, None]
        wf = w.reshape(m, -1).to(torch.float32)
        per_sample = int(np.prod(x.shape[1:])) * int(np.prod(w.shape[2:]))   # unfolded values per sample
        step = max(1, CHUNK_ELEMENTS // max(1, per_sample))
        outs = []
        for s in range(0, x.shape[0], step):
            rows, oh, ow = _conv_windows(x[s:s + step], layer)
            vmax, vmin = maxmin_values(rows, wf)                      # [b * OH * OW, M]
            acc = (vmax.to(torch.int64) + vmin.to(torch.int64)).view(-1, oh * ow, m)
            outs.append(acc.transpose(1, 2).reshape(-1, m, oh, ow))
        return torch.cat(outs) + b[:, None, None]
    x = x.reshape(x.shape[0], -1)
    if layer.mode == "mac":
        # int64 matmul is exact; float64 would be too (|sum| < 2**53), but stay in integers
        acc = x.to(torch.int64) @ w.t()
    else:
        vmax, vmin = maxmin_values(x.to(torch.float32), w.to(torch.float32))
        acc = vmax.to(torch.int64) + vmin.to(torch.int64)
    return acc + b


def _per_row(v, acc):
    """A mult or shift as it applies to ``acc``'s rows: an int, or an array [M] shaped to
    broadcast over acc's axis 1 ([B, M] or [B, M, OH, OW]; a 1-D acc is one row each)."""
    if np.ndim(v) == 0:
        return int(v)
    a = np.asarray(v, dtype=np.int64)
    ndim = np.ndim(acc)
    if ndim >= 2:
        a = a.reshape((-1,) + (1,) * (ndim - 2))
    return torch.from_numpy(a) if isinstance(acc, torch.Tensor) else a


def requantize_values(acc, mult, shift, relu: bool, act_max: int = ACT_MAX, rounding: str = "half_up"):
    """The contract's requantization of ``acc`` (an int, a numpy array or a torch tensor of
    int64): multiply, round at the shift (a half up, or to even), clamp to [0 or -(act_max + 1),
    act_max]. ``mult`` and ``shift`` are one integer or one per row / channel (axis 1 of acc).
    The one definition the golden model, the compiler and the program simulator use."""
    mult, shift = _per_row(mult, acc), _per_row(shift, acc)
    t = acc * mult
    if isinstance(shift, int):
        half = (1 << (shift - 1)) if shift > 0 else 0
        r = (t + half) >> shift if shift > 0 else t       # arithmetic shift = floor division
    else:
        half = (1 << np.maximum(shift - 1, 0)) * (shift > 0) if isinstance(shift, np.ndarray) else \
            torch.bitwise_left_shift(torch.ones_like(shift), (shift - 1).clamp(min=0)) * (shift > 0)
        r = (t + half) >> shift
    if rounding == "half_even" and not (isinstance(shift, int) and shift == 0):
        # a tie (t's bits below the shift exactly 100...0, shift > 0) that rounded up to an odd
        # value goes down to the even one
        down = ((t & ((half << 1) - 1)) == half) & (half > 0) & ((r & 1) == 1)
        if isinstance(down, torch.Tensor):
            r = r - down.to(torch.int64)
        elif isinstance(down, np.ndarray):
            r = r - down.astype(np.int64)
        else:
            r = r - int(down)
    lo = 0 if relu else -(act_max + 1)
    if isinstance(r, torch.Tensor):
        return r.clamp(lo, act_max)
    if isinstance(r, np.ndarray):
        return np.clip(r, lo, act_max)
    return max(lo, min(act_max, int(r)))


def requantize(layer: QuantLayer, acc: torch.Tensor) -> torch.Tensor:
    """The layer's outputs (as int64) from acc, with rounding, shift and clamp."""
    return requantize_values(acc, layer.mult, layer.shift, layer.relu, layer.act_max, layer.rounding)


def layer_forward(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    """One layer on a batch: x [B, N] or [B, C, H, W] (int64) -> its int8 outputs as int64."""
    if layer.kind == "maxpool2d":
        # float32 holds every int8 value exactly
        return F.max_pool2d(x.to(torch.float32), layer.kernel, layer.stride).to(torch.int64)
    return requantize(layer, accumulate(layer, x))


def prepare_inputs(net: QuantNetwork, x: np.ndarray) -> np.ndarray:
    """int8 [B, *input_shape] from int8 or float inputs (floats go through input_scale), given as
    [B, *input_shape] or flattened [B, input_size] (a single sample may leave out B)."""
    x = np.asarray(x)
    shape = tuple(net.input_shape)
    if x.ndim == len(shape) and x.shape == shape or x.ndim == 1:
        x = x[None]
    if x.ndim == 1 + len(shape) and x.shape[1:] == shape or x.ndim == 2:
        pass
    else:
        raise QNetError(f"inputs: must be [B, {', '.join(map(str, shape))}]"
                        + (f" or [B, {net.input_size}]" if len(shape) > 1 else "") + f", not shape {x.shape}")
    x = x.reshape(len(x), -1)
    full = net.extra.get("input_size")
    if full is not None and "input_index" in net.extra and x.shape[1] == int(full) != net.input_size:
        x = x[:, np.asarray(net.extra["input_index"])]     # the columns a simplified network reads
    if x.shape[1] != net.input_size:
        also = f" (or {int(full)} before its input selection)" if full is not None else ""
        raise QNetError(f"inputs: have {x.shape[1]} values per sample, the network takes {net.input_size}{also}")
    if x.dtype == np.int8:
        pass
    elif x.dtype.kind == "f":
        x = net.quantize_input(x)
    elif x.dtype.kind in "iu":
        if x.size and (x.min() < ACT_MIN or x.max() > ACT_MAX):
            raise QNetError(f"inputs: integer values must be in [-128, 127], got [{x.min()}, {x.max()}]")
        x = x.astype(np.int8)
    else:
        raise QNetError(f"inputs: must be int8 or float, not {x.dtype}")
    return x.reshape((len(x),) + shape)


def run_layers(net: QuantNetwork, x: np.ndarray, batch: int = 1024) -> list[np.ndarray]:
    """Every layer's output bytes as int8, flattened to [B, values] (C, H, W order for a feature
    map), for inputs x (int8, or float through input_scale); a layer with act_max 255 writes
    unsigned bytes, which read as int8 wrap (200 is -56), as the hardware's memories hold them."""
    xq = prepare_inputs(net, x)
    sizes = [int(np.prod(s)) for s in net.shapes[1:]]
    outs: list[list[np.ndarray]] = [[] for _ in net.layers]
    for s in range(0, len(xq), batch):
        h = torch.from_numpy(xq[s:s + batch].astype(np.int64))
        for k, layer in enumerate(net.layers):
            h = layer_forward(layer, h)
            outs[k].append(h.reshape(h.shape[0], -1).numpy().astype(np.uint8).view(np.int8))
    return [np.concatenate(o) if o else np.zeros((0, n), np.int8) for o, n in zip(outs, sizes)]


def run(net: QuantNetwork, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """The network's int8 output [B, values of the last layer]."""
    return run_layers(net, x, batch)[-1]


def classify(y: np.ndarray) -> np.ndarray:
    """The class answer: the first index of the largest output."""
    return np.argmax(y, axis=1)
