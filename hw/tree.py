"""A pipelined reduction tree: one level per halving, any combine function.

Used by the comparator tree (max and min of L lanes), the adder tree (sum of L lanes) and the
accelerator's cross-PE tree. Leaves are tuples of Amaranth values; an odd node is carried
forward. Every stage advances when ``advance`` is high, so the whole tree stalls as one.

A level is one registered stage (``combine(level, a, b)`` returns the combined tuple), or, given
``prepare``, two (:data:`mamfpga.compile.arch.TREE_LEVEL_CYCLES`): the first registers the
operands and ``prepare(level, a, b)`` (the comparisons, or a sum), the second registers
``combine(level, a, b, prepared)`` (the selects): no register-to-register path holds both a
16-bit comparison and the multiplexers it drives, which was the iCE40's critical path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from amaranth import Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mamfpga.compile.arch import TREE_LEVEL_CYCLES, clog2
from mamfpga.hw.checks import check_int

__all__ = ["pipelined_tree", "tree_latency", "LaneReduction"]


def tree_latency(leaves: int, stages: int = 1) -> int:
    """Cycles through a tree over ``leaves`` whose levels take ``stages`` registered stages."""
    return stages * clog2(leaves)


def pipelined_tree(m, leaves: Sequence[tuple], shapes: Sequence[Shape], combine: Callable,
                   advance, valid, *, names: Sequence[str], prepare: Callable | None = None, stages: int = 1):
    """Reduce ``leaves`` (tuples of values with ``shapes``) to one tuple in ceil(log2 n) levels,
    each one registered stage, or, with ``prepare`` and ``stages`` = 2, two (see the module's text).

    Returns (root tuple, valid of the root).
    """
    def stage(values, shapes_, tag):
        regs = tuple(Signal(shape, name=f"{n}_{tag}") for shape, n in zip(shapes_, names_of(len(values), tag)))
        with m.If(advance):
            m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
        return regs

    def names_of(n, tag):
        return [names[i] if i < len(names) else f"{names[0]}_x{i}" for i in range(n)]

    def delay(v, tag):
        r = Signal(name=f"{names[0]}_valid_{tag}")
        with m.If(advance):
            m.d.sync += r.eq(v)
        return r

    level = list(leaves)
    for depth in range(clog2(len(level))):
        nxt = []
        for k in range(0, len(level), 2):
            tag = f"l{depth + 1}_{k // 2}"
            if prepare is None or (stages == 1 and k + 1 == len(level)):
                values = level[k] if k + 1 == len(level) else combine(depth, level[k], level[k + 1])
                nxt.append(stage(values, shapes, tag))
            elif stages == 1:                        # prepare and combine in one stage
                a, b = level[k], level[k + 1]
                nxt.append(stage(combine(depth, a, b, tuple(prepare(depth, a, b))), shapes, tag))
            elif k + 1 == len(level):                # an odd node: carried through both stages
                nxt.append(stage(stage(level[k], shapes, tag + "a"), shapes, tag))
            else:
                a, b = level[k], level[k + 1]
                pre = tuple(prepare(depth, a, b))
                pre_r = tuple(Signal.like(p, name=f"{names[0]}_pre{i}_{tag}") if isinstance(p, Signal)
                              else Signal(p.shape(), name=f"{names[0]}_pre{i}_{tag}") for i, p in enumerate(pre))
                a_r, b_r = stage(a, shapes, tag + "a"), stage(b, shapes, tag + "b")
                with m.If(advance):
                    m.d.sync += [r.eq(p) for r, p in zip(pre_r, pre)]
                nxt.append(stage(combine(depth, a_r, b_r, pre_r), shapes, tag))
        valid = delay(valid, f"l{depth + 1}")
        if prepare is not None and stages == 2:
            valid = delay(valid, f"l{depth + 1}b")
        level = nxt
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
        """Cycles from an accepted input to its output: TREE_LEVEL_CYCLES x ceil(log2(L))."""
        return tree_latency(self._lanes, TREE_LEVEL_CYCLES)
