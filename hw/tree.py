"""A pipelined reduction tree: one registered level per halving, any combine function.

Used by the comparator tree (max and min of L lanes), the adder tree (sum of L lanes) and the
accelerator's cross-PE tree. Leaves are tuples of Amaranth values; ``combine(level, a, b)``
returns the combined tuple; an odd node is carried forward. Every level
advances when ``advance`` is high, so the whole tree stalls as one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from amaranth import Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mamfpga.compile.arch import clog2
from mamfpga.hw.checks import check_int

__all__ = ["pipelined_tree", "tree_latency", "LaneReduction"]


def tree_latency(leaves: int) -> int:
    return clog2(leaves)


def pipelined_tree(m, leaves: Sequence[tuple], shapes: Sequence[Shape], combine: Callable,
                   advance, valid, *, names: Sequence[str]):
    """Reduce ``leaves`` (tuples of values with ``shapes``) to one tuple in tree_latency levels.

    Returns (root tuple, valid of the root).
    """
    level = list(leaves)
    for depth in range(tree_latency(len(level))):
        nxt = []
        for k in range(0, len(level), 2):
            regs = tuple(Signal(shape, name=f"{n}_l{depth + 1}_{k // 2}") for shape, n in zip(shapes, names))
            values = level[k] if k + 1 == len(level) else combine(depth, level[k], level[k + 1])
            with m.If(advance):
                m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
            nxt.append(regs)
        v = Signal(name=f"{names[0]}_valid_l{depth + 1}")
        with m.If(advance):
            m.d.sync += v.eq(valid)
        level, valid = nxt, v
    return level[0], valid


class LaneReduction(wiring.Component):
    """Base of the trees: ``i`` carries L signed ``width``-bit lanes, ``o`` the reduction
    (``out_shape``, given by the subclass). Parameters are checked and read-only."""

    def __init__(self, *, width: int, lanes: int, out_shape, ports=None):
        self._width = check_int("width", width, 2, 64)
        self._lanes = check_int("lanes", lanes, 1, 4096)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(width), lanes))),
            "o": Out(stream.Signature(out_shape(self))),
            **(ports(self) if ports else {}),
        })

    @property
    def width(self) -> int:
        return self._width

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output: ceil(log2(L))."""
        return tree_latency(self._lanes)
