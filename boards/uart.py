"""An 8N1 UART: receiver and transmitter as byte streams, for the host link.

amaranth 0.5 ships no UART and amaranth-stdio is not on PyPI, so this is the
one hand-written piece of the host link. ``divisor`` is clock cycles per bit.

* :class:`UARTRx`: ``rx`` pin in (idle high) -> ``o`` stream of bytes. The pin
  goes through a two-flip-flop synchroniser; a start bit is re-checked at half a
  bit, data bits are sampled in the middle of each bit, LSB first. A byte whose
  stop bit reads 0 (framing error, a break, a baud mismatch) is dropped and
  counted in ``errors``. ``o`` has no back-pressure: a byte is offered for one
  cycle, the consumer must take it (a wire cannot wait).
* :class:`UARTTx`: ``i`` stream of bytes -> ``tx`` pin (idle high), one start
  bit, 8 data bits LSB first, one stop bit.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from mamfpga.hw.checks import check_int

__all__ = ["UARTRx", "UARTTx", "baud_divisor", "MAX_BAUD_ERROR"]

#: largest relative baud error accepted: 8N1 samples the 10th bit in its middle,
#: so the two ends together may drift by half a bit over 9.5 bits (5 %); each end 2 %
MAX_BAUD_ERROR = 0.02


def baud_divisor(clk_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``; refuses a divisor whose baud is
    more than 2 % off, or fewer than 4 cycles per bit."""
    if baud <= 0 or clk_hz <= 0:
        raise ValueError(f"baud rate and clock must be positive, not {baud} baud at {clk_hz} Hz")
    div = round(clk_hz / baud)
    if div < 4:
        raise ValueError(f"{baud} baud needs at least 4 clock cycles per bit; a {clk_hz / 1e6:g} MHz "
                         f"clock gives {clk_hz / baud:.2f}")
    err = abs(clk_hz / div - baud) / baud
    if err > MAX_BAUD_ERROR:
        raise ValueError(f"{baud} baud from a {clk_hz / 1e6:g} MHz clock: the nearest divisor {div} gives "
                         f"{clk_hz / div:.0f} baud, {err:.1%} off (at most {MAX_BAUD_ERROR:.0%})")
    return div


class UARTRx(wiring.Component):
    def __init__(self, divisor: int):
        self._div = check_int("divisor", divisor, 4, 1 << 24)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(unsigned(8), always_ready=True)),
            "errors": Out(16),
        })

    @property
    def divisor(self) -> int:
        return self._div

    def elaborate(self, platform):
        m = Module()
        div = self._div
        pin = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, pin, init=1)
        # the bit timer counts down; ``timer_z`` (a register set with it: no compare of the
        # counter in front of its own enables, which was the iCE40 host link's critical path)
        # says it is 0. Loaded values are at least 1 (div >= 4)
        timer, timer_z = Signal(range(div)), Signal()
        bits = Signal(4)            # data bits received
        shreg = Signal(8)
        m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    m.d.sync += [timer.eq(div // 2 - 1), timer_z.eq(0)]
                    m.next = "START"
            with m.State("START"):
                with m.If(~timer_z):
                    m.d.sync += [timer.eq(timer - 1), timer_z.eq(timer == 1)]
                with m.Elif(pin):                       # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), timer_z.eq(0), bits.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(~timer_z):
                    m.d.sync += [timer.eq(timer - 1), timer_z.eq(timer == 1)]
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], pin)), bits.eq(bits + 1), timer.eq(div - 1), timer_z.eq(0)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(~timer_z):
                    m.d.sync += [timer.eq(timer - 1), timer_z.eq(timer == 1)]
                with m.Else():
                    with m.If(pin):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        # framing error: wait for the line to go idle before the next start bit
                        m.d.sync += self.errors.eq(self.errors + 1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(pin):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    def __init__(self, divisor: int):
        self._div = check_int("divisor", divisor, 4, 1 << 24)
        super().__init__({
            "i": In(stream.Signature(unsigned(8))),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self) -> int:
        return self._div

    def elaborate(self, platform):
        m = Module()
        div = self._div
        timer, timer_z = Signal(range(div)), Signal()       # as the receiver's
        shreg = Signal(10, init=0x3FF)
        left = Signal(4)            # bits still to send
        # a byte is taken into a holding register, then into the shift register: the sender's
        # payload multiplexers end at flip-flops, not at the shift register's load (the iCE40
        # host link's critical path), and the next byte can be taken while one is sent
        hold, full = Signal(8), Signal()
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq(~full)]
        with m.If(self.i.valid & ~full):
            m.d.sync += [hold.eq(self.i.payload), full.eq(1)]
        with m.If(left == 0):
            with m.If(full):
                m.d.sync += [shreg.eq(Cat(0, hold, 1)), left.eq(10), timer.eq(div - 1), timer_z.eq(0), full.eq(0)]
        with m.Elif(~timer_z):
            m.d.sync += [timer.eq(timer - 1), timer_z.eq(timer == 1)]
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), left.eq(left - 1), timer.eq(div - 1), timer_z.eq(0)]
        return m
