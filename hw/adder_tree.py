"""Pipelined adder tree over L signed lanes: the MAC processing element's reduction.

Same streams, stall behaviour and latency as :class:`~mamfpga.hw.maxmin_tree.MaxMinTree`;
the sum grows by one bit per level, so no lane combination overflows.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed

from mamfpga.hw.tree import LaneReduction, pipelined_tree, tree_latency

__all__ = ["AdderTree"]


class AdderTree(LaneReduction):
    """Sum of ``lanes`` signed ``width``-bit values, ``width + ceil(log2 L)`` bits wide."""

    def __init__(self, *, width: int = 16, lanes: int = 4, stages_per_level: int = 1):
        super().__init__(width=width, lanes=lanes, out_shape=lambda c: signed(c.out_width),
                         stages_per_level=stages_per_level)

    @property
    def out_width(self) -> int:
        return self.width + tree_latency(self.lanes)

    def elaborate(self, platform):
        m = Module()
        if self.latency == 0:
            m.d.comb += [self.o.payload.eq(self.i.payload[0]), self.o.valid.eq(self.i.valid),
                         self.i.ready.eq(self.o.ready)]
            return m
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        root, valid = pipelined_tree(m, [(self.i.payload[k],) for k in range(self.lanes)],
                                     [signed(self.out_width)], lambda d, a, b: (a[0] + b[0],),
                                     advance, self.i.valid, names=("sum",))
        # two stages a level: the sum registered once more per level (as long as a comparator
        # tree with registered compares)
        for d in range(self.latency - tree_latency(self.lanes)):
            r, v = Signal.like(root[0], name=f"sum_d{d}"), Signal(name=f"sum_valid_d{d}")
            with m.If(advance):
                m.d.sync += [r.eq(root[0]), v.eq(valid)]
            root, valid = (r,), v
        m.d.comb += [self.o.payload.eq(root[0]), self.o.valid.eq(valid)]
        return m
