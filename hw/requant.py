"""Requantization: int8 y = clamp(round(acc * mult / 2**shift), 0 or -128, 127), contract v1.

Three registered stages, one result per cycle, mult/shift/relu given per
operation (they change per layer). The rounding uses
floor((p + 2**(s-1)) / 2**s) == ((p >> (s-1)) + 1) >> 1 for s > 0, which needs
no wide rounding constant. Streams: ``i`` {acc, mult, shift, relu, tag},
``o`` {y, tag}; the tag (an address, say) travels along. No back-pressure:
``o`` is always taken (its consumer is a memory write port).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mamfpga.hw.arch import REQUANT_LATENCY
from mamfpga.hw.checks import check_int

__all__ = ["Requant", "LATENCY"]

LATENCY = REQUANT_LATENCY


class Requant(wiring.Component):
    def __init__(self, *, acc_bits: int = 32, tag_bits: int = 1):
        self._acc_bits = check_int("acc_bits", acc_bits, 8, 40)
        self._tag_bits = check_int("tag_bits", tag_bits, 1, 32)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc": signed(acc_bits), "mult": unsigned(16), "shift": unsigned(6), "relu": 1,
                "tag": unsigned(tag_bits)}), always_ready=True)),
            "o": Out(stream.Signature(data.StructLayout({"y": signed(8), "tag": unsigned(tag_bits)}),
                                      always_ready=True)),
        })

    @property
    def latency(self) -> int:
        return LATENCY

    def elaborate(self, platform):
        m = Module()
        i = self.i.payload
        pw = self._acc_bits + 17
        # stage 1: product
        prod = Signal(signed(pw))
        shift1, relu1, tag1, v1 = Signal(6), Signal(), Signal.like(i.tag), Signal()
        m.d.sync += [prod.eq(i.acc * i.mult),
                     shift1.eq(i.shift), relu1.eq(i.relu), tag1.eq(i.tag), v1.eq(self.i.valid)]
        # stage 2: round and shift
        half = Signal(signed(pw))
        rounded = Signal(signed(pw))
        relu2, tag2, v2 = Signal(), Signal.like(i.tag), Signal()
        m.d.comb += half.eq(prod >> (shift1 - 1)[:6])     # shift 0 wraps to 63: unused, see Mux
        m.d.sync += [rounded.eq(Mux(shift1 == 0, prod, (half + 1) >> 1)),
                     relu2.eq(relu1), tag2.eq(tag1), v2.eq(v1)]
        # stage 3: clamp
        lo = Mux(relu2, 0, -128)
        y = Signal(signed(8))
        m.d.comb += y.eq(Mux(rounded > 127, 127, Mux(rounded < lo, lo, rounded)))
        m.d.sync += [self.o.payload.y.eq(y), self.o.payload.tag.eq(tag2), self.o.valid.eq(v2)]
        return m
