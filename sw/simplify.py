"""Remove what pruning left dead, keeping the network's function exactly.

Two kinds of dead hardware:

- a *dead neuron* has all its weights pruned: it outputs the constant
  c = act(b) whatever the input;
- an *unread neuron* is one that no weight of the next layer reads (its
  column there is all zero), and an *unread input* is a column of layer 0
  that no weight reads.

A dead neuron's constant is folded into the next layer: into the bias of a
MAC layer (b' += W'[:, i] * c). In a MAM layer a constant is a max/min
candidate and cannot become a bias, so there the neuron goes only when its
product is always zero (c == 0, or its column is all zero).

Removing a column whose product is always 0 is exact in a MAC layer. In a
MAM layer the zero product is a candidate for the max and the min (DESIGN.md's
contract), so the column goes only if every row keeps another structural
zero (a pruned weight) to offer that 0. Output neurons always stay, and every
layer keeps at least one neuron.
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


def _removable_zero_columns(nxt: Layer, candidates: list[int], zero_product: np.ndarray) -> list[int]:
    """Which of ``candidates`` (columns of ``nxt`` whose product is always 0) can go.

    MAC: all. MAM: greedily, while each row keeps another structural zero weight
    among the columns that stay.
    """
    if nxt.mode == "mac":
        return list(candidates)
    struct_zero = (nxt.weight == 0)
    keep_zeros = struct_zero.sum(axis=1)          # structural zeros per row, all columns
    removed = []
    for i in candidates:
        after = keep_zeros - struct_zero[:, i]
        if np.all(after >= 1):
            keep_zeros = after
            removed.append(i)
    return removed


def eliminate_dead(layers: list, input_size: int, input_index: np.ndarray | None,
                   const_out: Callable, fold: Callable) -> tuple[list, np.ndarray, SimplifyReport]:
    """The elimination itself, for any layers with ``weight``, ``bias``, ``mode`` (modified in place).

    ``const_out(layer)`` gives every row's output when all its weights are zero;
    ``fold(nxt, cols, values)`` returns nxt's bias with those constant inputs folded
    in, or None when that is not possible (then the neurons stay).
    """
    input_index = np.arange(input_size) if input_index is None else np.array(input_index)
    sizes_before = [len(input_index)] + [l.weight.shape[0] for l in layers]
    removed_neurons = [0] * len(layers)
    removed_inputs = 0
    changed = True
    while changed:
        changed = False
        # hidden layers: neurons of layer k, columns of layer k+1
        for k in range(len(layers) - 1):
            cur, nxt = layers[k], layers[k + 1]
            rows = cur.weight.shape[0]
            dead = np.all(cur.weight == 0, axis=1)
            unread = np.all(nxt.weight == 0, axis=0)
            const = const_out(cur)                         # output of a dead neuron
            if nxt.mode == "mac":
                remove = [i for i in range(rows) if dead[i] or unread[i]]
            else:
                zero_product = unread | (dead & (const == 0))
                remove = _removable_zero_columns(nxt, list(np.flatnonzero(zero_product)), zero_product)
            remove = sorted(remove)[:rows - 1]             # keep at least one neuron
            if not remove:
                continue
            folded = [i for i in remove if dead[i] and not unread[i]] if nxt.mode == "mac" else []
            if folded:
                bias = fold(nxt, folded, const[folded])
                if bias is None:                           # cannot fold: keep the dead neurons
                    remove = [i for i in remove if i not in set(folded)]
                    if not remove:
                        continue
                else:
                    nxt.bias = bias
            keep = np.setdiff1d(np.arange(rows), np.array(remove))
            cur.weight, cur.bias = cur.weight[keep], cur.bias[keep]
            nxt.weight = nxt.weight[:, keep]
            removed_neurons[k] += len(remove)
            changed = True
        # inputs of layer 0
        first = layers[0]
        unread = np.flatnonzero(np.all(first.weight == 0, axis=0))
        if len(unread):
            gone = _removable_zero_columns(first, list(unread), None)[:first.weight.shape[1] - 1]
            if gone:
                keep = np.setdiff1d(np.arange(first.weight.shape[1]), np.array(gone))
                first.weight = first.weight[:, keep]
                input_index = input_index[keep]
                removed_inputs += len(gone)
                changed = True
    report = SimplifyReport(removed_neurons[:-1], removed_inputs, sizes_before,
                            [len(input_index)] + [l.weight.shape[0] for l in layers])
    return layers, input_index, report


def simplify(net: Network) -> tuple[Network, SimplifyReport]:
    """A smaller float network computing the same function (exact up to float rounding of folded biases)."""
    layers = [Layer(l.weight.copy(), l.bias.copy(), l.mode, l.relu, l.name) for l in net.layers]

    def const_out(layer):
        return np.maximum(layer.bias, 0.0) if layer.relu else layer.bias

    def fold(nxt, cols, values):
        return nxt.bias + nxt.weight[:, cols] @ values

    layers, input_index, report = eliminate_dead(layers, net.input_size, net.input_index, const_out, fold)
    out_index = None if np.array_equal(input_index, np.arange(net.input_size)) else input_index
    return Network(layers, net.input_size, out_index, dict(net.meta)), report
