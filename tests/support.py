"""Test support shared by every hardware test: stream helpers for Amaranth's simulator."""

from __future__ import annotations

import random

from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "run_sim", "put_all", "get_all"]


async def stream_put(ctx, stream, payload):
    """Offer ``payload`` on ``stream`` until the DUT takes it."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Wait for one payload on ``stream`` (ready held high while waiting)."""
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def put_all(ctx, stream, payloads, *, gap_prob=0.0, rng=None):
    """Send every payload, idling a random number of cycles between them."""
    rng = rng or random.Random(0)
    for p in payloads:
        while gap_prob and rng.random() < gap_prob:
            await ctx.tick()
        await stream_put(ctx, stream, p)


async def get_all(ctx, stream, count, *, stall_prob=0.0, rng=None):
    """Collect ``count`` payloads, refusing them at random (back-pressure)."""
    rng = rng or random.Random(1)
    out = []
    while len(out) < count:
        while stall_prob and rng.random() < stall_prob:
            await ctx.tick()
        out.append(await stream_get(ctx, stream))
    return out


def run_sim(dut, *testbenches, vcd=None, max_cycles=200_000):
    """Run async testbenches against ``dut`` with a 1 MHz ``sync`` clock.

    Fails (instead of hanging) when the testbenches have not all finished
    within ``max_cycles`` cycles.
    """
    # A purely combinational DUT has no ``sync`` domain; define one at the top
    # so that testbenches can always count cycles.
    top = Module()
    top.submodules.dut = dut
    top.domains.sync = ClockDomain("sync")
    sim = Simulator(top)
    sim.add_clock(1e-6)
    done = []

    def finishing(tb):
        async def wrapped(ctx):
            await tb(ctx)
            done.append(tb)
        return wrapped

    for tb in testbenches:
        sim.add_testbench(finishing(tb))

    def go():
        step = 1000
        for start in range(0, max_cycles, step):
            sim.run_until((start + step) * 1e-6)
            if len(done) == len(testbenches):
                return
        pending = [tb.__name__ for tb in testbenches if tb not in done]
        raise AssertionError(f"testbenches {pending} did not finish within {max_cycles} cycles")

    if vcd:
        with sim.write_vcd(vcd):
            go()
    else:
        go()
