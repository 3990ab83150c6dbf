"""Requantization: y = clamp(round(acc * mult / 2**shift), lo, hi), the contract's, one byte out.

The clamp is [0 or -2**n, 2**n - 1] (``relu``; ``n`` = 1..8 from the layer's act_max =
2**n - 1: n = 7 is int8's [-128, 127] or the ReLU's [0, 127]; n = 8 with relu gives unsigned
bytes [0, 255]). ``mult_bits``: 16, or up to 24 (then four partial products, not two).
Seven registered stages (operands; two partial products; their sum; shift by
the multiple of 8, then by the rest; saturation flags; clamp), one result per cycle,
mult/shift/relu/n/even given per operation (they change per layer); ``even`` rounds a half to
even (QONNX's ROUND) instead of up. The rounding uses
floor((p + 2**(s-1)) / 2**s) == ((2p >> s) + 1) >> 1, which needs no wide
rounding constant and no case for s = 0; clamping looks at 2p >> s directly,
so no wide adder follows the shifter and no wide compare (a carry chain) feeds the clamp:
stage 4 reduces the high bits to four flags with LUT trees, under masks made from n a stage
before. Streams: ``i`` {acc, mult, shift, relu, n, even, tag}, ``o`` {y (the byte), tag}; the tag (an address, say) travels along. No back-pressure:
``o`` is always taken (its consumer is a memory write port).
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mamfpga.compile.arch import MULT_BITS, MULT_BITS_MAX, REQUANT_LATENCY
from mamfpga.hw.checks import check_int
from mamfpga.hw.dsp import ecp5_mult, sext18

__all__ = ["Requant", "LATENCY"]

LATENCY = REQUANT_LATENCY


class Requant(wiring.Component):
    def __init__(self, *, acc_bits: int = 32, mult_bits: int = MULT_BITS, tag_bits: int = 1,
                 clamps: frozenset | None = None, family: str | None = None):
        #: the FPGA family it is built for: on the ECP5 (when elaborated for a board's platform),
        #: its partial products are MULT18X18D blocks with their own output registers
        self._family = family
        self._acc_bits = check_int("acc_bits", acc_bits, 8, 40)
        self._mult_bits = check_int("mult_bits", mult_bits, MULT_BITS, MULT_BITS_MAX)
        self._tag_bits = check_int("tag_bits", tag_bits, 1, 32)
        #: the n (act_max = 2**n - 1) of every operation it will see, when known: with one, the
        #: clamp's masks and bounds are constants (input ``n`` is then ignored)
        self._clamps = frozenset(clamps) if clamps is not None else None
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc": signed(acc_bits), "mult": unsigned(mult_bits), "shift": unsigned(6), "relu": 1,
                "n": unsigned(4), "even": 1, "tag": unsigned(tag_bits)}), always_ready=True)),
            "o": Out(stream.Signature(data.StructLayout({"y": unsigned(8), "tag": unsigned(tag_bits)}),
                                      always_ready=True)),
        })

    @property
    def latency(self) -> int:
        return LATENCY

    def elaborate(self, platform):
        m = Module()
        i = self.i.payload
        pw = self._acc_bits + self._mult_bits + 1
        # stage 0: the operands registered (they come from FIFOs and per-layer case tables); on the
        # ECP5 without a reset, so that a FIFO's block RAM takes them as its output register
        # (mamfpga.boards.netlist): its unregistered read was the critical path
        plain = self._family == "ecp5"
        acc0, mult0 = Signal(signed(self._acc_bits), reset_less=plain), Signal(self._mult_bits, reset_less=plain)
        shift0, relu0, tag0, v0 = Signal(6, reset_less=plain), Signal(), Signal.like(i.tag), Signal()
        n0, n1a, n1, n2 = Signal(4), Signal(4), Signal(4), Signal(4)
        e0, e1a, e1, e2, e3, e4 = (Signal(name=f"even{k}") for k in ("0", "1a", "1", "2", "3", "4"))
        m.d.sync += [e0.eq(i.even), e1a.eq(e0), e1.eq(e1a), e2.eq(e1), e3.eq(e2), e4.eq(e3)]
        m.d.sync += [acc0.eq(i.acc), mult0.eq(i.mult), n0.eq(i.n),
                     shift0.eq(i.shift), relu0.eq(i.relu), tag0.eq(i.tag), v0.eq(self.i.valid)]
        # stages 1a, 1b: the product as two partial products of at most 16 x 16 bits (one DSP
        # block each where the family has them), then their sum
        prod = Signal(signed(pw))
        shift1a, relu1a, tag1a, v1a = Signal(6), Signal(), Signal.like(i.tag), Signal()
        shift1, relu1, tag1, v1 = Signal(6), Signal(), Signal.like(i.tag), Signal()
        m.d.sync += [shift1a.eq(shift0), relu1a.eq(relu0), tag1a.eq(tag0), v1a.eq(v0),
                     shift1.eq(shift1a), relu1.eq(relu1a), tag1.eq(tag1a), v1.eq(v1a), n1a.eq(n0), n1.eq(n1a)]
        if self._mult_bits > 16:
            # a wide mult (an imported model's scales): 16-bit pieces of both operands, so that
            # every partial product is one DSP block's; their sum in stage 1b as before
            a_parts = [(acc0[:16], 0), (acc0[16:].as_signed(), 16)] if self._acc_bits > 16 else [(acc0, 0)]
            m_parts = [(mult0[:16], 0), (mult0[16:], 16)]
            parts = []
            for a, sa in a_parts:
                for b, sb in m_parts:
                    pp = Signal(signed(len(a) + len(b) + 1), name=f"pp_{sa}_{sb}")
                    m.d.sync += pp.eq(a * b)
                    parts.append((pp, sa + sb))
            m.d.sync += prod.eq(sum(pp << s for pp, s in parts))
        elif self._acc_bits > 16 and platform is not None and self._family == "ecp5" and self._acc_bits <= 34:
            # the same two products, each a MULT18X18D whose output register is stage 1a's: yosys
            # maps a multiply to the block without its registers, and the unregistered block
            # (about 4 ns) with its routing on both sides was the ECP5's critical path. The
            # operands stay in logic registers (stage 0), near the FIFO block RAM that feeds them
            # (an 18-bit signed value each: the mult and the low half zero-extended)
            mult18 = Cat(mult0, C(0, 18 - self._mult_bits))
            p_lo = ecp5_mult(m, "mul_lo", Cat(acc0[:16], C(0, 2)), mult18, in_reg=False, out_reg=True)
            p_hi = ecp5_mult(m, "mul_hi", sext18(acc0[16:]), mult18, in_reg=False, out_reg=True)
            m.d.sync += prod.eq((p_hi.as_signed() << 16) + p_lo[:32])
        elif self._acc_bits > 16:
            p_lo, p_hi = Signal(32), Signal(signed(pw - 16))
            m.d.sync += [p_lo.eq(acc0[:16] * mult0), p_hi.eq(acc0[16:].as_signed() * mult0),
                         prod.eq((p_hi << 16) + p_lo)]
        else:
            p_all = Signal(signed(pw))
            m.d.sync += [p_all.eq(acc0 * mult0), prod.eq(p_all)]
        # stages 2 and 3: half = (2 p) >> s, coarse (multiples of 8) then fine; for s > 0 this is
        # p >> (s-1), for s = 0 it is 2p, and (half + 1) >> 1 is the rounded result either way
        # alongside, for rounding a half to even: whether any bit the shifts drop is 1 (sticky),
        # OR trees under masks from the shift amounts (no carry chain)
        coarse = Signal(signed(pw + 1))
        fine2, relu2, tag2, v2 = Signal(3), Signal(), Signal.like(i.tag), Signal()
        q = Signal(pw + 1)
        sticky2, sticky3, sticky4 = Signal(), Signal(), Signal()
        m.d.comb += q.eq(prod << 1)
        m.d.sync += [coarse.eq((prod << 1) >> Cat(C(0, 3), shift1[3:])),
                     sticky2.eq((q & Cat(*[shift1[3:] > (j >> 3) for j in range(pw + 1)])).any()),
                     fine2.eq(shift1[:3]), relu2.eq(relu1), tag2.eq(tag1), v2.eq(v1), n2.eq(n1)]
        m.d.sync += sticky3.eq(sticky2 | (coarse[:7] & Cat(*[fine2 > j for j in range(7)])).any())
        half = Signal(signed(pw + 1))
        relu3, tag3, v3 = Signal(), Signal.like(i.tag), Signal()
        # the clamp's masks and bounds from n, registered alongside (n is a layer constant):
        # m_hi marks the bits of half at n + 1 and above, m_lo bits 1..n; hi = 2**n - 1, lo the
        # byte of -2**n (or 0 with relu)
        m_hi, m_lo = Signal(pw + 1), Signal(9)
        hi3, lo3 = Signal(8), Signal(8)
        if self._clamps is not None and len(self._clamps) == 1:
            n2 = C(next(iter(self._clamps)), 4)      # one clamp in the whole design: constants
        m.d.sync += [half.eq(coarse >> fine2), relu3.eq(relu2), tag3.eq(tag2), v3.eq(v2),
                     m_hi.eq(Cat(*[n2 < j for j in range(1, pw + 2)]).as_unsigned() << 1),
                     m_lo.eq(Cat(C(0, 1), *[n2 >= j for j in range(1, 9)])),
                     hi3.eq((C(1, 9) << n2) - 1), lo3.eq(Mux(relu2, 0, -(C(1, 9) << n2)))]
        # stage 4: wide reductions of half (no carry chain). With g = half >> 1 and h0 = half[0],
        # the rounded value is g + h0, and g's bits n.. are half[n+1:]; see stage 5
        sign, o_n, a_n, ones = Signal(), Signal(), Signal(), Signal()
        low9 = Signal(9)
        relu4, tag4, v4 = Signal(), Signal.like(i.tag), Signal()
        hi4, lo4 = Signal(8), Signal(8)
        m.d.sync += [sign.eq(half[-1]), o_n.eq((half[:-1] & m_hi[:-1]).any()),
                     a_n.eq((half | ~m_hi).all()), ones.eq((half[:9] | ~m_lo)[1:9].all()),
                     low9.eq(half[:9]), relu4.eq(relu3), tag4.eq(tag3), v4.eq(v3), hi4.eq(hi3), lo4.eq(lo3),
                     sticky4.eq(sticky3)]
        # stage 5: saturate and clamp.
        #   rounded > 2**n - 1 <=> g >= 2**n, or g = 2**n - 1 and h0   (g >= 0: bits n.. = half[n+1:])
        #   rounded < -2**n when g < -2**n (half[n+1:] not all ones); g = -2**n - 1 with h0 rounds to
        #   -2**n, which the clamp gives as well; with relu: rounded < 0 when g < 0 (g = -1 with h0
        #   gives 0 either way). In range, y is bits 1..8 of half + 1, which need the low 9 bits alone.
        #   Rounding a half to even: a tie (h0 and nothing dropped below it) with g even stays g; the
        #   saturating cases are odd g (2**n - 1, -2**n - 1, -1), which round up either way.
        h0 = low9[0]
        over = ~sign & (o_n | (h0 & ones))
        under = sign & (relu4 | ~a_n)
        inc = Signal()
        m.d.comb += inc.eq(~(e4 & h0 & ~sticky4 & ~low9[1]))
        y = Signal(8)
        m.d.comb += y.eq(Mux(over, hi4, Mux(under, lo4, (low9 + inc)[1:9])))
        m.d.sync += [self.o.payload.y.eq(y), self.o.payload.tag.eq(tag4), self.o.valid.eq(v4)]
        return m
