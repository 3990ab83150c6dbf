"""``mamfpga sim BUILD --board NAME --placed``: the routed netlist made a simulation model.

The rewriting of nextpnr's netlist (the PLL replaced by its output clock, the pads by ports,
the ECP5 block RAM's settings put on its pins, the cell settings the models do not follow
refused) is tested on small hand-made netlists, and the block-RAM model against its documented
behaviour; the whole flow, a bitstream's design answering through its UART, on a small network
in tests/boards/test_board_cli.py, on random conv networks for both boards here (slow), and on
the demo's network in scripts/bench.
"""

import json

import pytest

from mamfpga.boards.placed import PlacedError, simulation_netlist, two_state_models


def _cell(kind, conns, dirs, params=None):
    return {"type": kind, "parameters": params or {}, "attributes": {}, "port_directions": dirs,
            "connections": conns}


def _ice40_netlist():
    """An iCE40 routed netlist in the shape nextpnr writes: the PLL's output on a global buffer
    with no input, a flip-flop LC on it, UART and LED pads."""
    cells = {
        "pll": _cell("ICESTORM_PLL", {"PLLOUT_A_GLOBAL": [], "PLLOUT_A": [], "LOCK": [10], "REFERENCECLK": []},
                     {"PLLOUT_A_GLOBAL": "output", "PLLOUT_A": "output", "LOCK": "output",
                      "REFERENCECLK": "input"}, {"DIVF": "0101100", "DIVQ": "100", "DIVR": "0"}),
        "gb_pll": _cell("SB_GB", {"GLOBAL_BUFFER_OUTPUT": [11], "USER_SIGNAL_TO_GLOBAL_BUFFER": []},
                        {"GLOBAL_BUFFER_OUTPUT": "output", "USER_SIGNAL_TO_GLOBAL_BUFFER": "input"}),
        "ff": _cell("ICESTORM_LC", {"CLK": [11], "I0": [12], "O": [13], "CEN": []},
                    {"CLK": "input", "I0": "input", "O": "output", "CEN": "input"},
                    {"DFF_ENABLE": "1", "LUT_INIT": "0000000000000010"}),
        "rx": _cell("SB_IO", {"PACKAGE_PIN": [2], "D_IN_0": [12]}, {"PACKAGE_PIN": "inout", "D_IN_0": "output"},
                    {"PIN_TYPE": "000001"}),
        "tx": _cell("SB_IO", {"PACKAGE_PIN": [3], "D_OUT_0": [13], "OUTPUT_ENABLE": [14]},
                    {"PACKAGE_PIN": "inout", "D_OUT_0": "input", "OUTPUT_ENABLE": "input"}, {"PIN_TYPE": "101001"}),
        "led": _cell("SB_IO", {"PACKAGE_PIN": [4], "D_OUT_0": [13]}, {"PACKAGE_PIN": "inout", "D_OUT_0": "input"},
                     {"PIN_TYPE": "011001"}),
        "clkpad": _cell("SB_IO", {"PACKAGE_PIN": [5]}, {"PACKAGE_PIN": "inout"}, {"PIN_TYPE": "000001"}),
    }
    ports = {"uart_0__rx__io": {"direction": "inout", "bits": [2]},
             "uart_0__tx__io": {"direction": "inout", "bits": [3]},
             "led_0__io": {"direction": "inout", "bits": [4]},
             "clk12_0__io": {"direction": "input", "bits": [5]}}
    nets = {f"n{b}": {"hide_name": 0, "bits": [b], "attributes": {}} for b in range(2, 15)}
    return {"modules": {"top": {"attributes": {}, "ports": ports, "cells": cells, "netnames": nets}}}


def _drivers(top):
    """bit -> (cell type, port) of what drives it."""
    out = {}
    for c in top["cells"].values():
        for p, bits in c["connections"].items():
            if c["port_directions"][p] == "output":
                for b in bits:
                    out[b] = (c["type"], p, c["connections"])
    return out


def test_the_pll_becomes_its_output_clock_and_the_pads_ports():
    doc, how = simulation_netlist(_ice40_netlist(), "ice40", clock_port="clk12_0__io")
    top = doc["modules"]["top"]
    assert "PLL replaced by its output clock" in how and "DIVF=44" in how
    types = {c["type"] for c in top["cells"].values()}
    assert "ICESTORM_PLL" not in types and "SB_IO" not in types
    ports = top["ports"]
    assert {k: v["direction"] for k, v in ports.items()} == {"clk": "input", "rst": "input", "rx": "input",
                                                             "tx": "output", "leds": "output"}
    clk, rst = ports["clk"]["bits"][0], ports["rst"]["bits"][0]
    # the PLL's global buffer now takes clk; LOCK is not rst
    assert top["cells"]["gb_pll"]["connections"]["USER_SIGNAL_TO_GLOBAL_BUFFER"] == [clk]
    drv = _drivers(top)
    assert drv[10][0] == "$_NOT_" and drv[10][2]["A"] == [rst]
    # rx pad -> the LUT's input; the flip-flop's output -> tx (through its enable) and the LED
    assert drv[12][0] == "$_BUF_" and drv[12][2]["A"] == ports["rx"]["bits"]
    assert drv[ports["tx"]["bits"][0]][0] == "$_MUX_"
    assert drv[ports["tx"]["bits"][0]][2]["B"] == [13] and drv[ports["tx"]["bits"][0]][2]["S"] == [14]
    assert drv[ports["leds"]["bits"][0]][2]["A"] == [13]
    # an unrouted clock enable is pulled up, as the silicon does
    assert top["cells"]["ff"]["connections"]["CEN"] == ["1"]
    json.dumps(doc)                                  # still a netlist yosys can read back


@pytest.mark.parametrize("damage, message", [
    (lambda t: t["cells"].update(x=_cell("ICESTORM_SPRAM", {}, {})), "cannot simulate: ICESTORM_SPRAM"),
    (lambda t: t["cells"]["rx"]["parameters"].update(PIN_TYPE="000000"), "PIN_TYPE 000000"),
    (lambda t: t["cells"].update(pll2=dict(t["cells"]["pll"])), "2 PLLs"),
    (lambda t: t["cells"]["gb_pll"]["connections"].update(USER_SIGNAL_TO_GLOBAL_BUFFER=[9]), "global buffer"),
    (lambda t: t["ports"].pop("uart_0__tx__io"), "no uart_0__tx__io"),
])
def test_what_the_models_cannot_follow_is_refused_by_name(damage, message):
    doc = _ice40_netlist()
    damage(doc["modules"]["top"])
    with pytest.raises(PlacedError, match=message):
        simulation_netlist(doc, "ice40", clock_port="clk12_0__io")


def _ecp5_netlist(**mult_params):
    cells = {
        "pll": _cell("EHXPLLL", {"CLKOP": [20], "LOCK": [21], "CLKI": [22]},
                     {"CLKOP": "output", "LOCK": "output", "CLKI": "input"}, {"CLKI_DIV": "110"}),
        "ff_m": _cell("TRELLIS_FF", {"CLK": [20], "M": [23], "Q": [24]},
                      {"CLK": "input", "M": "input", "DI": "input", "Q": "output"}, {"SD": "0 "}),
        "ff_di": _cell("TRELLIS_FF", {"CLK": [20], "DI": [24], "Q": [25]},
                       {"CLK": "input", "M": "input", "DI": "input", "Q": "output"}, {"SD": "1 "}),
        "mult": _cell("MULT18X18D", {"A0": [24], "P0": [26]}, {"A0": "input", "A17": "input", "P0": "output"},
                      {"A17MUX": "0 ", **mult_params}),
        "rx": _cell("TRELLIS_IO", {"B": [2], "O": [23]}, {"B": "inout", "O": "output"}, {"DIR": "INPUT"}),
        "tx": _cell("TRELLIS_IO", {"B": [3], "I": [25]}, {"B": "inout", "I": "input"}, {"DIR": "OUTPUT"}),
    }
    ports = {"uart_0__rx__io": {"direction": "input", "bits": [2]},
             "uart_0__tx__io": {"direction": "output", "bits": [3]},
             "clk25_0__io": {"direction": "input", "bits": [5]}}
    return {"modules": {"top": {"attributes": {}, "ports": ports, "cells": cells, "netnames": {}}}}


def test_ecp5_flip_flop_data_select_and_multiplier_settings():
    doc, how = simulation_netlist(_ecp5_netlist(), "ecp5", clock_port="clk25_0__io")
    top = doc["modules"]["top"]
    cells = top["cells"]
    assert "EHXPLLL" not in {c["type"] for c in cells.values()} and "CLKI_DIV=6" in how
    assert cells["ff_m"]["connections"]["DI"] == [23] and cells["ff_m"]["connections"]["M"] == []
    assert cells["ff_di"]["connections"]["DI"] == [24]
    assert "SD" not in cells["ff_m"]["parameters"] and "SD" not in cells["ff_di"]["parameters"]
    assert cells["mult"]["connections"]["A17"] == ["0"] and "A17MUX" not in cells["mult"]["parameters"]
    assert top["ports"]["leds"]["bits"] == ["0"]     # no LED pads: a constant


def test_ecp5_slice_muxes_and_distributed_ram_contents():
    """The second LUT of a slice (K1) drives an L6MUX21, the first a PFUMX (yosys's IS_Z1, which
    nextpnr does not write); a distributed RAM's contents, stored by LUT input, go back in address
    order (A = RAD3, C = RAD2, B = RAD1, D = RAD0)."""
    from mamfpga.boards.placed import _dpram_init

    doc = _ecp5_netlist()
    cells = doc["modules"]["top"]["cells"]
    comb = {"A": "input", "FXA": "input", "FXB": "input", "M": "input", "F": "output", "OFX": "output"}
    cells["k1"] = _cell("TRELLIS_COMB", {"FXA": [24], "FXB": [25], "M": [23], "OFX": [27]}, comb)
    cells["k1"]["attributes"]["NEXTPNR_BEL"] = "X3/Y4/SLICEB.K1"
    cells["k0"] = _cell("TRELLIS_COMB", {"A": [24], "M": [23], "OFX": [28]}, comb)
    cells["k0"]["attributes"]["NEXTPNR_BEL"] = "X3/Y4/SLICEB.K0"
    cells["ram"] = _cell("TRELLIS_COMB", {"A": [24]}, comb, {"MODE": "DPRAM", "INITVAL": f"{1 << 0b0001:016b}"})
    simulation_netlist(doc, "ecp5", clock_port="clk25_0__io")
    assert cells["k1"]["parameters"]["IS_Z1"] == "1" and "IS_Z1" not in cells["k0"]["parameters"]
    # LUT index 0b0001 is A = 1: address bit 3
    assert cells["ram"]["parameters"]["INITVAL"] == f"{1 << 0b1000:016b}"
    assert _dpram_init(f"{1 << 0b1000:016b}") == f"{1 << 0b0001:016b}"   # D = 1: address bit 0
    assert _dpram_init(f"{1 << 0b0110:016b}") == f"{1 << 0b0110:016b}"   # B, C keep their places


def _dp16kd(conns, params):
    dirs = {f"{k}{q}{i}": ("output" if k == "DO" else "input") for q in "AB"
            for k, n in (("AD", 14), ("DI", 18), ("DO", 18)) for i in range(n)}
    dirs.update({p: "input" for p in ("CLKA", "CLKB", "CEA", "CEB", "OCEA", "OCEB", "WEA", "WEB", "RSTA", "RSTB",
                                      "CSA0", "CSA1", "CSA2", "CSB0", "CSB1", "CSB2")})
    return _cell("DP16KD", conns, dirs, {"DATA_WIDTH_A": "00000000000000000000000000010010",
                                         "DATA_WIDTH_B": "00000000000000000000000000010010", **params})


def test_ecp5_block_ram_settings_become_pins():
    """nextpnr's encoding (ecp5/pack.cc, bitstream.cc): an unrouted clock/enable/reset/select
    pin reads 1 and its xxMUX=INV inverts it; with no setting, clocks, write enables, resets and
    selects read 0 and enables 1; address and data pins tied off by xxMUX=0/1, else low."""
    doc = _ecp5_netlist()
    top = doc["modules"]["top"]
    top["cells"]["ram"] = _dp16kd(
        {"CLKA": [20], "CLKB": [20], "CEA": [24], "WEA": [25], "ADA5": [24], "DOB0": [26]},
        {"CEAMUX": "INV", "CEBMUX": "CEB", "RSTAMUX": "INV", "RSTBMUX": "INV", "OCEAMUX": "INV",
         "CSA0MUX": "INV", "CSA1MUX": "INV", "CSA2MUX": "INV", "ADA13MUX": "1 ", "ADB0MUX": "0 ",
         "WRITEMODE_A": "READBEFOREWRITE", "CSDECODE_B": "0b000", "GSR": "DISABLED", "RESETMODE": "ASYNC",
         "INITVAL_00": "0x" + "0" * 79 + "5"})
    simulation_netlist(doc, "ecp5", clock_port="clk25_0__io")
    ram = top["cells"]["ram"]
    cn, p = ram["connections"], ram["parameters"]
    assert ram["type"] == "MAMFPGA_DP16KD"
    # CEA routed and inverted: through a new inverter
    inv = _drivers(top)[cn["CEA"][0]]
    assert inv[0] == "$_NOT_" and inv[2]["A"] == [24]
    assert cn["CEB"] == ["1"] and cn["RSTA"] == ["0"] and cn["OCEA"] == ["0"] and cn["WEA"] == [25]
    assert cn["WEB"] == ["0"] and cn["RSTB"] == ["0"] and cn["CSB0"] == ["0"]   # no setting: the defaults
    assert cn["ADA13"] == ["1"] and cn["ADB0"] == ["0"] and cn["ADA5"] == [24] and cn["ADA6"] == ["0"]
    assert p["WRITEMODE_A"] == 2 and p["WRITEMODE_B"] == 0 and p["DATA_WIDTH_A"] == 18
    assert p["INITVAL_00"] == "0" * 317 + "101" and len(p["INITVAL_3F"]) == 320
    assert not [k for k in p if k.endswith("MUX") or k in ("GSR", "RESETMODE", "CSDECODE_B")]


def test_ecp5_block_ram_chip_select_decides_the_port():
    doc = _ecp5_netlist()
    top = doc["modules"]["top"]
    top["cells"]["ram"] = _dp16kd({"CLKA": [20], "CLKB": [20]}, {
        "CSA0MUX": "INV", "CSA1MUX": "INV", "CSA2MUX": "INV", "CSDECODE_A": "0b000",
        "CSB0MUX": "CSB0", "CSB1MUX": "INV", "CSB2MUX": "INV", "CSDECODE_B": "0b000"})
    simulation_netlist(doc, "ecp5", clock_port="clk25_0__io")
    cn = top["cells"]["ram"]["connections"]
    assert cn["CEA"] == ["1"]            # selects read 000 = CSDECODE: selected, enabled by default
    assert cn["CEB"] == ["0"]            # CSB0 reads 1: 001 is not 000, the port does nothing


@pytest.mark.parametrize("params, conns, message", [
    ({"REGMODE_B": "PIPELINED"}, {}, "REGMODE_B='PIPELINED'"),
    ({"DATA_WIDTH_A": "00000000000000000000000000000100"}, {}, "data widths 4 and 18"),
    ({"DATA_WIDTH_A": "00000000000000000000000000100100"}, {}, "data widths 36 and 18"),
    ({"RSTAMUX": "RSTA"}, {}, "port A output reset"),
    ({}, {"CSB1": [24]}, "port B chip select"),
    ({"WRITEMODE_A": "SOMETIMES"}, {}, "WRITEMODE_A='SOMETIMES'"),
    ({"DOA3MUX": "INV"}, {}, "DOA3MUX='INV'"),
    ({"INITVAL_07": "0xZZ"}, {}, "INITVAL_07"),
    ({"SECRET": "1"}, {}, "does not follow: SECRET"),
])
def test_ecp5_block_ram_modes_without_a_model_are_refused(params, conns, message):
    doc = _ecp5_netlist()
    doc["modules"]["top"]["cells"]["ram"] = _dp16kd(conns, params)
    with pytest.raises(PlacedError, match=message):
        simulation_netlist(doc, "ecp5", clock_port="clk25_0__io")


@pytest.mark.parametrize("params, message", [
    ({"REG_PIPELINE_CLK": "CLK0"}, "REG_PIPELINE_CLK=CLK0"),
    ({"REG_INPUTA_CLK": "CLK1"}, "REG_INPUTA_CLK=CLK1"),
    ({"REG_OUTPUT_CLK": "CLK0", "REG_OUTPUT_CE": "CE2"}, "REG_OUTPUT_CE=CE2"),
    ({"MULT_BYPASS": "ENABLED"}, "MULT_BYPASS"),
    ({"A17MUX": "INV"}, "A17MUX='INV'"),
])
def test_ecp5_multiplier_settings_without_a_model_are_refused(params, message):
    with pytest.raises(PlacedError, match=message):
        simulation_netlist(_ecp5_netlist(**params), "ecp5", clock_port="clk25_0__io")


def test_ecp5_multiplier_registers_become_the_models_parameters():
    """The registers mamfpga.hw.requant turns on (inputs and output on CLK0, CE0, RST0) are the
    model's REG_A/REG_B/REG_P; the settings the model has no use for are dropped (Verilator
    refuses a parameter its module does not declare)."""
    doc, _ = simulation_netlist(_ecp5_netlist(REG_INPUTA_CLK="CLK0 ", REG_INPUTB_CLK="NONE ", REG_OUTPUT_CLK="CLK0 ",
                                              GSR="DISABLED ", RESETMODE="SYNC "), "ecp5", clock_port="clk25_0__io")
    assert doc["modules"]["top"]["cells"]["mult"]["parameters"] == {"REG_A": 1, "REG_B": 0, "REG_P": 1}


def _adapter_testbench(tmp_path, tb: str) -> list[str]:
    """Module ``tb`` run on iverilog against the ECP5 adapters (mamfpga.boards.placed): the lines
    it displayed that start with a digit."""
    import subprocess

    from mamfpga.boards.placed import _ecp5_adapters

    (tmp_path / "tb.v").write_text(tb)
    (tmp_path / "model.v").write_text(_ecp5_adapters())
    run = subprocess.run(["iverilog", "-g2012", "-o", "tb.vvp", "-s", "tb", "tb.v", "model.v"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    run = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, capture_output=True, text=True)
    return [line for line in run.stdout.splitlines() if line and line[0].isdigit()]


@pytest.mark.sim
@pytest.mark.needs_tool("iverilog")
@pytest.mark.parametrize("reg_a, reg_b, reg_p", [(0, 0, 0), (1, 1, 1), (1, 0, 1)])
def test_the_multiplier_model_registers_as_set(tmp_path, reg_a, reg_b, reg_p):
    """The MULT18X18D model (iverilog) against a reference: 18 x 18 signed or unsigned products,
    each operand taken a cycle late when its input register is on, the product a cycle late
    when the output register is."""
    import random

    rng = random.Random(reg_a * 4 + reg_b * 2 + reg_p)
    steps = [(rng.randrange(1 << 18), rng.randrange(1 << 18), rng.randrange(2), rng.randrange(2)) for _ in range(60)]

    def value(x, signed):
        return x - (1 << 18) if signed and x >> 17 else x

    want, a_r, b_r, p_r = [], (0, 0), (0, 0), 0
    for a, b, sa, sb in steps:
        ta, tb = (a_r if reg_a else (a, sa)), (b_r if reg_b else (b, sb))
        p = (value(ta[0], ta[1]) * value(tb[0], tb[1])) & ((1 << 36) - 1)
        want.append(p_r if reg_p else p)
        a_r, b_r, p_r = (a, sa), (b, sb), p           # the clock edge after the display
    pins = [f".A{i}(a[{i}])" for i in range(18)] + [f".B{i}(b[{i}])" for i in range(18)]
    pins += [f".P{i}(p[{i}])" for i in range(36)]
    pins += [".SIGNEDA(sa)", ".SIGNEDB(sb)", ".SOURCEA(1'b0)", ".SOURCEB(1'b0)", ".CLK0(clk)", ".CE0(1'b1)",
             ".RST0(1'b0)"]
    body = [f'    a = {a}; b = {b}; sa = {sa}; sb = {sb}; #1 $display("%0d", p); #4 clk = 1; #5 clk = 0;'
            for a, b, sa, sb in steps]
    tb = "\n".join([
        "module tb;", "  reg clk = 0; reg [17:0] a, b; reg sa, sb; wire [35:0] p;",
        f"  MULT18X18D #(.REG_A({reg_a}), .REG_B({reg_b}), .REG_P({reg_p})) mult (" + ", ".join(pins) + ");",
        "  initial begin", *body, "    $finish;", "  end", "endmodule", ""])
    got = [int(line) for line in _adapter_testbench(tmp_path, tb)]
    assert got == want


def test_the_models_lose_only_their_pull_tests():
    text = ("wire I0_pd = (I0 === 1'bz) ? 1'b0 : I0;\n"
            "wire CEN_pu = (CEN === 1'bz) ? 1'b1 : CEN;\n"
            "pd = (x === 1'bz) ? 1'b0 : x;\n"
            "assign PACKAGE_PIN = OUTPUT_ENABLE ? dout : 1'bz;\n")
    out = two_state_models(text).splitlines()
    assert out == ["wire I0_pd = I0;", "wire CEN_pu = CEN;", "pd = x;", "assign PACKAGE_PIN = OUTPUT_ENABLE ? dout : 1'bz;"]


def test_sim_placed_refuses_what_it_cannot_simulate(tmp_path, capsys):
    import numpy as np

    from mamfpga import cli
    from mamfpga.compile.arch import ArchConfig
    import mamfpga.compile as compiler
    from mamfpga.hw.emit import emit
    from tests.support import random_network

    net = random_network(np.random.default_rng(1), [8, 6, 3], 0.5, ["mam", "mac"])
    build = emit(compiler.compile_network(net, ArchConfig(pes=2, lanes=1)), tmp_path / "build")
    np.save(tmp_path / "x.npy", np.zeros((2, 8), np.int8))
    out = tmp_path / "y.npy"
    common = ["--inputs", str(tmp_path / "x.npy"), "--outputs", str(out)]
    for argv, message in (
        (["sim", str(build), "--placed", *common], "--placed and --board go together"),
        (["sim", str(build), "--board", "icebreaker", "--placed", *common], "no bitstream for the icebreaker"),
        (["sim", str(tmp_path / "x.npy"), "--board", "icebreaker", "--placed", *common], "not a network file"),
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


@pytest.mark.slow                  # about 1 minute a network: a board build and a gate-level model each
@pytest.mark.synth
@pytest.mark.sim
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_placed_design_of_random_conv_networks_is_bit_exact(tmp_path, seed, board, capsys):
    """Convolutions (padding, strides, empty and dense filters, fused pools, saturation) through
    the placed and routed iCE40 and ECP5 designs, behind their UART, against the golden model."""
    import numpy as np

    from mamfpga import cli, stages
    from mamfpga.sw import golden
    from tests.support import conv_inputs, random_conv_network

    rng = np.random.default_rng(seed)
    net = random_conv_network(rng, max_hw=7)
    c = stages.compile_for(net, pes=2, lanes=1, board=board)
    build = stages.emit(c, tmp_path / "build", board=board)
    assert cli.main(["synth", str(build), "--board", board, "--bitstream", "--clock", "24"]) == 0
    x = conv_inputs(rng, net.input_shape, count=5)
    np.save(tmp_path / "x.npy", x.reshape(len(x), -1))
    rc = cli.main(["sim", str(build), "--board", board, "--placed", "--inputs", str(tmp_path / "x.npy"),
                   "--outputs", str(tmp_path / "y.npy")])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    want = golden.run(net, x).reshape(len(x), -1)
    assert np.array_equal(np.load(tmp_path / "y.npy").reshape(len(x), -1), want)


def test_a_damaged_routed_netlist_is_refused_in_one_line(tmp_path):
    from mamfpga.boards.placed import placed_model

    for text in ('{"modules": {"top": {"ports": {}}}}', '{"modules": []}', "[1, 2]", "{not json"):
        (tmp_path / "mamfpga_board.placed.json").write_text(text)
        with pytest.raises(PlacedError, match="not a (readable )?nextpnr|a routed netlist has one module"):
            placed_model(tmp_path, "ice40", clock_port="clk12_0__io", work=tmp_path / "w")


def _dp16kd_reference(init, width, modes, steps, regs=(0, 0)):
    """What the ECP5 block RAM does, as documented in yosys's brams_map_16kd.v (the layout) and
    Lattice's write modes, one clock edge per step: the model's outputs after each edge. With
    an output register (``regs``: port A's, port B's), a port shows the read of the edge
    before, taken at each edge its OCE (a step's fifth item) is high; the 36-bit read port's
    word, both halves, under port B's."""
    mem, out, outs = list(init), {"A": 0, "B": 0}, []
    reg = {"A": 0, "B": 0}
    for step in steps:
        oce = {q: step["B" if width == 36 else q][4] for q in "AB"}
        reg = {q: out[q] if oce[q] else reg[q] for q in "AB"}
        old = list(mem)
        for q in "AB":
            ad, di, ce, we = step[q][:4]
            if not ce:
                continue
            if width == 36:
                w = ad >> 5
                if q == "A" and we:
                    for byte in range(4):
                        if ad >> byte & 1:
                            word, half = 2 * w + byte // 2, byte % 2
                            data = (step["A"][1] if byte < 2 else step["B"][1]) >> (9 * half) & 0x1FF
                            mem[word] = mem[word] & ~(0x1FF << 9 * half) | data << 9 * half
                if q == "B":
                    out = {"A": old[2 * w], "B": old[2 * w + 1]}
                continue
            w = ad >> 4
            if width == 18:
                new = old[w]
                for half in (0, 1):
                    if ad >> half & 1:
                        new = new & ~(0x1FF << 9 * half) | (di >> 9 * half & 0x1FF) << 9 * half
                read, read_new = old[w], new
            else:
                half = ad >> 3 & 1
                new = old[w] & ~(0x1FF << 9 * half) | (di & 0x1FF) << 9 * half
                read, read_new = old[w] >> 9 * half & 0x1FF, new >> 9 * half & 0x1FF
            if we:
                mem[w] = new
                out[q] = {0: out[q], 1: read_new, 2: read}[modes[q]]
            else:
                out[q] = read
        outs.append(tuple(reg[q] if r else out[q] for q, r in zip("AB", regs)))
    return outs


@pytest.mark.sim
@pytest.mark.needs_tool("iverilog")
@pytest.mark.parametrize("width, modes, regs", [
    (18, {"A": 2, "B": 0}, (0, 0)), (18, {"A": 1, "B": 2}, (0, 0)), (9, {"A": 0, "B": 1}, (0, 0)),
    (36, {"A": 0, "B": 0}, (0, 0)),
    # the output registers mamfpga.boards.netlist turns on
    (18, {"A": 2, "B": 0}, (1, 1)), (9, {"A": 0, "B": 1}, (0, 1)), (36, {"A": 0, "B": 0}, (1, 1))])
def test_the_block_ram_model_follows_the_documented_modes(tmp_path, width, modes, regs):
    """The MAMFPGA_DP16KD Verilog against the reference above under random reads and writes on
    both ports (iverilog): the INITVAL layout, the byte enables, each width and write mode, with
    and without the output registers."""
    import random

    rng = random.Random(width * 10 + modes["A"])
    init = [rng.randrange(1 << 18) for _ in range(1024)]
    words = 8                                          # a few words, so that reads meet writes
    steps = []
    for _ in range(300):
        step = {}
        for q in "AB":
            word = rng.randrange(words)
            low = {36: rng.randrange(16), 18: rng.randrange(4), 9: rng.randrange(2) << 3 | rng.randrange(8)}[width]
            ad = (word << (5 if width == 36 else 4)) | low
            step[q] = [ad, rng.randrange(1 << 18), int(rng.random() < 0.9), int(rng.random() < 0.5),
                       int(rng.random() < 0.8)]
        if width != 36 and step["A"][0] >> 4 == step["B"][0] >> 4:
            step["B"][3] = 0                           # both ports writing one word: the silicon's is undefined
        steps.append(step)
    want = _dp16kd_reference(init, width, modes, steps, regs)
    initval = ",\n".join(f"    .INITVAL_{i:02X}(320'b" + "".join(f"00{init[16 * i + j]:018b}" for j in reversed(range(16)))
                         + ")" for i in range(64))
    pins = []
    for q in "AB":
        pins += [f".AD{q}{i}(ad{q}[{i}])" for i in range(14)] + [f".DI{q}{i}(di{q}[{i}])" for i in range(18)]
        pins += [f".DO{q}{i}(do{q}[{i}])" for i in range(18)]
        pins += [f".CLK{q}(clk)", f".CE{q}(ce{q})", f".WE{q}(we{q})", f".OCE{q}(oce{q})", f".RST{q}(1'b0)"]
        pins += [f".CS{q}{i}(1'b0)" for i in range(3)]
    body = []
    for step in steps:
        for q in "AB":
            ad, di, ce, we, oce = step[q]
            body.append(f"    ad{q} = {ad}; di{q} = {di}; ce{q} = {ce}; we{q} = {we}; oce{q} = {oce};")
        body.append('    #5 clk = 1; #1 $display("%0d %0d", doA, doB); #4 clk = 0;')
    tb = "\n".join([
        "module tb;", "  reg clk = 0; reg [13:0] adA, adB; reg [17:0] diA, diB; reg ceA, ceB, weA, weB, oceA, oceB;",
        "  wire [17:0] doA, doB;",
        f"  MAMFPGA_DP16KD #(.DATA_WIDTH_A({width}), .DATA_WIDTH_B({width}), .WRITEMODE_A({modes['A']}), "
        f".WRITEMODE_B({modes['B']}), .REGMODE_A({regs[0]}), .REGMODE_B({regs[1]}),", initval, "  ) ram (" + ", ".join(pins) + ");",
        "  initial begin", *body, "    $finish;", "  end", "endmodule", ""])
    got = [tuple(map(int, line.split())) for line in _adapter_testbench(tmp_path, tb)]
    assert got == want
