"""The board top: the accelerator behind the UART host link (protocol in :mod:`.hostlink`).

:class:`HostLinkTop` is the whole design but the clocking, with plain ports
(``rx``, ``tx``, ``leds``), so that it can be simulated and co-simulated as is:

    rx -> UARTRx -> command FSM -> input buffer (a whole vector, its CRC checked) -> accelerator.i
    accelerator.o -> output FIFO (full rate) -> 'O' y.. cycles crc -> UARTTx -> tx

A request whose CRC-16 is wrong is dropped and answered 'E' 1 crc; the CRC is computed a
received or sent byte a cycle (:func:`crc16_next`, XOR logic).

The cycle counter runs from the first input beat to the last output beat (both
included). LEDs: 0 heartbeat (the clock runs), 1 activity (an inference or a
request, stretched to be visible), 2 a UART framing error was seen, 3 a frame
timed out; any further LEDs show the low bits of the inference count.

:class:`BoardTop` adds the board: its clock through a PLL, the power-on reset,
the UART pins and the LEDs of an amaranth-boards platform.
"""

from __future__ import annotations

import functools
import operator

from amaranth import Array, Cat, ClockDomain, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.build import ResourceError
from amaranth.lib import io, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from mamfpga.boards import hostlink
from mamfpga.boards.clocking import ClockReset
from mamfpga.boards.uart import UARTRx, UARTTx, baud_divisor
from mamfpga.hw.accelerator import Accelerator

__all__ = ["HostLinkTop", "BoardTop", "BOARD_TOP_NAME", "frame_timeout_cycles"]

BOARD_TOP_NAME = "mamfpga_board"


def crc16_next(crc, byte):
    """The CRC-16 after ``byte`` (8 bits), as :func:`mamfpga.boards.hostlink.crc16_step`: a
    byte a cycle. The step is linear over GF(2), so each bit of the result is the XOR of the
    CRC and byte bits that the step maps onto it (found by stepping each unit vector): 16
    small XOR trees, not eight layers of multiplexers."""
    bits = []
    for j in range(16):
        terms = [crc[i] for i in range(16) if hostlink.crc16_step(1 << i, 0) >> j & 1]
        terms += [byte[k] for k in range(8) if hostlink.crc16_step(0, 1 << k) >> j & 1]
        x = terms[0]
        for t in terms[1:]:
            x = x ^ t
        bits.append(x)
    return Cat(*bits)


def frame_timeout_cycles(f_clk: float | None, divisor: int, cycles: int | None = None) -> int:
    """The frame timeout in clock cycles: ``cycles``, else :data:`~.hostlink.FRAME_TIMEOUT_S` at
    ``f_clk``; never under 16 bit times (a byte and a half)."""
    wanted = cycles if cycles is not None else int(hostlink.FRAME_TIMEOUT_S * f_clk)
    return max(int(wanted), 16 * divisor)


class HostLinkTop(wiring.Component):
    def __init__(self, program, *, divisor: int, ident: int, frame_timeout: int, n_leds: int = 4,
                 stretch: int = 1 << 20, heartbeat_bit: int = 23, family: str | None = None):
        self.program = program
        self.family = family
        self.divisor = divisor
        self.ident = ident & 0xFFFFFFFF
        self.frame_timeout = frame_timeout_cycles(None, divisor, frame_timeout)
        self.n_leds = n_leds
        self.stretch = stretch
        self.heartbeat_bit = heartbeat_bit
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(n_leds)})

    def elaborate(self, platform):
        m = Module()
        prog = self.program
        n_in, n_out = prog.net.input_size, prog.net.output_size
        m.submodules.urx = urx = UARTRx(self.divisor)
        m.submodules.utx = utx = UARTTx(self.divisor)
        m.submodules.accel = acc = Accelerator(prog, self.family)
        # The input vector's buffer: written whole (RECV), then read whole into the accelerator
        # (RUN), never both at once; no_rw_check (it reads no entry it is writing). Not a FIFO:
        # a FIFO's ready flags are compares of its level, and on the iCE40 the level's loop
        # through them was the MNIST CNN design's critical path (41.5-41.8 MHz). Its storage is
        # left to yosys (block RAM or logic), which the fit check counts.
        m.submodules.ibuf = ibuf = Memory(shape=unsigned(8), depth=n_in, init=[], attrs={"no_rw_check": 1})
        ib_w, ib_r = ibuf.write_port(), ibuf.read_port(domain="comb")
        ib_waddr, ib_raddr = Signal(range(n_in)), Signal(range(n_in))
        # the bytes left to read and whether any is (a register, updated with the count)
        ib_left, ib_more = Signal(range(n_in + 1)), Signal()
        # a buffered FIFO's last entry is its output register, which holds the first output until
        # the answer is sent: its other n_out - 1 entries must take the rest back to back, and with
        # only one (n_out = 2) the second write comes while it is still full; at least 3 deep
        m.submodules.ofifo = ofifo = SyncFIFOBuffered(width=8, depth=max(n_out, 3))
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        info = hostlink.info_bytes(n_in, n_out, prog.config.pes, prog.config.lanes, self.ident)
        err = hostlink.error_bytes(hostlink.ERR_CRC)

        def rom(data):
            """``data`` indexed by bytes left, padded to a power of two: read with only the index
            bits it needs (each output bit a LUT4 for 16 bytes), not the whole byte counter"""
            bits = max(1, (len(data) - 1).bit_length())
            return Array(Const(b, 8) for b in list(reversed(data)) + [0] * ((1 << bits) - len(data))), bits

        (info_rom, info_bits), (err_rom, err_bits) = rom(info), rom(err)
        left = Signal(range(max(n_in, n_out, len(info), len(err), 4)))
        # the CRC of the frame being received (it ends at 0 for a whole good frame) and of the
        # answer being sent (its two bytes follow it)
        rx_crc, tx_crc = Signal(16), Signal(16)
        crc_bytes = Array([tx_crc[:8], tx_crc[8:]])              # indexed by bytes left: high byte first
        last = Signal()
        timer = Signal(signed((self.frame_timeout + 1).bit_length() + 1))
        cycles, run_cycles = Signal(32), Signal(32)
        running = Signal()
        outs = Signal(range(n_out + 1))
        framing_seen, timeout_seen = Signal(), Signal()
        bad_crc = Signal()                         # the frame being dropped failed its CRC: answer 'E'
        inferences = Signal(16)
        cycle_bytes = Array(run_cycles.word_select(3 - k, 8) for k in range(4))

        # accelerator streams: input from the input buffer, outputs into the output FIFO. The
        # output beat is registered (off the accelerator's critical path): the FIFO holds a
        # whole output vector and is emptied before the next request, so it is never full.
        # The input buffer's byte passes two registers before the accelerator takes it (a
        # pipeline that advances whenever its last stage is empty or taken, so the accelerator
        # still sees a byte a cycle). Their data have no reset and no other input: on the ECP5
        # yosys folds the first into the block RAM's read (where no_rw_check holds) and the
        # second becomes its output register (boards/netlist.py). With one register after
        # Amaranth's buffered FIFO (a synchronous read port, which yosys wraps in its old-value
        # logic whatever the mark says), a LUT sat between the block and the register, and the
        # block's unregistered read (5.6 ns) limited the MNIST CNN design to 125.6-128.5 MHz.
        # The accelerator's cycles count from its first input beat: unchanged.
        feed = Signal()
        in_va, in_a = Signal(), Signal(8, reset_less=True)
        in_v, in_d = Signal(), Signal(8, reset_less=True)
        take = Signal()
        m.d.comb += [take.eq(~in_v | acc.i.ready), acc.i.valid.eq(in_v), acc.i.payload.eq(in_d),
                     ib_r.addr.eq(ib_raddr), acc.o.ready.eq(1)]
        with m.If(take):
            m.d.sync += [in_a.eq(ib_r.data), in_va.eq(feed & ib_more), in_d.eq(in_a), in_v.eq(in_va)]
            with m.If(feed & ib_more):
                m.d.sync += [ib_raddr.eq(ib_raddr + 1), ib_left.eq(ib_left - 1), ib_more.eq(ib_left != 1)]
        in_beat, out_beat, out_data = Signal(), Signal(), Signal(8)
        m.d.sync += [in_beat.eq(acc.i.valid & acc.i.ready), out_beat.eq(acc.o.valid),
                     out_data.eq(acc.o.payload)]
        m.d.comb += [ofifo.w_data.eq(out_data), ofifo.w_en.eq(out_beat)]
        # both beats are seen one cycle late: the count is (last beat) - (first beat) + 1
        last_out = Signal()
        m.d.comb += last_out.eq(out_beat & (outs == n_out - 1))
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(in_beat & ~running):
            m.d.sync += [running.eq(1), cycles.eq(2)]
        with m.If(out_beat):
            m.d.sync += outs.eq(outs + 1)
        with m.If(last_out):
            m.d.sync += [running.eq(0), run_cycles.eq(cycles), outs.eq(0), inferences.eq(inferences + 1)]

        # the received byte, registered with its command decode, so that the FSM's next-state
        # logic starts at flip-flops, not behind the receiver's byte compare (a UART byte lasts
        # hundreds of cycles: one more is free)
        rx_v, rx_b, rx_info, rx_infer = Signal(), Signal(8), Signal(), Signal()
        m.d.sync += [rx_v.eq(urx.o.valid), rx_b.eq(urx.o.payload),
                     rx_info.eq(urx.o.valid & (urx.o.payload == hostlink.CMD_INFO)),
                     rx_infer.eq(urx.o.valid & (urx.o.payload == hostlink.CMD_INFER))]
        m.d.comb += [ib_w.addr.eq(ib_waddr), ib_w.data.eq(rx_b)]
        with m.If(urx.errors != 0):
            m.d.sync += framing_seen.eq(1)

        # Byte counting for the FSM: ``left`` bytes follow the current one and ``last`` (a
        # register, so no comparator sits in front of the state register) says left == 0. A
        # state that counts bytes is entered with ``fresh`` set: in that cycle the counter takes
        # the state's count (``counts``, a constant chosen by the state alone), so that the
        # counter's enable is ``fresh`` or a byte moved, not every transition's condition (that
        # enable was the iCE40's critical path). A receiving state sees its first byte tens of
        # cycles after it is entered at the least (a UART byte is 10 bits of 4 cycles or more).
        fresh = Signal()
        tx_wait = Signal()
        m.d.sync += [fresh.eq(0), tx_wait.eq(fresh)]

        def go(state):
            m.next = state
            m.d.sync += [fresh.eq(1), tx_wait.eq(1)]

        def step():
            return [left.eq(left - 1), last.eq(left == 1), tx_wait.eq(1)]

        counts = {"INFO": len(info), "RECV": n_in, "RCRC": 2, "ERROR": len(err), "OUT": n_out, "CYCLES": 4,
                  "TCRC": 2}

        # The bytes an answer sends, looked up from ``left`` (and the output FIFO's head) into
        # registers: the lookups and the state's choice among them (``tx_byte``, below) are in
        # different cycles. ``tx_wait``: the state or ``left`` (or the FIFO's head) changed in the
        # last cycle, so the lookups are stale and nothing is offered from them.
        src_info, src_err, src_cyc, src_crc, src_out = (Signal(8, name=f"tx_{n}")
                                                         for n in ("info", "err", "cycles", "crc", "out"))
        m.d.sync += [src_info.eq(info_rom[left[:info_bits]]),
                     src_err.eq(err_rom[left[:err_bits]]),
                     src_cyc.eq(cycle_bytes[left[:2]]), src_crc.eq(crc_bytes[left[0]]),
                     src_out.eq(ofifo.r_data)]
        # The byte offered and whether it is offered are registers too (``tx_byte``, ``tx_offer``),
        # chosen by the state from the lookups a cycle later: the transmitter's holding register
        # sees flip-flops, not the state's decode (the FSM's state through four LUT levels into it
        # was the iCE40 design's critical path). So a byte is offered two cycles after ``left``
        # or the state changes (``tx_wait`` covers both), and never in the cycle after one was
        # taken; at a UART's pace, where a byte lasts hundreds of cycles, this costs nothing.
        tx_byte, tx_offer, tx_take = Signal(8), Signal(), Signal()
        m.d.comb += [utx.i.valid.eq(tx_offer), utx.i.payload.eq(tx_byte),
                     tx_take.eq(tx_offer & utx.i.ready)]     # the transmitter takes the byte now

        expired = timer[-1]                              # the timer went below zero
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(rx_info):
                    go("INFO")
                with m.Elif(rx_infer):
                    m.d.sync += [timer.eq(self.frame_timeout), rx_crc.eq(hostlink.crc16(bytes([hostlink.CMD_INFER]))),
                                 ib_waddr.eq(0)]
                    go("RECV")
            with m.State("INFO"):
                with m.If(tx_take):
                    m.d.sync += step()
                    with m.If(last):
                        go("IDLE")

            def receive(then):
                """A request's next byte into the CRC, the frame timer restarted, on to ``then``
                after the last; a frame whose bytes stop is dropped without an answer."""
                with m.If(rx_v):
                    m.d.sync += step() + [timer.eq(self.frame_timeout), rx_crc.eq(crc16_next(rx_crc, rx_b))]
                    with m.If(last):
                        go(then)
                with m.Elif(expired):
                    m.d.sync += [timeout_seen.eq(1), bad_crc.eq(0)]
                    go("DROP")
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)

            with m.State("RECV"):                      # the input vector, into its buffer
                m.d.comb += ib_w.en.eq(rx_v)
                with m.If(rx_v):
                    m.d.sync += ib_waddr.eq(ib_waddr + 1)
                receive("RCRC")
            with m.State("RCRC"):                      # the request's two CRC bytes
                receive("CHECK")
            with m.State("CHECK"):                     # a whole frame: its CRC residue is 0
                with m.If(rx_crc == 0):
                    m.d.sync += [ib_raddr.eq(0), ib_left.eq(n_in), ib_more.eq(1)]
                    go("RUN")
                with m.Else():
                    m.d.sync += bad_crc.eq(1)
                    go("DROP")
            with m.State("DROP"):                      # the partial or refused vector is left
                with m.If(bad_crc):                    # (the next request writes from address 0)
                    go("ERROR")
                with m.Else():
                    go("IDLE")
            with m.State("ERROR"):                     # 'E' code crc: the request's CRC was wrong
                with m.If(tx_take):
                    m.d.sync += step()
                    with m.If(last):
                        go("IDLE")
            with m.State("RUN"):
                m.d.comb += feed.eq(1)
                with m.If(last_out):
                    go("HEAD")
            with m.State("HEAD"):
                with m.If(tx_take):
                    m.d.sync += tx_crc.eq(hostlink.crc16(bytes([hostlink.REPLY_OUT])))
                    go("OUT")
            with m.State("OUT"):
                m.d.comb += ofifo.r_en.eq(tx_take)
                with m.If(tx_take):
                    m.d.sync += step() + [tx_crc.eq(crc16_next(tx_crc, tx_byte))]
                    with m.If(last):
                        go("CYCLES")
            with m.State("CYCLES"):                    # little-endian: byte 3 - left
                with m.If(tx_take):
                    m.d.sync += step() + [tx_crc.eq(crc16_next(tx_crc, tx_byte))]
                    with m.If(last):
                        go("TCRC")
            with m.State("TCRC"):                      # the answer's CRC, high byte first
                with m.If(tx_take):
                    m.d.sync += step()
                    with m.If(last):
                        go("IDLE")
        # what the next cycle offers: the sending state's byte, unless the lookups are stale
        # (``tx_wait``) or a byte is taken now (its successor is looked up from the next ``left``)
        sources = {"INFO": src_info, "ERROR": src_err, "HEAD": Const(hostlink.REPLY_OUT, 8), "OUT": src_out,
                   "CYCLES": src_cyc, "TCRC": src_crc}
        m.d.sync += [tx_byte.eq(functools.reduce(operator.or_, [Mux(fsm.ongoing(st), v, 0)
                                                               for st, v in sources.items()])),
                     tx_offer.eq(functools.reduce(operator.or_, [fsm.ongoing(st) for st in sources])
                                 & ~(fsm.ongoing("OUT") & ~ofifo.r_rdy) & ~tx_wait & ~tx_take)]
        # a fresh state's count, ORed from the (one-hot) state bits: the count is its constant
        count, count_last = Signal.like(left), Signal()
        m.d.comb += [count.eq(functools.reduce(operator.or_, [Mux(fsm.ongoing(st), n - 1, 0)
                                                               for st, n in counts.items()])),
                     count_last.eq(functools.reduce(operator.or_, [fsm.ongoing(st) for st, n in counts.items()
                                                                    if n == 1], Const(0)))]
        with m.If(fresh):
            m.d.sync += [left.eq(count), last.eq(count_last)]

        # LEDs
        beat = Signal(self.heartbeat_bit + 1)
        m.d.sync += beat.eq(beat + 1)
        active = Signal(range(self.stretch + 1))
        with m.If(acc.busy | urx.o.valid):
            m.d.sync += active.eq(self.stretch)
        with m.Elif(active != 0):
            m.d.sync += active.eq(active - 1)
        status = Cat(beat[-1], active != 0, framing_seen, timeout_seen, inferences)
        m.d.comb += self.leds.eq(status[:self.n_leds])
        return m


class BoardTop(Elaboratable):
    """:class:`HostLinkTop` on a board: PLL clock (``pll`` a :class:`~.clocking.PLLPlan`, or
    None for the board's oscillator), UART pins, as many LEDs as the board has (up to 8)."""

    def __init__(self, program, *, f_clk: float, baud: int, ident: int, pll=None, family: str | None = None):
        self.program = program
        self.family = family              # the memories marked block RAM or logic for this family
        self.f_clk = f_clk
        self.baud = baud
        self.divisor = baud_divisor(f_clk, baud)
        self.ident = ident
        self.pll = pll

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.clocking = ClockReset(self.pll)
        leds = []
        for i in range(8):
            try:
                leds.append(platform.request("led", i, dir="-"))
            except ResourceError:       # the board has fewer LEDs
                break
        core = HostLinkTop(self.program, divisor=self.divisor, ident=self.ident,
                           frame_timeout=frame_timeout_cycles(self.f_clk, self.divisor), n_leds=max(1, len(leds)),
                           stretch=int(0.05 * self.f_clk), heartbeat_bit=max(1, int(self.f_clk).bit_length() - 1),
                           family=self.family)
        m.submodules.core = core
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx.i), tx.o.eq(core.tx)]
        for i, led in enumerate(leds):
            m.submodules[f"led{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(core.leds[i])
        return m
