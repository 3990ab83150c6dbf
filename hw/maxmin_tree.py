"""Pipelined max/min comparator tree over L signed lanes, each lane valid or not.

A MAM neuron needs both the largest and the smallest of its weighted inputs.
This block reduces L lanes to their max and min in ceil(log2(L)) registered
levels. The first level shares one comparator between max
and min (for a pair (a, b) a single ``a > b`` picks both), later levels have
one comparator each for the max and the min halves.

A lane whose bit in ``lane_valid`` is 0 takes no part (a MAM lane with a zero
weight): the selects prefer the valid operand, so the comparisons see no
multiplexer in front of them. ``o.payload.any`` says whether any lane was
valid (max and min are meaningless when not). ``lane_valid`` is sampled with
``i.payload``; it defaults to all lanes valid.

With ``registered_compare`` (the PE's trees), each level takes two stages: the comparisons
registered with their operands, then the selects, so that a comparison's carry chain and the
fan-out of its result to the selects are not in one cycle (the ECP5 design's critical path
before: 8.2 ns, 120.8 MHz; after: 133 MHz, the next path the activation block RAM's read).

Streams: ``i`` carries an array of L signed lanes, ``o`` a struct
{max, min, any}. The pipeline stalls as a whole: it advances when its last
stage is empty or being read, so back-pressure on ``o`` holds every stage and
``i.ready`` falls. With L = 1 the block is a wire (latency 0).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In

from mamfpga.hw.compare import greater, less
from mamfpga.hw.tree import LaneReduction, pipelined_tree

__all__ = ["MaxMinTree", "maxmin_decide", "maxmin_select"]


def maxmin_decide(depth, a, b):
    """The comparisons of a level-``depth`` node of (max, min, valid) operands: at depth 0 (two
    lanes, max = min) one comparator serves both."""
    gt = greater(a[0], b[0])
    return gt, (~gt if depth == 0 else less(a[1], b[1]))


def maxmin_select(depth, a, b, d):
    """The node from its operands and :func:`maxmin_decide`'s comparisons: the selects prefer
    the valid operand."""
    gt, lt = d
    take_max = a[2] & (~b[2] | gt)                      # a valid, and b not or a larger
    take_min = a[2] & (~b[2] | lt)
    return Mux(take_max, a[0], b[0]), Mux(take_min, a[1], b[1]), a[2] | b[2]


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
        Cycles from an accepted input to its output: ceil(log2(L)), twice that with
        ``registered_compare``.
    """

    def __init__(self, *, width: int = 8, lanes: int = 4, registered_compare: bool = False):
        super().__init__(width=width, lanes=lanes, out_shape=lambda c: data.StructLayout({
            "max": signed(c.width), "min": signed(c.width), "any": unsigned(1)}),
            ports=lambda c: {"lane_valid": In(c.lanes, init=(1 << c.lanes) - 1)},
            stages_per_level=2 if registered_compare else 1)
        #: each level's comparisons registered before its selects (two stages a level)
        self.registered_compare = bool(registered_compare)

    def elaborate(self, platform):
        m = Module()
        width, lanes = self.width, self.lanes

        if self.latency == 0:
            m.d.comb += [
                self.o.payload.max.eq(self.i.payload[0]),
                self.o.payload.min.eq(self.i.payload[0]),
                self.o.payload.any.eq(self.lane_valid[0]),
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
            ]
            return m

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        # Nodes are (max, min, valid); a leaf's max and min are its lane. The first level shares
        # one comparator per pair, later levels compare maxes and mins apart.
        decide, select = maxmin_decide, maxmin_select
        leaves = [(self.i.payload[k], self.i.payload[k], self.lane_valid[k]) for k in range(lanes)]
        shapes = [signed(width), signed(width), unsigned(1)]
        if self.registered_compare:
            # the comparisons registered with their operands, the selects a stage later: the
            # compare's carry chain and the select's fan-out (32 multiplexers on one bit) apart
            root, valid = pipelined_tree(m, leaves, shapes, select, advance, self.i.valid,
                                         names=("max", "min", "any"), decide=decide)
        else:
            root, valid = pipelined_tree(m, leaves, shapes, lambda d, a, b: select(d, a, b, decide(d, a, b)),
                                         advance, self.i.valid, names=("max", "min", "any"))
        m.d.comb += [
            self.o.payload.max.eq(root[0]),
            self.o.payload.min.eq(root[1]),
            self.o.payload.any.eq(root[2]),
            self.o.valid.eq(valid),
        ]
        return m
