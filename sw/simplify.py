"""Remove what pruning left dead, keeping the network's function exactly.

The units are a dense layer's neurons and a conv layer's output channels. Two kinds of
dead hardware:

- a *dead unit* has all its weights pruned: it outputs the constant c = act(b) whatever
  the input (at every position, for a channel; a max pool passes the constant on);
- an *unread unit* is one that no weight of the next weighted layer reads (its column
  there, its input channel of a conv, or its H*W columns of a dense layer reading the
  flattened feature map, all zero), and an *unread input* is a column of a dense layer 0
  that no weight reads.

A dead unit's constant is folded into the next layer: into the bias of a MAC layer
(b' += W'[:, cols] c), where a conv layer takes it only without padding (its border windows
would read padding zeros instead of c). In a MAM layer a constant is a max/min candidate and
cannot become a bias, so there the unit goes only when its product is always zero (c == 0,
or it is unread).

Removing a unit whose product is always 0 is exact in a MAC layer. In a MAM layer the zero
product is a candidate for the max and the min (DESIGN.md's contract), so the unit goes only
if every row or filter keeps another structural zero (a pruned weight) to offer that 0.
Output units always stay, and every layer keeps at least one unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mamfpga.sw.network import Layer, Network

__all__ = ["simplify", "eliminate_dead", "SimplifyReport"]


@dataclass
class SimplifyReport:
    removed_neurons: list[int]        # per hidden layer boundary k: neurons removed from layer k
    removed_inputs: int               # columns of layer 0 removed
    sizes_before: list[int]
    sizes_after: list[int]

    def summary(self) -> str:
        before = " -> ".join(map(str, self.sizes_before))
        after = " -> ".join(map(str, self.sizes_after))
        return f"{before}  simplified to  {after}"


def _removable_zero_groups(w2: np.ndarray, mode: str, candidates: list[int], group: int) -> list[int]:
    """Which of ``candidates`` (units whose products in the next layer are always 0, each
    ``group`` consecutive columns of its 2-D weight ``w2``) can go.

    MAC: all. MAM: greedily, while each row keeps another structural zero weight among the
    columns that stay.
    """
    if mode == "mac":
        return list(candidates)
    struct_zero = (w2 == 0)
    keep_zeros = struct_zero.sum(axis=1)          # structural zeros per row, all columns
    removed = []
    for i in candidates:
        after = keep_zeros - struct_zero[:, i * group:(i + 1) * group].sum(axis=1)
        if np.all(after >= 1):
            keep_zeros = after
            removed.append(i)
    return removed


class _Flat:
    """A weighted layer seen as a 2-D matrix (rows, C*KH*KW or N) for the fold callback."""

    def __init__(self, layer):
        self.weight = layer.weight.reshape(layer.weight.shape[0], -1)
        self.bias = layer.bias
        self.mode = layer.mode


def eliminate_dead(layers: list, input_size: int, input_index: np.ndarray | None,
                   const_out: Callable, fold: Callable,
                   input_shape: tuple | None = None) -> tuple[list, np.ndarray, SimplifyReport]:
    """The elimination itself, for layers with ``weight``, ``bias``, ``mode`` (dense, conv2d;
    maxpool2d ones with ``kind``, passed through), modified in place.

    ``const_out(layer)`` gives every unit's output when all its weights are zero;
    ``fold(nxt, cols, values)`` returns nxt's bias with those constant inputs folded
    in (``nxt.weight`` a 2-D [rows, columns] view), or None when that is not possible (then
    the units stay). ``input_shape`` is the network's ((N,) by default).
    """
    input_index = np.arange(input_size) if input_index is None else np.array(input_index)
    input_shape = tuple(input_shape) if input_shape is not None else (len(input_index),)
    weighted = [k for k, l in enumerate(layers) if getattr(l, "kind", "dense") != "maxpool2d"]
    sizes_before = [len(input_index)] + [layers[k].weight.shape[0] for k in weighted]
    removed_neurons = [0] * len(weighted)
    removed_inputs = 0
    changed = True
    while changed:
        changed = False
        for w_pos, (k, k2) in enumerate(zip(weighted, weighted[1:])):
            cur, nxt = layers[k], layers[k2]
            rows = cur.weight.shape[0]
            flat = _Flat(nxt)
            group = flat.weight.shape[1] // rows           # columns of nxt per unit of cur
            by_unit = flat.weight.reshape(flat.weight.shape[0], rows, group)
            dead = np.all(cur.weight.reshape(rows, -1) == 0, axis=1)
            unread = np.all(by_unit == 0, axis=(0, 2))
            const = const_out(cur)                         # output of a dead unit
            conv_pad = getattr(nxt, "kind", "dense") == "conv2d" and any(nxt.padding)
            if nxt.mode == "mac":
                remove = [i for i in range(rows) if dead[i] or unread[i]]
            else:
                zero_product = unread | (dead & (const == 0))
                remove = _removable_zero_groups(flat.weight, "mam", list(np.flatnonzero(zero_product)), group)
            remove = sorted(remove)[:rows - 1]             # keep at least one unit
            if not remove:
                continue
            folded = [i for i in remove if dead[i] and not unread[i] and const[i] != 0] \
                if nxt.mode == "mac" else []
            if folded and conv_pad:                        # padding reads 0, not the constant
                remove = [i for i in remove if i not in set(folded)]
                folded = []
                if not remove:
                    continue
            if folded:
                cols = np.concatenate([np.arange(i * group, (i + 1) * group) for i in folded])
                bias = fold(flat, cols, np.repeat(np.asarray(const)[folded], group))
                if bias is None:                           # cannot fold: keep the dead units
                    remove = [i for i in remove if i not in set(folded)]
                    if not remove:
                        continue
                else:
                    nxt.bias = bias
            keep = np.setdiff1d(np.arange(rows), np.array(remove))
            cur.weight, cur.bias = cur.weight[keep], cur.bias[keep]
            for name in ("mult", "shift"):                 # per-row scales of a quantized layer
                if np.ndim(getattr(cur, name, 0)):
                    setattr(cur, name, np.asarray(getattr(cur, name))[keep])
            nxt.weight = by_unit[:, keep].reshape((nxt.weight.shape[0], len(keep) * group)) \
                if getattr(nxt, "kind", "dense") == "dense" else nxt.weight[:, keep]
            removed_neurons[w_pos] += len(remove)
            changed = True
        # inputs of a dense layer 0 reading a vector
        first = layers[0]
        if getattr(first, "kind", "dense") == "dense" and len(input_shape) == 1:
            unread = np.flatnonzero(np.all(first.weight == 0, axis=0))
            if len(unread):
                gone = _removable_zero_groups(first.weight, first.mode, list(unread), 1)[:first.weight.shape[1] - 1]
                if gone:
                    keep = np.setdiff1d(np.arange(first.weight.shape[1]), np.array(gone))
                    first.weight = first.weight[:, keep]
                    input_index = input_index[keep]
                    removed_inputs += len(gone)
                    changed = True
    report = SimplifyReport(removed_neurons[:-1], removed_inputs, sizes_before,
                            [len(input_index)] + [layers[k].weight.shape[0] for k in weighted])
    return layers, input_index, report


def simplify(net: Network) -> tuple[Network, SimplifyReport]:
    """A smaller float network computing the same function (exact up to float rounding of folded biases)."""
    layers = [Layer(None if l.weight is None else l.weight.copy(), None if l.bias is None else l.bias.copy(),
                    l.mode, l.relu, l.name, kind=l.kind, stride=l.stride, padding=l.padding, kernel=l.kernel)
              for l in net.layers]

    def const_out(layer):
        return np.maximum(layer.bias, 0.0) if layer.relu else layer.bias

    def fold(nxt, cols, values):
        return nxt.bias + nxt.weight[:, cols] @ values

    layers, input_index, report = eliminate_dead(layers, net.input_size, net.input_index, const_out, fold,
                                                 input_shape=None if net.input_index is not None else net.input_shape)
    out_index = None if np.array_equal(input_index, np.arange(net.input_size)) else input_index
    return Network(layers, net.input_size, out_index, dict(net.meta),
                   input_shape=net.input_shape if out_index is None else None), report
