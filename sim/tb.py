"""cocotb 2.x testbench building blocks: clock/reset owner and stream drivers.

Amaranth flattens a stream port ``i`` into ``i__valid``, ``i__ready`` and
``i__payload``; :class:`StreamSource` and :class:`StreamSink` drive and
collect those with optional random gaps (source) and back-pressure (sink).
A handshake is decided in the ReadOnly phase of a cycle, after everything
combinational has settled, and completes at the next rising edge.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout

__all__ = ["TB", "StreamSource", "StreamSink", "WatchdogTimeout", "pack", "unpack_signed"]


class WatchdogTimeout(AssertionError):
    """The design stopped making progress within the allowed cycles."""


def pack(values, width: int) -> int:
    """Pack lane values (lane 0 in the low bits) into one unsigned integer."""
    mask = (1 << width) - 1
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & mask) << (k * width)
    return word


def unpack_signed(word: int, width: int, count: int) -> list[int]:
    """Inverse of :func:`pack` for signed lanes."""
    mask = (1 << width) - 1
    half = 1 << (width - 1)
    out = []
    for k in range(count):
        v = (word >> (k * width)) & mask
        out.append(v - (1 << width) if v >= half else v)
    return out


class _StreamPort:
    """The three signals Amaranth flattens a stream port ``name`` into."""

    def __init__(self, dut, name: str, prob: float, rng: random.Random | None, seed: int):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.prob = prob
        self.rng = rng or random.Random(seed)


class StreamSource(_StreamPort):
    """Drives ``<name>__valid/__payload`` from a list of integers, honouring ``__ready``."""

    def __init__(self, dut, name: str, *, gap_prob: float = 0.0, rng: random.Random | None = None):
        super().__init__(dut, name, gap_prob, rng, 0)
        self.sent = 0
        self.on_accept = None            # called with the index of each accepted item
        self.valid.value = 0

    async def send(self, items):
        for item in items:
            while self.prob and self.rng.random() < self.prob:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = int(item)
            while True:
                await ReadOnly()
                if self.ready.value:
                    await RisingEdge(self.clk)
                    break
                # not ready: sleep until it rises (no Python work per idle cycle)
                await RisingEdge(self.ready)
            self.sent += 1
            if self.on_accept is not None:
                self.on_accept(self.sent - 1)
        self.valid.value = 0


class StreamSink(_StreamPort):
    """Collects ``<name>__payload`` words, driving ``__ready`` with random back-pressure."""

    def __init__(self, dut, name: str, *, stall_prob: float = 0.0, rng: random.Random | None = None):
        super().__init__(dut, name, stall_prob, rng, 1)
        self.items: list[int] = []
        self.on_item = None              # called with the index of each item taken
        self.ready.value = 0

    async def collect(self, count: int, *, signed_bits: int | None = None):
        while len(self.items) < count:
            ready = not (self.prob and self.rng.random() < self.prob)
            self.ready.value = int(ready)
            await ReadOnly()
            if ready and self.valid.value:
                v = int(self.payload.value)
                if signed_bits is not None and v >= 1 << (signed_bits - 1):
                    v -= 1 << signed_bits
                self.items.append(v)
                if self.on_item is not None:
                    self.on_item(len(self.items) - 1)
                await RisingEdge(self.clk)
            elif ready:
                await RisingEdge(self.valid)   # sleep until there is something to take
            else:
                await RisingEdge(self.clk)
        self.ready.value = 0


class TB:
    """Owns the clock and the synchronous reset of an Amaranth-generated design."""

    def __init__(self, dut, *, period_ns: float = 10.0):
        self.dut = dut
        self.period_ns = period_ns
        Clock(dut.clk, period_ns, unit="ns").start()

    async def reset(self, cycles: int = 2):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def run_with_watchdog(self, coro, *, max_cycles: int, what: str):
        """Await ``coro``; fail with :class:`WatchdogTimeout` after ``max_cycles`` cycles."""
        task = cocotb.start_soon(coro)
        try:
            return await with_timeout(task, max_cycles * self.period_ns, "ns")
        except SimTimeoutError:
            task.cancel()
            raise WatchdogTimeout(f"{what} did not finish within {max_cycles} cycles") from None
