"""Conv networks on the generated accelerator under cocotb: random version-2 networks (conv
strides, zero padding, kernels, fused max pools, per-channel scales, empty and dense filters,
MAC and MAM, dense layers after them), bit-exact against the golden model, cycles equal to the
compiler's model; Verilator, and Icarus on a subset. ``slow``: a longer regression."""

import numpy as np
import pytest

import mamfpga.compile as compiler
from mamfpga.compile.arch import ArchConfig, unpack_words, weight_word_fields
from mamfpga.hw.emit import emit
from mamfpga.sim.cosim import cosimulate
from tests.support import conv_inputs, random_requant, random_conv_network, random_network, spread_scales

CASES = [
    # (seed, P, L, simulator, gap, stall)
    (1, 2, 2, "verilator", 0.0, 0.0),
    (3, 4, 2, "verilator", 0.3, 0.3),
    (4, 1, 1, "verilator", 0.0, 0.0),
    (30, 8, 1, "verilator", 0.0, 0.0),
    (7, 2, 1, "icarus", 0.0, 0.0),
    # fewer PEs than lanes: a written word reaches P of the L banks; the input's origin rotates the banks
    (5, 1, 4, "verilator", 0.2, 0.0),
    # a pitched input map (an unused column after each padded row: the input walk skips it)
    (205, 2, 2, "verilator", 0.0, 0.0),
    pytest.param((209, 1, 4, "icarus", 0.0, 0.0), marks=pytest.mark.slow),     # the suite's time: slow
]


def _check(seed, P, L, simulator, gap, stall, tmp_path, copies=False, pack=False):
    rng = np.random.default_rng(seed)
    net = random_conv_network(rng)
    program = compiler.compile_network(net, ArchConfig(pes=P, lanes=L, lane_copies=copies, pack_rows=pack))
    build = emit(program, tmp_path / "build")
    x = conv_inputs(rng, net.input_shape, 5)
    res = cosimulate(program, build, x, simulator=simulator, gap_prob=gap, stall_prob=stall, seed=seed)
    assert res.mismatches == 0, res.first_mismatch
    assert res.layer_cycles == [l.cycles_model for l in program.layers]
    if gap == 0.0 and stall == 0.0:
        assert set(res.cycles) == {program.cycles_model}
    return program


@pytest.mark.sim
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}-{c[3]}-P{c[1]}L{c[2]}")
def test_random_conv_network_bit_exact(case, tmp_path):
    seed, P, L, simulator, gap, stall = case
    if simulator == "icarus":
        from tests.conftest import require_tool
        require_tool("iverilog")
    _check(seed, P, L, simulator, gap, stall, tmp_path)


@pytest.mark.sim
@pytest.mark.parametrize("seed, P, L, simulator", [
    (1, 2, 2, "verilator"),
    # the default suite's time (about 15 minutes): these two with -m slow
    pytest.param(205, 1, 4, "verilator", marks=pytest.mark.slow),
    pytest.param(3, 4, 2, "icarus", marks=pytest.mark.slow)])
def test_lane_copies_bit_exact(seed, P, L, simulator, tmp_path):
    """A copy of the activations per lane (ArchConfig.lane_copies): bit-exact, cycles = model."""
    program = _check(seed, P, L, simulator, 0.0, 0.0, tmp_path, copies=True)
    assert program.config.lane_copies


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 124))
def test_conv_regression(seed, tmp_path):
    rng = np.random.default_rng(seed)
    P, L = int(rng.choice([1, 2, 4, 8])), int(rng.choice([1, 2, 4]))
    _check(seed, P, L, "icarus" if seed % 6 == 0 else "verilator", 0.0, 0.0, tmp_path)


def _unsigned_case(seed):
    """A network (conv or dense) whose layers clamp at random act_max, with at least one layer
    reading unsigned bytes (the one before it at 255), its scales spread so that few outputs
    saturate; and its inputs."""
    rng = np.random.default_rng(seed)
    while True:
        net = random_conv_network(rng) if seed % 2 else random_network(rng, [30, 40, 20, 5], 0.3, ["mam", "mac"])
        net = random_requant(rng, net)
        weighted = [l for l in net.layers if l.kind != "maxpool2d"]
        if seed % 2 and len(weighted) > 1:
            # a conv network: unsigned bytes out of the first layer, int8 after it, so that the
            # next layer's outputs are wide enough to show how it read them
            for layer in weighted:
                layer.act_max, layer.relu = (255, True) if layer is weighted[0] else (127, layer.relu)
        if any(l.act_max == 255 for l in net.layers[:-1] if l.kind != "maxpool2d"):
            x = conv_inputs(rng, net.input_shape, 12)
            return spread_scales(net, x), x


@pytest.mark.sim
@pytest.mark.parametrize("seed, P, L", [(67, 2, 2), (177, 4, 1), (64, 4, 2)])
def test_output_clamps_and_unsigned_bytes_bit_exact(seed, P, L, tmp_path):
    """Layers clamping at 2**n - 1 and layers reading unsigned bytes (zero-extended in the PE,
    pooled unsigned, split or row-parallel), bit-exact, cycles = model."""
    net, x = _unsigned_case(seed)
    program = compiler.compile_network(net, ArchConfig(pes=P, lanes=L))
    assert any(p.in_unsigned for p in program.layers)
    res = cosimulate(program, emit(program, tmp_path / "build"), x)
    assert res.mismatches == 0, res.first_mismatch
    assert set(res.cycles) == {program.cycles_model}


@pytest.mark.sim
@pytest.mark.parametrize("seed, P, L, copies", [(4, 1, 2, False), (29, 2, 4, True)])
def test_rows_sharing_words_bit_exact(seed, P, L, copies, tmp_path):
    """Filters packed into shared words (ArchConfig.pack_rows): a MAC and a MAM conv layer each
    have words that carry the end of one filter and the start of the next."""
    program = _check(seed, P, L, "verilator", 0.0, 0.0, tmp_path, copies=copies, pack=True)
    fields = weight_word_fields(program.config)
    shared = {plan.mode for plan in program.layers if plan.geom is not None
              and any(unpack_words(fields, w)["share"].any() for w in plan.words if w)}
    assert shared == {"mac", "mam"}
