"""Requantization: int8 y = clamp(round(acc * mult / 2**shift), 0 or -128, 127), contract v1.

Seven registered stages (operands; two partial products; their sum; shift by the multiple of 8, then by the
rest; saturation flags; clamp), one result per cycle, mult/shift/relu given per
operation (they change per layer). The rounding uses
floor((p + 2**(s-1)) / 2**s) == ((2p >> s) + 1) >> 1, which needs no wide
rounding constant and no case for s = 0; clamping looks at 2p >> s directly,
so no wide adder follows the shifter and no wide compare (a carry chain) feeds the clamp:
stage 4 reduces the high bits to four flags with LUT trees. Streams: ``i`` {acc, mult, shift, relu, tag},
``o`` {y, tag}; the tag (an address, say) travels along. No back-pressure:
``o`` is always taken (its consumer is a memory write port).
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mamfpga.compile.arch import REQUANT_LATENCY
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
        # stage 0: the operands registered (they come from FIFOs and per-layer case tables)
        acc0, mult0 = Signal(signed(self._acc_bits)), Signal(16)
        shift0, relu0, tag0, v0 = Signal(6), Signal(), Signal.like(i.tag), Signal()
        m.d.sync += [acc0.eq(i.acc), mult0.eq(i.mult),
                     shift0.eq(i.shift), relu0.eq(i.relu), tag0.eq(i.tag), v0.eq(self.i.valid)]
        # stages 1a, 1b: the product as two partial products of at most 16 x 16 bits (one DSP
        # block each where the family has them), then their sum
        prod = Signal(signed(pw))
        shift1a, relu1a, tag1a, v1a = Signal(6), Signal(), Signal.like(i.tag), Signal()
        shift1, relu1, tag1, v1 = Signal(6), Signal(), Signal.like(i.tag), Signal()
        m.d.sync += [shift1a.eq(shift0), relu1a.eq(relu0), tag1a.eq(tag0), v1a.eq(v0),
                     shift1.eq(shift1a), relu1.eq(relu1a), tag1.eq(tag1a), v1.eq(v1a)]
        if self._acc_bits > 16:
            p_lo, p_hi = Signal(32), Signal(signed(pw - 16))
            m.d.sync += [p_lo.eq(acc0[:16] * mult0), p_hi.eq(acc0[16:].as_signed() * mult0),
                         prod.eq((p_hi << 16) + p_lo)]
        else:
            p_all = Signal(signed(pw))
            m.d.sync += [p_all.eq(acc0 * mult0), prod.eq(p_all)]
        # stages 2 and 3: half = (2 p) >> s, coarse (multiples of 8) then fine; for s > 0 this is
        # p >> (s-1), for s = 0 it is 2p, and (half + 1) >> 1 is the rounded result either way
        coarse = Signal(signed(pw + 1))
        fine2, relu2, tag2, v2 = Signal(3), Signal(), Signal.like(i.tag), Signal()
        m.d.sync += [coarse.eq((prod << 1) >> Cat(C(0, 3), shift1[3:])),
                     fine2.eq(shift1[:3]), relu2.eq(relu1), tag2.eq(tag1), v2.eq(v1)]
        half = Signal(signed(pw + 1))
        relu3, tag3, v3 = Signal(), Signal.like(i.tag), Signal()
        m.d.sync += [half.eq(coarse >> fine2), relu3.eq(relu2), tag3.eq(tag2), v3.eq(v2)]
        # stage 4: wide reductions of half (no carry chain). With g = half >> 1 and h0 = half[0],
        # the rounded value is g + h0, and g's bits 7.. are half[8:]; see stage 5
        sign, o8, a8 = Signal(), Signal(), Signal()
        low9 = Signal(9)
        relu4, tag4, v4 = Signal(), Signal.like(i.tag), Signal()
        m.d.sync += [sign.eq(half[-1]), o8.eq(half[8:-1].any()), a8.eq(half[8:].all()),
                     low9.eq(half[:9]), relu4.eq(relu3), tag4.eq(tag3), v4.eq(v3)]
        # stage 5: saturate and clamp.
        #   rounded > 127 <=> g >= 128, or g = 127 and h0     (g >= 0 with bits 7.. = half[8:])
        #   rounded < -128 when g < -128 (half[8:] not all ones); g = -129 with h0 rounds to -128,
        #   which the clamp gives as well; with relu: rounded < 0 when g < 0 (g = -1 with h0 gives 0
        #   either way). In range, y is bits 1..8 of half + 1, which need the low 9 bits alone.
        h0 = low9[0]
        over = ~sign & (o8 | (h0 & low9[1:8].all()))
        under = sign & (relu4 | ~a8)
        y = Signal(signed(8))
        m.d.comb += y.eq(Mux(over, 127, Mux(under, Mux(relu4, 0, -128), (low9 + 1)[1:9])))
        m.d.sync += [self.o.payload.y.eq(y), self.o.payload.tag.eq(tag4), self.o.valid.eq(v4)]
        return m
