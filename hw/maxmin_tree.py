"""Pipelined max/min comparator tree over L signed lanes.

A MAM neuron needs both the largest and the smallest of its weighted inputs.
This block reduces L lanes to their max and min in ceil(log2(L)) registered
levels. The first level shares one comparator between max and min (for a pair
(a, b) a single ``a > b`` picks both), later levels have one comparator each
for the max and the min halves.

Streams: ``i`` carries an array of L signed lanes, ``o`` a struct
{max, min}. The pipeline stalls as a whole: it advances when its last stage is
empty or being read, so back-pressure on ``o`` holds every stage and
``i.ready`` falls. With L = 1 the block is a wire (latency 0).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data

from mamfpga.hw.tree import LaneReduction, pipelined_tree

__all__ = ["MaxMinTree"]


class MaxMinTree(LaneReduction):
    """Reduce ``lanes`` signed ``width``-bit values to their max and min.

    Parameters
    ----------
    width : int
        Bits per lane (signed two's complement), 2..64.
    lanes : int
        Number of lanes L >= 1; any L, not only powers of two.

    Attributes
    ----------
    latency : int
        Cycles from an accepted input to its output: ceil(log2(L)).
    """

    def __init__(self, *, width: int = 8, lanes: int = 4):
        super().__init__(width=width, lanes=lanes, out_shape=lambda c: data.StructLayout({
            "max": signed(c.width), "min": signed(c.width)}))

    def elaborate(self, platform):
        m = Module()
        width, lanes = self.width, self.lanes

        if self.latency == 0:
            m.d.comb += [
                self.o.payload.max.eq(self.i.payload[0]),
                self.o.payload.min.eq(self.i.payload[0]),
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
            ]
            return m

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        # Leaves are (max, min) pairs, each lane being both; the first level
        # shares one comparator per pair, later levels compare maxes and mins apart.
        def combine(depth, a, b):
            if depth == 0:
                gt = a[0] > b[0]
                return Mux(gt, a[0], b[0]), Mux(gt, b[0], a[0])
            return Mux(a[0] > b[0], a[0], b[0]), Mux(a[1] < b[1], a[1], b[1])

        leaves = [(self.i.payload[k], self.i.payload[k]) for k in range(lanes)]
        root, valid = pipelined_tree(m, leaves, [signed(width)] * 2, combine, advance, self.i.valid,
                                     names=("max", "min"))
        m.d.comb += [
            self.o.payload.max.eq(root[0]),
            self.o.payload.min.eq(root[1]),
            self.o.valid.eq(valid),
        ]
        return m
