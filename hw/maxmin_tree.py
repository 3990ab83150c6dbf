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
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MaxMinTree"]


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{name} must be {bound}, not {value}")
    return value


class MaxMinTree(wiring.Component):
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
        self._width = _check_int("width", width, 2, 64)
        self._lanes = _check_int("lanes", lanes, 1, 4096)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(width), lanes))),
            "o": Out(stream.Signature(data.StructLayout({
                "max": signed(width), "min": signed(width)}))),
        })

    @property
    def width(self) -> int:
        return self._width

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def latency(self) -> int:
        return (self._lanes - 1).bit_length()

    def elaborate(self, platform):
        m = Module()
        width, lanes = self._width, self._lanes

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

        # Each level is a list of (max, min) pairs; level 0 holds the raw lanes,
        # where max and min of a lane are the same value.
        level = [(self.i.payload[k], self.i.payload[k]) for k in range(lanes)]
        valid = self.i.valid
        for depth in range(self.latency):
            nxt = []
            for k in range(0, len(level), 2):
                hi = Signal(signed(width), name=f"max_l{depth + 1}_{k // 2}")
                lo = Signal(signed(width), name=f"min_l{depth + 1}_{k // 2}")
                if k + 1 == len(level):          # odd one out: carried forward
                    hmax, hmin = level[k]
                elif depth == 0:                 # one shared comparator
                    a, b = level[k][0], level[k + 1][0]
                    a_gt_b = Signal(name=f"gt_l1_{k // 2}")
                    m.d.comb += a_gt_b.eq(a > b)
                    hmax, hmin = Mux(a_gt_b, a, b), Mux(a_gt_b, b, a)
                else:
                    (amax, amin), (bmax, bmin) = level[k], level[k + 1]
                    hmax = Mux(amax > bmax, amax, bmax)
                    hmin = Mux(amin < bmin, amin, bmin)
                with m.If(advance):
                    m.d.sync += [hi.eq(hmax), lo.eq(hmin)]
                nxt.append((hi, lo))
            v = Signal(name=f"valid_l{depth + 1}")
            with m.If(advance):
                m.d.sync += v.eq(valid)
            level, valid = nxt, v

        assert len(level) == 1
        m.d.comb += [
            self.o.payload.max.eq(level[0][0]),
            self.o.payload.min.eq(level[0][1]),
            self.o.valid.eq(valid),
        ]
        return m
