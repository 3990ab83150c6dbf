"""The generated accelerator under cocotb: random networks, bit-exact against the golden model,
cycles equal to the compiler's model; Verilator, and Icarus on a subset."""

import json
from dataclasses import replace

import numpy as np
import pytest

from mamfpga import cli
from mamfpga.compile.arch import ArchConfig
from mamfpga.sim.cosim import cosimulate
from mamfpga.sim.runner import run_cocotb
import mamfpga.compile as compiler
from mamfpga.hw.emit import emit
from mamfpga.sw.qnet import QuantNetwork, save_qnet
from tests.support import random_network


CASES = [
    # (seed, shapes, density, modes, P, L, simulator, gap, stall)
    (1, [1, 1], 1.0, ["mac"], 1, 1, "verilator", 0.0, 0.0),
    (2, [40, 64, 10], 0.05, ["mam", "mac"], 4, 2, "verilator", 0.3, 0.3),
    (3, [300, 120, 30], 0.001, ["mam"], 8, 2, "verilator", 0.0, 0.5),
    (4, [17, 33, 9], 1.0, ["mac", "mam"], 2, 4, "verilator", 0.2, 0.0),
    (5, [64, 200, 50, 10], 0.02, ["mam", "mam", "mac"], 4, 1, "icarus", 0.3, 0.3),
    (6, [12, 8, 3], 0.5, ["mam"], 2, 2, "icarus", 0.0, 0.0),
]


@pytest.mark.sim
@pytest.mark.parametrize("case", CASES, ids=[f"seed{c[0]}-{c[6]}-P{c[4]}L{c[5]}" for c in CASES])
def test_random_network_bit_exact(case, tmp_path):
    seed, shapes, density, modes, P, L, simulator, gap, stall = case
    if simulator == "icarus":
        from tests.conftest import require_tool
        require_tool("iverilog")
    rng = np.random.default_rng(seed)
    net = random_network(rng, shapes, density, modes)
    program = compiler.compile_network(net, ArchConfig(pes=P, lanes=L))
    build = emit(program, tmp_path / "build")
    x = rng.integers(-128, 128, size=(6, shapes[0])).astype(np.int8)
    x[0] = 0                                                     # all-zero input
    x[1] = 127                                                   # saturating input
    res = cosimulate(program, build, x, simulator=simulator, gap_prob=gap, stall_prob=stall, seed=seed)
    assert res.mismatches == 0, res.first_mismatch
    assert res.layer_cycles == [l.cycles_model for l in program.layers]
    if gap == 0.0 and stall == 0.0:
        assert set(res.cycles) == {program.cycles_model}


@pytest.mark.sim
@pytest.mark.parametrize("bits", [2, 4])
def test_narrow_weights_packed_and_bit_exact(bits, tmp_path):
    """Weights of ``bits`` bits (extremes included) are packed that wide and sign-extended in the
    PE: MAC and MAM, bit-exact, fewer bits per nonzero than the same network at 8 bits."""
    rng = np.random.default_rng(40 + bits)
    net = random_network(rng, [24, 40, 6], 0.3, ["mam", "mac"])
    lim = 2 ** (bits - 1) - 1
    for layer in net.layers:
        layer.weight = np.clip(layer.weight, -lim, lim).astype(np.int8)
        layer.weight[1] = rng.choice([-lim, lim], size=layer.weight.shape[1])      # a dense row of extremes
    program = compiler.compile_network(net, ArchConfig(pes=2, lanes=2), delta_bits=4)
    assert program.config.weight_bits == bits
    net8 = QuantNetwork([replace(l, weight=l.weight.copy()) for l in net.layers])
    net8.layers[0].weight[0, 0] = 127                            # one 8-bit weight: all stored 8 wide
    p8 = compiler.compile_network(net8, ArchConfig(pes=2, lanes=2), delta_bits=4)
    assert p8.config.weight_bits == 8
    assert program.memory["weight_bits_per_nnz"] < p8.memory["weight_bits_per_nnz"]
    x = rng.integers(-128, 128, size=(5, 24)).astype(np.int8)
    x[0] = -128
    res = cosimulate(program, emit(program, tmp_path / "build"), x)
    assert res.mismatches == 0, res.first_mismatch
    assert set(res.cycles) == {program.cycles_model}


def _mixed_widths(net, rng, bits):
    """``net`` with its weighted layers' weights cut to ``bits`` (cycled), a dense row or filter of
    that width's extremes in each, so that every layer needs exactly its width."""
    weighted = [l for l in net.layers if l.weight is not None]
    for k, layer in enumerate(weighted):
        lim = 2 ** (bits[k % len(bits)] - 1) - 1
        w = np.clip(layer.weight, -lim, lim).astype(np.int8)
        w[-1] = rng.choice([-lim, lim], size=w.shape[1:])
        layer.weight = w
    return net


@pytest.mark.sim
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_per_layer_weight_widths_bit_exact(kind, tmp_path):
    """Layers of 8-, 4- and 2-bit weights in one program: the narrow ones stored at the narrow
    width, the wide ones' upper bits in the extension memory (read at the same address, the wide
    layers first); bit-exact, cycles = model, fewer weight bits than one memory at 8 bits."""
    from mamfpga.compile.passes import memory_use
    from tests.support import conv_inputs, random_conv_network, spread_scales

    if kind == "dense":
        rng = np.random.default_rng(11)
        net = _mixed_widths(random_network(rng, [24, 40, 30, 6], 0.4, ["mam", "mac", "mam"]), rng, [4, 8, 2])
        x = rng.integers(-128, 128, size=(5, 24)).astype(np.int8)
        x[0] = -128
        net = spread_scales(net, x)            # outputs spread, not saturated: a wrong weight shows
    else:
        # the first random conv network with three weighted layers whose outputs vary with the input
        from mamfpga.sw import golden
        for seed in range(200, 400):
            rng = np.random.default_rng(seed)
            net = random_conv_network(rng)
            if sum(l.weight is not None and np.any(l.weight) for l in net.layers) < 3:
                continue
            x = conv_inputs(rng, net.input_shape, 5)
            net = spread_scales(_mixed_widths(net, rng, [4, 8, 2]), x)
            if len(set(np.ravel(golden.run(net, x.reshape(len(x), -1))))) > 4:
                break
    program = compiler.compile_network(net, ArchConfig(pes=2, lanes=2))
    cfg = program.config
    assert cfg.weight_bits == 8 and cfg.low_bits in (2, 4)
    assert sorted({l.weight_bits for l in program.layers if l.nnz}) == [2, 4, 8]
    one = memory_use(replace(program, config=replace(cfg, low_bits=0)), None)
    assert program.memory["weight_bits_per_nnz"] < one["weight_bits_per_nnz"]
    assert "weights_high" in program.memory["memories"]
    res = cosimulate(program, emit(program, tmp_path / "build"), x)
    assert res.mismatches == 0, res.first_mismatch
    assert set(res.cycles) == {program.cycles_model}
    assert len(set(np.ravel(res.outputs))) > 4


@pytest.mark.sim
@pytest.mark.parametrize("split", ["never", "always"])
def test_wide_mults_bit_exact(split, tmp_path):
    """Mults wider than 16 bits (an imported model's float scales, up to the contract's 24): per
    row in one layer (carried in the bias words), one per layer in the next; the requantizers are
    built that wide (row-parallel, or the column-split tree's), bit-exact, extremes included."""
    rng = np.random.default_rng(7)
    net = random_network(rng, [20, 24, 6], 0.4, ["mac", "mam"])
    rows = net.layers[0].rows
    mult = rng.integers(1 << 16, 1 << 24, size=rows)
    mult[:3] = [(1 << 24) - 1, 1 << 16, 1]
    net.layers[0].mult, net.layers[0].shift = mult.astype(np.int64), rng.integers(28, 36, size=rows).astype(np.int64)
    net.layers[1].mult, net.layers[1].shift = (1 << 24) - 3, 37
    program = compiler.compile_network(net, ArchConfig(pes=2, lanes=2), split=split)
    assert program.config.mult_bits == 24
    x = rng.integers(-128, 128, size=(6, 20)).astype(np.int8)
    x[0], x[1] = 0, 127
    res = cosimulate(program, emit(program, tmp_path / "build"), x)
    assert res.mismatches == 0, res.first_mismatch
    assert set(res.cycles) == {program.cycles_model}
    assert len(set(np.ravel(res.outputs))) > 3                  # not everything saturated


@pytest.mark.sim
@pytest.mark.needs_tool("iverilog")
def test_verilator_and_icarus_agree(tmp_path):
    rng = np.random.default_rng(11)
    net = random_network(rng, [20, 30, 5], 0.1, ["mam", "mac"])
    program = compiler.compile_network(net, ArchConfig(pes=2, lanes=2))
    build = emit(program, tmp_path / "b")
    x = rng.integers(-128, 128, size=(5, 20)).astype(np.int8)
    a = cosimulate(program, build, x, simulator="verilator")
    b = cosimulate(program, build, x, simulator="icarus")
    assert np.array_equal(a.outputs, b.outputs) and a.cycles == b.cycles and a.ok


@pytest.mark.sim
def test_watchdog_stops_a_hung_simulation(tmp_path):
    rng = np.random.default_rng(3)
    net = random_network(rng, [6, 4], 0.5, ["mac"])
    program = compiler.compile_network(net, ArchConfig(pes=2, lanes=1))
    build = emit(program, tmp_path / "b")
    np.save(tmp_path / "x.npy", rng.integers(-5, 5, size=(1, 6)).astype(np.int8))
    # ask for more outputs than the accelerator will ever send: the sink waits forever
    res = run_cocotb(verilog_sources=[build / "accelerator.v"], toplevel="mamfpga_accel",
                     test_module="mamfpga.sim.tb_accelerator", build_dir=tmp_path / "sim",
                     config={"inputs": str(tmp_path / "x.npy"), "results": str(tmp_path / "r.json"),
                             "n_out": 9, "max_cycles": 500})
    assert res.failed == 1
    assert "did not finish within 500 cycles" in res.failures[0]


@pytest.mark.sim
def test_cli_sim_net_and_mismatch_report(tmp_path, capsys):
    rng = np.random.default_rng(5)
    net = random_network(rng, [10, 12, 4], 0.3, ["mam", "mac"])
    path = tmp_path / "net.npz"
    save_qnet(net, path)
    x = tmp_path / "x.npy"
    np.save(x, rng.integers(-128, 128, size=(8, 10)).astype(np.int8))
    build = tmp_path / "build"
    assert cli.main(["sim", str(path), "--inputs", str(x), "--outputs", str(tmp_path / "y.npy"),
                     "--pes", "2", "--lanes", "2", "--build", str(build)]) == 0
    report = json.loads((build / "report.json").read_text())
    sim, comp = report["sim"], report["compile"]
    assert (sim["simulator"], sim["samples"], sim["mismatches"], sim["first_mismatch"]) == ("verilator", 8, 0, None)
    assert sim["cycles_sim"] == [comp["cycles_model"]]
    assert sim["layer_cycles_sim"] == [l["cycles_model"] for l in comp["layers"]]
    # corrupt one weight word of the build: the RTL now computes something else
    hexfile = build / "pe0_weights.hex"
    # the Verilog carries the memory init itself; regenerate it from a tampered program instead
    program = compiler.load_build(build)
    cfg = program.config
    last = program.layers[-1]
    last.bias[0][0] ^= 1 << (cfg.acc_bits - 3)                  # a large change to a bias of the last layer
    from mamfpga.sw import golden
    from mamfpga.compile.progsim import run_program

    xs = np.load(x)
    assert not np.array_equal(run_program(program, xs[:, program.columns]), golden.run(net, xs))
    from mamfpga.hw.accelerator import Accelerator
    from mamfpga.hw.verilog import write_verilog

    write_verilog(Accelerator(program), "mamfpga_accel", build / "accelerator.v")
    assert hexfile.exists()
    capsys.readouterr()
    assert cli.main(["sim", str(build), "--inputs", str(x), "--outputs", str(tmp_path / "y2.npy")]) == 1
    err = capsys.readouterr().err
    assert "MISMATCH: first at sample" in err and "the RTL's first wrong layer is layer 1" in err
    assert "the compiled program is right, so the RTL departs from it" in err
    assert json.loads((build / "report.json").read_text())["sim"]["first_mismatch"]["layer"] == 1


def test_cli_sim_rejects_bad_pes(tmp_path, capsys):
    net = random_network(np.random.default_rng(0), [4, 2], 1.0, ["mac"])
    save_qnet(net, tmp_path / "n.npz")
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.int8))
    assert cli.main(["sim", str(tmp_path / "n.npz"), "--inputs", str(tmp_path / "x.npy"), "--outputs",
                     str(tmp_path / "y.npy"), "--pes", "3"]) == 2
    assert "--pes must be a power of two" in capsys.readouterr().err


@pytest.mark.sim
@pytest.mark.parametrize("bad_layer,split", [(1, "never"), (0, "always")])
def test_fault_in_one_rtl_layer_is_named(tmp_path, bad_layer, split):
    """A fault in the RTL of one layer (its biases changed in the generated Verilog only; the
    program stays right) is found by capturing what each layer writes into the activation
    buffers: that layer is named, not the last one, and the program is cleared."""
    import copy

    from mamfpga.hw.accelerator import Accelerator
    from mamfpga.hw.verilog import write_verilog

    from mamfpga.compile.progsim import first_differing_layer, run_program

    # a network whose outputs this fault reaches (random requantizers often saturate them all):
    # the first seed where the tampered program's outputs differ, its first wrong layer the faulty one
    for seed in range(21, 60):
        rng = np.random.default_rng(seed)
        net = random_network(rng, [12, 10, 8, 4], 0.5, ["mac", "mam", "mac"])
        program = compiler.compile_network(net, ArchConfig(pes=2, lanes=2), split=split)
        tampered = copy.deepcopy(program)
        cfg = program.config
        for p in range(cfg.pes):                # a large change to every bias of the layer
            tampered.layers[bad_layer].bias[p] = [b ^ (1 << (cfg.acc_bits - 2))
                                                  for b in tampered.layers[bad_layer].bias[p]]
        x = rng.integers(-128, 128, size=(4, 12)).astype(np.int8)
        xc = x[:, program.columns]
        if (first_differing_layer(tampered, xc) == bad_layer
                and not np.array_equal(run_program(tampered, xc), run_program(program, xc))):
            break
    assert all(l.split == (split == "always") for l in program.layers)
    build = emit(program, tmp_path / "b")
    write_verilog(Accelerator(tampered), "mamfpga_accel", build / "accelerator.v")
    res = cosimulate(program, build, x)
    assert res.mismatches > 0
    m = res.first_mismatch
    assert m["layer"] == bad_layer and m["program_layer"] is None, m


@pytest.mark.sim
def test_rtl_layer_capture_agrees_with_golden_when_right(tmp_path):
    """The captured writes of a correct RTL decode to every layer's golden outputs (row-parallel
    and column-split layers in one program)."""
    from mamfpga.sim.cosim import _run, rtl_layer_outputs
    from mamfpga.sw import golden

    rng = np.random.default_rng(22)
    net = random_network(rng, [16, 3, 12, 5], 0.6, ["mam", "mac"])
    program = compiler.compile_network(net, ArchConfig(pes=4, lanes=1))
    assert {l.split for l in program.layers} == {True, False}
    build = emit(program, tmp_path / "b")
    x = rng.integers(-128, 128, size=(1, 16)).astype(np.int8)
    data, _ = _run(program, build.resolve(), x, (tmp_path / "w").resolve(), simulator="verilator", capture=True)
    got = rtl_layer_outputs(program, data["writes"])
    want = golden.run_layers(program.net, x[:, program.columns])
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
