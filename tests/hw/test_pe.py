"""One PE in Amaranth's simulator against the functional model of its memory images."""

import numpy as np
import pytest

from mamfpga.compile.arch import ArchConfig
from mamfpga.hw.pe import pe_from_program
import mamfpga.compile as compiler
from mamfpga.compile.progsim import _run_rows
from mamfpga.sw.qnet import QuantNetwork
from tests.support import run_sim
from tests.sw.test_golden import random_qnet


def _expected(program, p, acts):
    plan = program.layers[0]
    cfg = program.config
    origin = plan.col_ranges[p] if plan.split else 0
    out = []
    for f, part in _run_rows(plan.words[p], plan.bias[p], acts, plan.mode, cfg, origin):
        b = f["bias"]
        if plan.mode == "mac":
            out.append({"acc": b + part, "sum": part, "bias": b})
        else:
            hi, lo = part
            out.append({"acc": b + hi + lo, "hi": hi, "lo": lo, "bias": b})
    return out


def _run_pe(program, p, x):
    cfg = program.config
    dut = pe_from_program(program, p)
    P = cfg.pes
    words = [x[w * P:(w + 1) * P] for w in range(-(-len(x) // P))]
    got, cycles = [], {}

    async def tb(ctx):
        for w, vals in enumerate(words):                       # fill side 0 with the input
            packed = sum((int(v) & 0xFF) << (8 * i) for i, v in enumerate(vals))
            ctx.set(dut.aw, {"en": 1, "addr": w, "data": packed, "mask": (1 << len(vals)) - 1})
            await ctx.tick()
        ctx.set(dut.aw.en, 0)
        ctx.set(dut.layer, 0)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        t = 0
        rows = len(program.layers[0].bias[p])
        while len(got) < rows and t < 100_000:
            if ctx.get(dut.res.valid):
                r = ctx.get(dut.res.payload)
                got.append({"acc": r.acc, "sum": r.sum, "hi": r.hi, "lo": r.lo, "bias": r.bias})
                cycles["last"] = t
            await ctx.tick()
            t += 1
        for _ in range(3):
            assert not ctx.get(dut.res.valid)
            await ctx.tick()
        assert not ctx.get(dut.busy)

    run_sim(dut, tb)
    return got, cycles.get("last"), dut


@pytest.mark.parametrize("seed", range(24))
def test_pe_matches_its_memory_images(seed):
    rng = np.random.default_rng(100 + seed)
    net = random_qnet(rng, max_size=24)
    net = QuantNetwork(net.layers[:1])
    # a third with a copy of the activations per lane; half with rows sharing words, a quarter of
    # all with the trees' compares registered
    cfg = ArchConfig(pes=int(rng.choice([1, 2, 4])), lanes=int(rng.choice([1, 2, 4, 8])),
                     lane_copies=seed % 3 == 0, pack_rows=seed % 2 == 1, tree_stages=1 + (seed // 2) % 2)
    program = compiler.compile_network(net, cfg, split=str(rng.choice(["auto", "never", "always"])))
    x = rng.integers(-128, 128, size=net.input_size).astype(np.int8)
    x[: len(x) // 3] = 0
    acts = x[program.columns].astype(np.int64)
    for p in range(cfg.pes):
        got, last, dut = _run_pe(program, p, acts)
        want = _expected(program, p, acts)
        for r, (g, w) in enumerate(zip(got, want)):
            assert {k: g[k] for k in w} == w, f"PE {p} row {r}: got {g}, want {w}"
        assert len(got) == len(want)
        # the last result leaves latency cycles after the last word was fetched
        assert last == len(program.layers[0].words[p]) - 1 + dut.latency


@pytest.mark.parametrize("board", [True, False])
def test_ecp5_board_builds_register_the_lane_multipliers_inputs(board):
    """Built for an ECP5 board, each lane's multiply is a MULT18X18D with its input registers
    on (stage S2c's) and its product registered in logic; the generic Verilog multiplies in the RTL."""
    from amaranth.back import rtlil

    from mamfpga.compile.arch import ArchConfig
    from mamfpga.hw.pe import PE, PELayer

    pe = PE(ArchConfig(pes=2, lanes=2), weights=[0, 0], biases=[0, 0], act_depth=4, family="ecp5",
            layers=[PELayer(w_base=0, words=1, b_base=0, rows=1, mode="mac", origin=0, side=0)])
    from amaranth import Module

    top = Module()
    top.submodules.pe = pe
    text = rtlil.convert(top, ports=[], platform=object() if board else None)
    assert text.count("cell \\MULT18X18D") == (2 if board else 0)
    if board:
        assert text.count('parameter \\REG_INPUTA_CLK "CLK0"') == 2
        assert text.count('parameter \\REG_OUTPUT_CLK "NONE"') == 2
