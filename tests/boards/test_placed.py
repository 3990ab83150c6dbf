"""``mamfpga sim BUILD --board NAME --placed``: the routed netlist made a simulation model.

The rewriting of nextpnr's netlist (the PLL replaced by its output clock, the pads by ports,
the cell settings the models do not follow refused) is tested on small hand-made netlists;
the whole flow, a bitstream's design answering through its UART, on a small network in
tests/boards/test_board_cli.py and on the demo's network in scripts/bench.
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


def test_ecp5_block_ram_has_no_model_and_is_refused():
    doc = _ecp5_netlist()
    doc["modules"]["top"]["cells"]["ram"] = _cell("DP16KD", {}, {})
    with pytest.raises(PlacedError, match="1 DP16KD cells and no simulation model"):
        simulation_netlist(doc, "ecp5", clock_port="clk25_0__io")


@pytest.mark.parametrize("params, message", [
    ({"REG_INPUTA_CLK": "CLK0"}, "REG_INPUTA_CLK=CLK0"),
    ({"MULT_BYPASS": "ENABLED"}, "MULT_BYPASS"),
    ({"A17MUX": "INV"}, "A17MUX='INV'"),
])
def test_ecp5_multiplier_settings_without_a_model_are_refused(params, message):
    with pytest.raises(PlacedError, match=message):
        simulation_netlist(_ecp5_netlist(**params), "ecp5", clock_port="clk25_0__io")


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


@pytest.mark.slow                  # about 2 minutes a network: a board build and a gate-level model each
@pytest.mark.synth
@pytest.mark.sim
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_placed_design_of_random_conv_networks_is_bit_exact(tmp_path, seed, capsys):
    """Convolutions (padding, strides, empty and dense filters, fused pools, saturation) through
    the placed and routed iCE40 design, behind its UART, against the golden model."""
    import numpy as np

    from mamfpga import cli, stages
    from mamfpga.sw import golden
    from tests.support import conv_inputs, random_conv_network

    rng = np.random.default_rng(seed)
    net = random_conv_network(rng, max_hw=7)
    c = stages.compile_for(net, pes=2, lanes=1, board="icebreaker")
    build = stages.emit(c, tmp_path / "build", board="icebreaker")
    assert cli.main(["synth", str(build), "--board", "icebreaker", "--bitstream", "--clock", "24"]) == 0
    x = conv_inputs(rng, net.input_shape, count=5)
    np.save(tmp_path / "x.npy", x.reshape(len(x), -1))
    rc = cli.main(["sim", str(build), "--board", "icebreaker", "--placed", "--inputs", str(tmp_path / "x.npy"),
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
