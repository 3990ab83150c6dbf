"""The host link's UART in Amaranth's simulator: loopback, baud error tolerance, framing errors."""

import random

import pytest
from amaranth import Module

from mamfpga.boards.uart import UARTRx, UARTTx, baud_divisor
from tests.support import run_sim


def _bits(byte, stop=1):
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def _drive_rx(dut_rx, frames, cycles_per_bit, received, count):
    """A testbench that sends ``frames`` (lists of bits) on ``dut_rx`` and collects bytes."""

    async def tb(ctx):
        ctx.set(dut_rx.rx, 1)
        await ctx.tick().repeat(5)
        for frame in frames:
            for bit in frame:
                ctx.set(dut_rx.rx, bit)
                await ctx.tick().repeat(cycles_per_bit)
        ctx.set(dut_rx.rx, 1)
        await ctx.tick().repeat(3 * cycles_per_bit)

    async def collect(ctx):
        while len(received) < count:
            await ctx.tick()
            if ctx.get(dut_rx.o.valid):
                received.append(ctx.get(dut_rx.o.payload))

    return tb, collect


@pytest.mark.parametrize("host_cycles", [49, 50, 51])   # the host's bit period: -2 %, exact, +2 %
def test_rx_tolerates_baud_error(host_cycles):
    dut = UARTRx(divisor=50)
    data = [0x00, 0xFF, 0x55, 0xAA, 0x80, 0x01] + [random.Random(host_cycles).randrange(256) for _ in range(10)]
    got = []
    tb, collect = _drive_rx(dut, [_bits(b) for b in data], host_cycles, got, len(data))
    run_sim(dut, tb, collect, max_cycles=len(data) * 11 * 52 + 500)
    assert got == data


def test_rx_drops_a_frame_without_stop_bit():
    dut = UARTRx(divisor=8)
    got = []
    tb, _ = _drive_rx(dut, [_bits(0x3C, stop=0), [0] * 12, [1] * 4, _bits(0xA5)], 8, got, 1)

    async def collect(ctx):
        for _ in range(60 * 8):
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
        assert ctx.get(dut.errors) == 1

    run_sim(dut, tb, collect, max_cycles=10_000)
    assert got == [0xA5]


def test_tx_to_rx_loopback():
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor=7)
    m.submodules.rx = rx = UARTRx(divisor=7)
    m.d.comb += rx.rx.eq(tx.tx)
    data = list(range(0, 256, 7)) + [255, 0]
    got = []

    async def send(ctx):
        for b in data:
            ctx.set(tx.i.valid, 1)
            ctx.set(tx.i.payload, b)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def collect(ctx):
        while len(got) < len(data):
            await ctx.tick()
            if ctx.get(rx.o.valid):
                got.append(ctx.get(rx.o.payload))

    run_sim(m, send, collect, max_cycles=len(data) * 10 * 7 + 500)
    assert got == data


def test_baud_divisor_checks():
    assert baud_divisor(48e6, 115200) == 417
    assert baud_divisor(12e6, 3_000_000) == 4
    with pytest.raises(ValueError, match="at least 4 clock cycles per bit"):
        baud_divisor(12e6, 6_000_000)
    with pytest.raises(ValueError, match="off"):
        baud_divisor(10e6, 1_500_000)          # 6.67 cycles per bit: 7 gives 1.43 Mbaud, 4.8 % off
