"""Test support shared across the tests: random int8 networks, stream helpers for Amaranth's simulator."""

from __future__ import annotations

import random

import numpy as np
from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from mamfpga.sw.qnet import QuantLayer, QuantNetwork

__all__ = ["random_network", "random_conv_network", "random_requant", "spread_scales", "random_weights", "random_scales", "conv_inputs", "simulate_accelerator", "stream_put", "stream_get", "run_sim", "put_all", "get_all"]


def random_network(rng, shapes, density, modes):
    """A QuantNetwork of random int8 layers (``shapes`` N_0, N_1, ...; ``modes`` cycled), each
    with an empty row and a dense row of extremes, biases and requantizers that reach saturation."""
    layers = []
    for k, (n, m) in enumerate(zip(shapes[:-1], shapes[1:])):
        w = (rng.integers(-127, 128, size=(m, n)) * (rng.random((m, n)) < density)).astype(np.int8)
        if m > 2:
            w[0] = 0                                            # an empty row
            w[1] = rng.choice([-127, 127], size=n)              # a dense row of extremes
        b = rng.integers(-20000, 20000, size=m).astype(np.int32)
        mult = int(rng.integers(1, 2**16))
        shift = int(rng.integers(8, 24))
        layers.append(QuantLayer(w, b, modes[k % len(modes)], mult, shift, k < len(shapes) - 2))
    return QuantNetwork(layers)


def random_weights(rng, shape):
    """int8 weights of a random density (0, 10 %, 50 %, all), often with an empty and a dense
    row or filter of extremes."""
    density = float(rng.choice([0.0, 0.1, 0.5, 1.0]))
    w = rng.integers(-127, 128, size=shape) * (rng.random(shape) < density)
    m = shape[0]
    if m > 1 and rng.random() < 0.5:
        w[rng.integers(m)] = 0                                   # an empty filter / row
    if m > 1 and rng.random() < 0.5:
        w[rng.integers(m)] = rng.choice([-127, 127], size=shape[1:])   # a dense filter of extremes
    return w.astype(np.int8)


def random_scales(rng, m):
    """A mult and shift, one per row half the time, their extremes among the choices."""
    def one(lo, hi, special):
        return int(rng.choice([*special, int(rng.integers(lo, hi))]))
    if rng.random() < 0.5:                                       # per channel / row
        mult = np.array([one(1, 2**16, [1, 2**16 - 1]) for _ in range(m)], np.int64)
        shift = np.array([one(0, 30, [0, 62]) for _ in range(m)], np.int64)
        return mult, shift
    return one(1, 2**16, [1, 2**16 - 1]), one(0, 30, [0, 62])


def conv_inputs(rng, shape, count=4):
    """int8 inputs of ``shape``: all zero, all 127, all -128, then random."""
    x = rng.integers(-128, 128, size=(count, *shape))
    x[0] = 0                                                     # all-zero input
    x[1] = 127                                                   # extremes
    x[2] = -128
    return x.astype(np.int8)


def random_conv_network(rng, max_hw=9):
    """A random network of the layers the accelerator runs: conv2d (strides, zero padding,
    kernels, dense/empty filters, per-channel scales, MAC and MAM), each maybe followed by a
    max pool with stride = kernel, then maybe dense layers."""
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(1, max_hw + 1)), int(rng.integers(1, max_hw + 1))
    conv1d = rng.random() < 0.2
    if conv1d:
        h = 1
    layers = []
    shape = (c, h, w)
    for _ in range(int(rng.integers(1, 4))):
        cc, hh, ww = shape
        pad = tuple(int(v) for v in rng.integers(0, 3, size=4))
        if conv1d:
            pad = (0, pad[1], 0, pad[3])
        kh = 1 if conv1d else int(rng.integers(1, min(4, hh + pad[0] + pad[2]) + 1))
        kw = int(rng.integers(1, min(4, ww + pad[1] + pad[3]) + 1))
        m = int(rng.integers(1, 6))
        mult, shift = random_scales(rng, m)
        bias_range = int(rng.choice([0, 100, 10**5]))
        layers.append(QuantLayer(random_weights(rng, (m, cc, kh, kw)),
                                 rng.integers(-bias_range, bias_range + 1, size=m).astype(np.int32),
                                 str(rng.choice(["mac", "mam"])), mult, shift, bool(rng.random() < 0.6),
                                 kind="conv2d", stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                                 padding=pad))
        shape = QuantNetwork(layers, input_shape=(c, h, w)).shapes[-1]
        if rng.random() < 0.4 and shape[1] >= 1 and shape[2] >= 2:
            k = (1 if shape[1] < 2 else int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            layers.append(QuantLayer(None, None, kind="maxpool2d", kernel=k, stride=k))
            shape = QuantNetwork(layers, input_shape=(c, h, w)).shapes[-1]
    for _ in range(int(rng.integers(0, 3))):
        m = int(rng.integers(1, 6))
        mult, shift = random_scales(rng, m)
        layers.append(QuantLayer(random_weights(rng, (m, int(np.prod(shape)))),
                                 rng.integers(-1000, 1001, size=m).astype(np.int32),
                                 str(rng.choice(["mac", "mam"])), mult, shift, bool(rng.random() < 0.5)))
        shape = (m,)
    return QuantNetwork(layers, input_shape=(c, h, w))


def random_requant(rng, net: QuantNetwork) -> QuantNetwork:
    """``net`` with random output clamps: act_max = 2**n - 1 per weighted layer, often 255
    (unsigned bytes, so with relu, which the next layer reads as 0..255); the last at most 127;
    and half the layers rounding halves to even."""
    weighted = [l for l in net.layers if l.kind != "maxpool2d"]
    for layer in weighted:
        layer.rounding = str(rng.choice(["half_up", "half_even"]))
        n = int(rng.choice([1, 2, 4, 7, 8, 8, 8]))
        if layer is weighted[-1]:
            n = min(n, 7)
        layer.act_max = (1 << n) - 1
        layer.relu = bool(layer.relu or n == 8)
    return QuantNetwork(net.layers, net.input_scale, net.output_scale, net.extra, input_shape=net.input_shape)


def spread_scales(net: QuantNetwork, x: np.ndarray) -> QuantNetwork:
    """``net`` with each weighted layer's mult and shift chosen so that its largest |acc| on the
    inputs ``x`` maps to its act_max: outputs spread over the whole range rather than saturate
    (so that a wrong sign or zero extension of unsigned bytes shows)."""
    import torch

    from mamfpga.sw import golden
    from mamfpga.sw.quantize import mult_shift

    h = torch.from_numpy(np.asarray(x, dtype=np.int64).reshape((len(x),) + net.input_shape))
    for layer in net.layers:
        if layer.kind != "maxpool2d":
            top = int(golden.accumulate(layer, h).abs().max())
            layer.mult, layer.shift = mult_shift(layer.act_max / max(1, top))
        h = golden.layer_forward(layer, h)
    return QuantNetwork(net.layers, net.input_scale, net.output_scale, net.extra, input_shape=net.input_shape)


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


def simulate_accelerator(program, x, *, gap_prob: float = 0.0, stall_prob: float = 0.0, seed: int = 0,
             max_cycles: int | None = None):
    """Run inputs x (int8 [B, N_0], the program's columns) through the accelerator in Amaranth's
    simulator. Returns (outputs int8 [B, M], cycles of sample 0 from its first input beat to
    its last output beat). Random input gaps and output stalls when asked."""
    from mamfpga.hw.accelerator import Accelerator

    dut = Accelerator(program)
    top = Module()
    top.submodules.dut = dut
    top.domains.sync = ClockDomain("sync")
    n_out = program.net.output_size
    outs, marks, done = [], {}, []
    clock = {"t": 0}

    async def producer(ctx):
        rng = random.Random(seed)
        for s, sample in enumerate(x):
            for j, v in enumerate(sample):
                while gap_prob and rng.random() < gap_prob:
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, int(v))
                await ctx.tick().until(dut.i.ready)
                if s == 0 and j == 0:
                    marks["start"] = clock["t"] - 1
                ctx.set(dut.i.valid, 0)
        done.append("producer")

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        for s in range(len(x)):
            row = []
            for _ in range(n_out):
                while stall_prob and rng.random() < stall_prob:
                    ctx.set(dut.o.ready, 0)
                    await ctx.tick()
                ctx.set(dut.o.ready, 1)
                (v,) = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
                row.append(v)
                ctx.set(dut.o.ready, 0)
            if s == 0:
                marks["end"] = clock["t"] - 1
            outs.append(row)
        done.append("consumer")

    async def count(ctx):
        while True:
            await ctx.tick()
            clock["t"] += 1

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(count, background=True)
    limit = max_cycles or (len(x) * (program.cycles_model * 4 + 1000) + 10_000)
    step = 10_000
    for t0 in range(0, limit, step):
        sim.run_until((t0 + step) * 1e-6)
        if len(done) == 2:
            break
    else:
        raise TimeoutError(f"the accelerator did not finish {len(x)} samples within {limit} cycles")
    return np.array(outs, dtype=np.int8).reshape(len(x), n_out), marks["end"] - marks["start"] + 1
