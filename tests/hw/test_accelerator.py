"""The whole accelerator in Amaranth's simulator: random networks against the golden model."""

import random

import numpy as np
import pytest

from mamfpga.hw.accelerator import Accelerator, cycle_model
from mamfpga.hw.arch import ArchConfig
from mamfpga.sw import compiler, golden
from tests.support import run_sim, stream_get, stream_put
from tests.sw.test_golden import random_qnet


def run_accelerator(program, x, *, gap_prob=0.0, stall_prob=0.0, seed=0):
    """Stream every sample in, collect every output; return outputs and the cycles of sample 0."""
    dut = Accelerator(program)
    n_out = program.net.output_size
    outs, marks = [], {}
    rng = random.Random(seed)

    async def producer(ctx):
        for s, sample in enumerate(x):
            for j, v in enumerate(sample):
                while gap_prob and rng.random() < gap_prob:
                    await ctx.tick()
                if s == 0 and j == 0:
                    marks["start"] = marks.get("now", 0)
                await stream_put(ctx, dut.i, int(v))

    async def consumer(ctx):
        r2 = random.Random(seed + 1)
        for s in range(len(x)):
            row = []
            for _ in range(n_out):
                while stall_prob and r2.random() < stall_prob:
                    await ctx.tick()
                row.append(await stream_get(ctx, dut.o))
            if s == 0:
                marks["end"] = marks.get("now", 0)
            outs.append(row)

    async def clock(ctx):
        t = 0
        while True:
            marks["now"] = t
            await ctx.tick()
            t += 1

    run_sim(dut, producer, consumer, background=[clock])
    return np.array(outs, dtype=np.int8), marks["end"] - marks["start"] + 1


@pytest.mark.parametrize("seed", range(16))
def test_random_networks_equal_golden(seed):
    rng = np.random.default_rng(500 + seed)
    net = random_qnet(rng, max_size=20)
    cfg = ArchConfig(pes=int(rng.choice([1, 2, 4])), lanes=int(rng.choice([1, 2, 3])))
    program = compiler.compile_network(net, cfg, split=str(rng.choice(["auto", "never", "always"])))
    x = rng.integers(-128, 128, size=(3, net.input_size)).astype(np.int8)
    x[0] = 0
    got, cycles = run_accelerator(program, x[:, program.columns])
    want = golden.run(net, x)
    assert np.array_equal(got, want), f"first mismatch at {np.argwhere(got != want)[0]}"
    assert cycles == cycle_model(program) == program.cycles_per_inference


def test_gaps_and_backpressure():
    rng = np.random.default_rng(9)
    net = random_qnet(rng, max_size=16)
    program = compiler.compile_network(net, ArchConfig(pes=2, lanes=2))
    x = rng.integers(-128, 128, size=(3, net.input_size)).astype(np.int8)
    got, _ = run_accelerator(program, x[:, program.columns], gap_prob=0.4, stall_prob=0.5, seed=3)
    assert np.array_equal(got, golden.run(net, x))
