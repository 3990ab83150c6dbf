"""The ECP5 block RAMs' output registers taken from the flip-flops after them (mamfpga.boards.netlist).

The pass's effect on real designs is measured by the board builds (the README's ECP5 figures)
and its bit-exactness by the placed-design regression (``pytest -m slow
tests/boards/test_placed.py``), which simulates the routed netlist with the registers in the
blocks; these tests hold its rules on small netlists.
"""

from __future__ import annotations

import copy

import pytest

from mamfpga.boards.netlist import absorb_output_registers

CLK, CE = 2, 3


def _ram(width=18, **conns):
    dirs = {f"DO{q}{i}": "output" for q in "AB" for i in range(18)}
    dirs.update({p: "input" for p in ("CLKA", "CLKB", "OCEA", "OCEB", "CEA", "CEB")})
    return {"type": "DP16KD", "port_directions": dirs,
            "parameters": {"DATA_WIDTH_A": f"{width:032b}", "DATA_WIDTH_B": f"{width:032b}",
                           "REGMODE_A": "NOREG", "REGMODE_B": "NOREG"},
            "connections": {"CLKA": [CLK], "CLKB": [CLK], "OCEA": ["1"], "OCEB": ["1"], **conns}}


def _ff(d, q, *, ce=None, lsr=None, clk=CLK):
    params = {"CEMUX": "CE" if ce else "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR",
              "REGSET": "RESET", "SRMODE": "LSR_OVER_CE"}
    conns = {"CLK": [clk], "DI": [d], "Q": [q]}
    if ce:
        conns["CE"] = [ce]
    if lsr:
        conns["LSR"] = [lsr]
    return {"type": "TRELLIS_FF", "parameters": params,
            "port_directions": {"CLK": "input", "DI": "input", "CE": "input", "LSR": "input", "Q": "output"},
            "connections": conns}


def _lut(a, z):
    return {"type": "LUT4", "parameters": {"INIT": "1010101010101010"},
            "port_directions": {"A": "input", "Z": "output"}, "connections": {"A": [a], "Z": [z]}}


def _module(read_bits=3, port="B", width=18, **ff_kw):
    """A block RAM whose port ``port`` reads ``read_bits`` bits into flip-flops (nets 100+ ->
    200+)."""
    conns = {f"DO{port}{i}": [100 + i] for i in range(read_bits)}
    cells = {"ram": _ram(width, **conns)}
    for i in range(read_bits):
        cells[f"ff{i}"] = _ff(100 + i, 200 + i, **ff_kw)
    return {"ports": {}, "cells": cells}


def test_plain_registers_become_the_ports_output_register():
    m = _module(ce=CE)
    assert absorb_output_registers(m) == 3
    ram = m["cells"]["ram"]
    assert set(m["cells"]) == {"ram"}
    assert [ram["connections"][f"DOB{i}"] for i in range(3)] == [[200], [201], [202]]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG" and ram["parameters"]["REGMODE_A"] == "NOREG"
    assert ram["connections"]["OCEB"] == [CE]             # the registers' clock enable
    assert absorb_output_registers(m) == 0                # nothing more to take


def test_always_enabled_registers_leave_the_output_enable_high():
    m = _module(port="A")
    assert absorb_output_registers(m) == 3
    assert m["cells"]["ram"]["connections"]["OCEA"] == ["1"]
    assert m["cells"]["ram"]["parameters"]["REGMODE_A"] == "OUTREG"


def test_the_36_bit_read_port_takes_both_halves():
    m = _module(read_bits=2, width=36)
    m["cells"]["ram"]["connections"].update({"DOA0": [110], "DOA1": [111]})
    m["cells"].update({"fa0": _ff(110, 210), "fa1": _ff(111, 211)})
    assert absorb_output_registers(m) == 4
    p = m["cells"]["ram"]["parameters"]
    assert p["REGMODE_A"] == p["REGMODE_B"] == "OUTREG"


@pytest.mark.parametrize("damage", ["reset", "other clock", "fan-out", "logic between", "two enables", "a port"])
def test_what_the_output_register_cannot_do_is_left_in_logic(damage):
    m = _module(ce=CE)
    cells = m["cells"]
    if damage == "reset":
        cells["ff1"] = _ff(101, 201, ce=CE, lsr=9)
    elif damage == "other clock":
        cells["ff1"] = _ff(101, 201, ce=CE, clk=7)
    elif damage == "fan-out":                              # the read bit also feeds logic
        cells["lut"] = _lut(101, 300)
    elif damage == "logic between":
        cells["ff1"] = _ff(301, 201, ce=CE)
        cells["lut"] = _lut(101, 301)
    elif damage == "two enables":
        cells["ff1"] = _ff(101, 201, ce=8)
    else:                                                  # the read bit is a module port
        m["ports"]["out"] = {"direction": "output", "bits": [102]}
    before = copy.deepcopy(m)
    assert absorb_output_registers(m) == 0
    assert m == before
