import random

import numpy as np
import pytest
import torch

from mamfpga.hw.requant import Requant
from mamfpga.sw.golden import requantize
from mamfpga.sw.qnet import ACT_MAXES, QuantLayer
from tests.support import run_sim


def _drive(dut, cases):
    """Feed (acc, mult, shift, relu, tag[, act_max[, rounding]]) cases one per cycle; the (y, tag)
    results in order, y the byte read as the layer's value (signed, or unsigned with relu)."""
    got = []
    relus = []

    async def tb(ctx):
        for case in cases + [None] * (dut.latency + 1):
            if case is None:
                ctx.set(dut.i.valid, 0)
            else:
                acc, mult, shift, relu, tag, *act = case
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"acc": acc, "mult": mult, "shift": shift, "relu": relu, "tag": tag,
                                        "n": (act[0] if act else 127).bit_length(),
                                        "even": int(len(act) > 1 and act[1] == "half_even")})
                relus.append(relu)
            if ctx.get(dut.o.valid):
                y = ctx.get(dut.o.payload.y)
                got.append((y - 256 if y > 127 and not relus[len(got)] else y, ctx.get(dut.o.payload.tag)))
            await ctx.tick()

    run_sim(dut, tb, max_cycles=len(cases) + 100)
    return got


@pytest.mark.parametrize("acc_bits", [12, 22, 32, 40])
def test_matches_golden_requantize(acc_bits):
    dut = Requant(acc_bits=acc_bits, tag_bits=10)
    rng = random.Random(acc_bits)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    cases = []
    for k in range(400):
        acc = rng.choice([lo, hi, 0, -1, 1, rng.randint(lo, hi), rng.randint(-1000, 1000)])
        mult = rng.choice([1, 65535, rng.randint(1, 65535)])
        shift = rng.choice([0, 1, 62, rng.randint(0, 62), rng.randint(acc_bits - 8, acc_bits + 16) % 63])
        cases.append((acc, mult, shift, rng.random() < 0.5, k % 1024))
    got = _drive(dut, cases)
    want = []
    for acc, mult, shift, relu, tag in cases:
        layer = QuantLayer(np.zeros((1, 1), np.int8), np.zeros(1, np.int32), "mac", mult, shift, relu)
        want.append((int(requantize(layer, torch.tensor([acc], dtype=torch.int64))[0]), tag))
    assert got == want


@pytest.mark.parametrize("acc_bits,mult_bits", [(12, 24), (22, 20), (34, 24)])
def test_wide_mult_matches_golden(acc_bits, mult_bits):
    """A mult wider than 16 bits (four partial products): random and extreme operands, both
    roundings, against the golden model."""
    dut = Requant(acc_bits=acc_bits, mult_bits=mult_bits, tag_bits=10)
    rng = random.Random(acc_bits * 100 + mult_bits)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    top = (1 << mult_bits) - 1
    cases = []
    for k in range(400):
        acc = rng.choice([lo, hi, 0, -1, 1, rng.randint(lo, hi), rng.randint(-1000, 1000)])
        mult = rng.choice([1, 1 << 16, top, rng.randint(1, top), rng.randint(1 << 16, top)])
        shift = rng.choice([0, 62, rng.randint(0, 62), rng.randint(acc_bits + mult_bits - 12, acc_bits + mult_bits) % 63])
        cases.append((acc, mult, shift, rng.random() < 0.5, k % 1024, 127, rng.choice(["half_up", "half_even"])))
    got = _drive(dut, cases)
    want = []
    for acc, mult, shift, relu, tag, act_max, rounding in cases:
        layer = QuantLayer(np.zeros((1, 1), np.int8), np.zeros(1, np.int32), "mac", mult, shift, relu,
                           rounding=rounding)
        want.append((int(requantize(layer, torch.tensor([acc], dtype=torch.int64))[0]), tag))
    assert got == want


@pytest.mark.parametrize("shift", [0, 1, 2, 7])
def test_saturation_and_rounding_boundaries(shift):
    """Every accumulator whose rounded value lies in -131..131 (mult 1), relu and not:
    the clamps at -128, 0 and 127 and the rounding of halves, exhaustively."""
    dut = Requant(acc_bits=24, tag_bits=1)
    step = max(1, (1 << shift) // 4)
    accs = list(range(-(131 << shift), 131 << shift, step))
    cases = [(acc, relu) for acc in accs for relu in (0, 1)]
    got = [y for y, _tag in _drive(dut, [(acc, 1, shift, relu, 0) for acc, relu in cases])]
    want = []
    for relu in (0, 1):
        layer = QuantLayer(np.zeros((1, 1), np.int8), np.zeros(1, np.int32), "mac", 1, shift, bool(relu))
        want.append(requantize(layer, torch.tensor(accs, dtype=torch.int64)).tolist())
    assert got == [want[relu][k] for k in range(len(accs)) for relu in (0, 1)]


@pytest.mark.parametrize("fixed", [False, True], ids=["n-per-operation", "n-fixed"])
@pytest.mark.parametrize("act_max", ACT_MAXES)
def test_every_clamp(act_max, fixed):
    """Each act_max (2**n - 1), with relu and (up to 127) without: every rounded value from below
    the lower clamp to above the upper one, and extremes; n given per operation, or fixed for the
    design (one clamp in all its layers: constant masks)."""
    dut = Requant(acc_bits=20, tag_bits=1, clamps={act_max.bit_length()} if fixed else None)
    accs = list(range(-2 * (act_max + 1) - 3, 2 * act_max + 4)) + [-(1 << 19), (1 << 19) - 1]
    relus = (1,) if act_max > 127 else (0, 1)
    cases = [(acc, 1, 1, relu, 0, act_max) for relu in relus for acc in accs]
    got = [y for y, _tag in _drive(dut, cases)]
    want = []
    for relu in relus:
        layer = QuantLayer(np.zeros((1, 1), np.int8), np.zeros(1, np.int32), "mac", 1, 1, bool(relu),
                           act_max=act_max)
        want += requantize(layer, torch.tensor(accs, dtype=torch.int64)).tolist()
    assert got == want


@pytest.mark.parametrize("acc_bits", [12, 32, 40])
def test_half_to_even_rounding(acc_bits):
    """Ties (the bits below the shift exactly 100...0) and their neighbours at every shift, and
    random cases, both roundings, against the golden model."""
    dut = Requant(acc_bits=acc_bits, tag_bits=1)
    rng = random.Random(100 + acc_bits)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    cases = []
    for _ in range(700):
        shift = rng.randint(0, 62)
        mult = rng.choice([1, 2, 3, 1 << 15, 65535, rng.randint(1, 65535)])
        rounding = rng.choice(["half_even", "half_up"])
        # most cases an accumulator whose product lands on a tie or next to one: with an odd mult,
        # acc = k 2**s + 2**(s-1) gives acc * mult = 2**(s-1) modulo 2**s
        if rng.random() < 0.7:
            shift = rng.randint(1, acc_bits - 2)
            mult |= 1
            k = rng.randint(-(1 << max(0, acc_bits - 2 - shift)), (1 << max(0, acc_bits - 2 - shift)) - 1)
            acc = (k << shift) + (1 << (shift - 1)) + rng.choice([0, 0, 0, -1, 1])
        else:
            acc = rng.choice([lo, hi, 0, rng.randint(lo, hi), rng.randint(-3000, 3000)])
        acc = max(lo, min(hi, acc))
        act_max = rng.choice([127, 127, 15, 255])
        relu = act_max == 255 or rng.random() < 0.5
        cases.append((acc, mult, shift, relu, 0, act_max, rounding))
    got = [y for y, _ in _drive(dut, cases)]
    want = []
    for acc, mult, shift, relu, _tag, act_max, rounding in cases:
        layer = QuantLayer(np.zeros((1, 1), np.int8), np.zeros(1, np.int32), "mac", mult, shift, relu,
                           act_max=act_max, rounding=rounding)
        want.append(int(requantize(layer, torch.tensor([acc], dtype=torch.int64))[0]))
    assert got == want
    ties = sum(1 for acc, mult, shift, *_ in cases if shift > 0 and (acc * mult) % (1 << shift) == 1 << (shift - 1))
    assert ties > 100


@pytest.mark.parametrize("family, board, blocks", [("ecp5", True, 2), ("ecp5", False, 0), ("ice40", True, 0),
                                                   (None, True, 0)])
def test_ecp5_board_builds_keep_the_multiplier_registers(family, board, blocks):
    """Built for an ECP5 board (elaborated for a platform), the two partial products are
    MULT18X18D blocks with their output register on and their inputs from the stage-0 logic
    registers (mamfpga.hw.dsp: yosys would map the multiplies without any register); the
    generic Verilog that co-simulation runs, and other families, multiply in the RTL."""
    from amaranth.back import rtlil

    from amaranth import Module

    top = Module()
    top.submodules.rq = Requant(acc_bits=32, family=family)
    text = rtlil.convert(top, ports=[], platform=object() if board else None)
    assert text.count("cell \\MULT18X18D") == blocks
    if blocks:
        assert text.count('parameter \\REG_OUTPUT_CLK "CLK0"') == blocks
        assert text.count('parameter \\REG_INPUTA_CLK "NONE"') == blocks
