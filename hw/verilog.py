"""Verilog emission for any mamfpga component, with the checks Verilator needs."""

from __future__ import annotations

import os
from pathlib import Path

from amaranth import ClockDomain, Module, Signal, Value
from amaranth.back import verilog as _verilog
from amaranth.lib import wiring

from mamfpga.outputs import atomic_write_text

__all__ = ["to_verilog", "write_verilog"]


def _port_names(component: wiring.Component) -> set[str]:
    names = {"clk", "rst"}
    for path, _member, _value in component.signature.flatten(component):
        names.add("__".join(str(p) for p in path))
    return names


def to_verilog(component: wiring.Component, name: str) -> str:
    """Verilog text of ``component`` as module ``name``.

    Verilator refuses a top module whose name equals one of its ports, so that
    is checked here with a clear error instead of a failure deep in a build.
    """
    clash = {p for p in _port_names(component) if p == name}
    if clash:
        raise ValueError(f"top module name {name!r} equals a port name; choose another name")
    # Ports are listed explicitly: the constant `ready` of an always-ready stream is
    # not a port (amaranth 0.5's automatic port list trips over it).
    ports = [v for v in (Value.cast(value) for _p, _m, value in component.signature.flatten(component))
             if isinstance(v, Signal)]
    # Every generated top gets clk/rst, a purely combinational one too, so that
    # testbenches and boards see the same clocking interface.
    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.dut = component
    return _verilog.convert(top, name=name, ports=[cd.clk, cd.rst, *ports], emit_src=False)


def write_verilog(component: wiring.Component, name: str, path: str | os.PathLike) -> Path:
    """Write ``component`` as ``path`` (atomically: no half-written file on failure)."""
    return atomic_write_text(path, to_verilog(component, name))


#: Verilator -Wall warnings that Amaranth's Verilog backend produces by design,
#: each with why it is safe to waive. Everything else is an error.
LINT_WAIVERS = {
    # Amaranth declares each register with its reset value as an initialiser
    # (`reg x = 8'h00;`), the FPGA power-up value, and also assigns it in the
    # clocked process; both are intended and agree.
    "PROCASSINIT": "registers carry their power-up value as a declaration initialiser",
    # Amaranth emits a named wire for every field of a data.View payload and
    # for named intermediates (e.g. `\o__payload.max`, `i__payload[0]`) so that
    # waveforms read well; they drive nothing, by design.
    "UNUSEDSIGNAL": "named debug aliases of payload fields and intermediates",
    # One generated module per file, named by the caller, not by the file.
    "DECLFILENAME": "the output file name is chosen by the user",
    # Amaranth values have explicit widths; its backend writes expressions whose
    # operands differ in width and relies on Verilog's context-determined width
    # rules (and writes `x == 0` as `!x`). The netlist is Amaranth's semantics,
    # which the simulation tests check bit for bit.
    "WIDTHEXPAND": "operand widths follow Verilog's context rules, as Amaranth intends",
    "WIDTHTRUNC": "idem (and `!x` for `x == 0` on a multi-bit x)",
    # Amaranth assigns every signal its default before a case statement, so a
    # case without a default arm is complete in effect.
    "CASEINCOMPLETE": "defaults are assigned before each case statement",
}


def lint(path: str | os.PathLike) -> list[str]:
    """``verilator --lint-only -Wall`` on ``path``; the warnings left after the waivers."""
    import subprocess

    from mamfpga import toolchain

    exe = toolchain.require("verilator")
    args = [exe, "--lint-only", "-Wall", *(f"-Wno-{w}" for w in LINT_WAIVERS), str(path)]
    res = subprocess.run(args, capture_output=True, text=True)
    issues = [ln for ln in res.stderr.splitlines() if ln.startswith(("%Warning", "%Error"))
              and not ln.startswith("%Error: Exiting due to")]
    if res.returncode != 0 and not issues:
        issues = res.stderr.strip().splitlines()[-5:]
    return issues
