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


def tree_latency(leaves: int, stages_per_level: int = 1) -> int:
    return clog2(leaves) * stages_per_level


def pipelined_tree(m, leaves: Sequence[tuple], shapes: Sequence[Shape], combine: Callable,
                   advance, valid, *, names: Sequence[str], decide: Callable | None = None):
    """Reduce ``leaves`` (tuples of values with ``shapes``) to one tuple in tree_latency levels.

    With ``decide``, each level takes two registered stages: ``decide(level, a, b)`` (a tuple of
    1-bit values: the comparisons) is registered with both operands, then ``combine(level, a, b,
    decisions)`` selects from the registered ones (a comparison's carry chain and its select's
    fan-out in cycles of their own). Returns (root tuple, valid of the root).
    """
    level = list(leaves)

    def reg(values, shapes_, tag):
        regs = tuple(Signal(shape, name=f"{tag}_{i}") for i, shape in enumerate(shapes_))
        with m.If(advance):
            m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
        return regs

    def reg_valid(v, tag):
        r = Signal(name=tag)
        with m.If(advance):
            m.d.sync += r.eq(v)
        return r

    for depth in range(tree_latency(len(level))):
        pairs = [(level[k], level[k + 1] if k + 1 < len(level) else None) for k in range(0, len(level), 2)]
        decisions = [None] * len(pairs)
        if decide is not None:                 # stage 1: the operands and the comparisons registered
            staged = []
            for i, (a, b) in enumerate(pairs):
                tag = f"c{depth + 1}_{i}"
                if b is None:
                    staged.append((reg(a, shapes, tag + "_a"), None))
                    continue
                d = tuple(decide(depth, a, b))
                decisions[i] = reg(d, [1] * len(d), tag + "_d")
                staged.append((reg(a, shapes, tag + "_a"), reg(b, shapes, tag + "_b")))
            pairs = staged
            valid = reg_valid(valid, f"{names[0]}_valid_c{depth + 1}")
        nxt = []
        for i, ((a, b), d) in enumerate(zip(pairs, decisions)):
            values = a if b is None else (combine(depth, a, b) if d is None else combine(depth, a, b, d))
            regs = tuple(Signal(shape, name=f"{n}_l{depth + 1}_{i}") for shape, n in zip(shapes, names))
            with m.If(advance):
                m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
            nxt.append(regs)
        level, valid = nxt, reg_valid(valid, f"{names[0]}_valid_l{depth + 1}")
    return level[0], valid


class LaneReduction(wiring.Component):
    """Base of the trees: ``i`` carries L signed ``width``-bit lanes, ``o`` the reduction
    (``out_shape``, given by the subclass). Parameters are checked and read-only."""

    def __init__(self, *, width: int, lanes: int, out_shape, ports=None, stages_per_level: int = 1):
        self._width = check_int("width", width, 2, 64)
        self._lanes = check_int("lanes", lanes, 1, 4096)
        self._stages = check_int("stages_per_level", stages_per_level, 1, 2)
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
        """Cycles from an accepted input to its output: ceil(log2(L)) levels of
        ``stages_per_level`` registered stages."""
        return tree_latency(self._lanes, self._stages)
