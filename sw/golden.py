"""The golden model: DESIGN.md's arithmetic contract, exactly, on batches.

    p_ij  = W_ij * x_j                                   (all N columns)
    mac:  acc_i = b_i + sum_j p_ij
    mam:  acc_i = b_i + max_j p_ij + min_j p_ij          (zero products included)
    r_i   = floor((acc_i * mult + 2**(shift-1)) / 2**shift)   if shift > 0
          = acc_i * mult                                      if shift = 0
    y_i   = clamp(r_i, 0 if relu else -128, 127)

Integers throughout (int64). MAC sums are exact in int64; the MAM max and min
run on float32 copies of the int8 operands, where every product of two int8
values (|p| <= 16384 < 2**24) is exact, so the fused CPU kernel serves them
bit for bit. Memory stays O(B*M + M*N): no B x M x N tensor.
"""

from __future__ import annotations

import numpy as np
import torch

from mamfpga.sw.mam import maxmin_values
from mamfpga.sw.qnet import ACT_MAX, ACT_MIN, QNetError, QuantLayer, QuantNetwork

__all__ = ["layer_forward", "run", "run_layers", "accumulate", "requantize", "requantize_values", "prepare_inputs"]


def accumulate(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    """acc [B, M] (int64) of one layer for int inputs x [B, N]."""
    w = torch.from_numpy(layer.weight.astype(np.int64))
    b = torch.from_numpy(layer.bias.astype(np.int64))
    if layer.mode == "mac":
        # int64 matmul is exact; float64 would be too (|sum| < 2**53), but stay in integers
        acc = x.to(torch.int64) @ w.t()
    else:
        vmax, vmin = maxmin_values(x.to(torch.float32), w.to(torch.float32))
        acc = vmax.to(torch.int64) + vmin.to(torch.int64)
    return acc + b


def requantize_values(acc, mult: int, shift: int, relu: bool):
    """The contract's requantization of ``acc`` (an int, a numpy array or a torch tensor of
    int64): multiply, round half up at the shift, clamp to [0 or -128, 127]. The one
    definition the golden model, the compiler and the program simulator use."""
    r = acc * int(mult)
    if shift > 0:
        r = (r + (1 << (shift - 1))) >> shift               # arithmetic shift = floor division
    lo = 0 if relu else ACT_MIN
    if isinstance(r, torch.Tensor):
        return r.clamp(lo, ACT_MAX)
    if isinstance(r, np.ndarray):
        return np.clip(r, lo, ACT_MAX)
    return max(lo, min(ACT_MAX, r))


def requantize(layer: QuantLayer, acc: torch.Tensor) -> torch.Tensor:
    """int8 outputs [B, M] (as int64) from acc, with rounding, shift and clamp."""
    return requantize_values(acc, layer.mult, layer.shift, layer.relu)


def layer_forward(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    return requantize(layer, accumulate(layer, x))


def prepare_inputs(net: QuantNetwork, x: np.ndarray) -> np.ndarray:
    """int8 [B, N0] from int8 or float inputs (floats go through input_scale)."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise QNetError(f"inputs: must be [B, {net.input_size}], not shape {x.shape}")
    full = net.extra.get("input_size")
    if full is not None and "input_index" in net.extra and x.shape[1] == int(full) != net.input_size:
        x = x[:, np.asarray(net.extra["input_index"])]     # the columns a simplified network reads
    if x.shape[1] != net.input_size:
        also = f" (or {int(full)} before its input selection)" if full is not None else ""
        raise QNetError(f"inputs: have {x.shape[1]} values per sample, the network takes {net.input_size}{also}")
    if x.dtype == np.int8:
        return x
    if x.dtype.kind == "f":
        return net.quantize_input(x)
    if x.dtype.kind in "iu":
        if x.size and (x.min() < ACT_MIN or x.max() > ACT_MAX):
            raise QNetError(f"inputs: integer values must be in [-128, 127], got [{x.min()}, {x.max()}]")
        return x.astype(np.int8)
    raise QNetError(f"inputs: must be int8 or float, not {x.dtype}")


def run_layers(net: QuantNetwork, x: np.ndarray, batch: int = 1024) -> list[np.ndarray]:
    """Every layer's int8 output [B, M_k] for inputs x (int8, or float through input_scale)."""
    xq = prepare_inputs(net, x)
    outs: list[list[np.ndarray]] = [[] for _ in net.layers]
    for s in range(0, len(xq), batch):
        h = torch.from_numpy(xq[s:s + batch].astype(np.int64))
        for k, layer in enumerate(net.layers):
            h = layer_forward(layer, h)
            outs[k].append(h.numpy().astype(np.int8))
    return [np.concatenate(o) if o else np.zeros((0, l.rows), np.int8) for o, l in zip(outs, net.layers)]


def run(net: QuantNetwork, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """The network's int8 output [B, M_{K-1}]."""
    return run_layers(net, x, batch)[-1]


def classify(y: np.ndarray) -> np.ndarray:
    """The class answer: the first index of the largest output."""
    return np.argmax(y, axis=1)
