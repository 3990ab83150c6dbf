"""Pipelined adder tree over L signed lanes: the MAC processing element's reduction.

Same streams and stall behaviour as :class:`~mamfpga.hw.maxmin_tree.MaxMinTree`;
the sum grows by one bit per level, so no lane combination overflows.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mamfpga.hw.checks import check_int
from mamfpga.hw.tree import pipelined_tree, tree_latency

__all__ = ["AdderTree"]


class AdderTree(wiring.Component):
    """Sum of ``lanes`` signed ``width``-bit values, ``width + ceil(log2 L)`` bits wide."""

    def __init__(self, *, width: int = 16, lanes: int = 4):
        self._width = check_int("width", width, 2, 64)
        self._lanes = check_int("lanes", lanes, 1, 4096)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(width), lanes))),
            "o": Out(stream.Signature(signed(self.out_width))),
        })

    @property
    def width(self) -> int:
        return self._width

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def latency(self) -> int:
        return tree_latency(self._lanes)

    @property
    def out_width(self) -> int:
        return self._width + tree_latency(self._lanes)

    def elaborate(self, platform):
        m = Module()
        if self.latency == 0:
            m.d.comb += [self.o.payload.eq(self.i.payload[0]), self.o.valid.eq(self.i.valid),
                         self.i.ready.eq(self.o.ready)]
            return m
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        root, valid = pipelined_tree(m, [(self.i.payload[k],) for k in range(self._lanes)],
                                     [signed(self.out_width)], lambda d, a, b: (a[0] + b[0],),
                                     advance, self.i.valid, names=("sum",))
        m.d.comb += [self.o.payload.eq(root[0]), self.o.valid.eq(valid)]
        return m
