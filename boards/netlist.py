"""A pass on yosys's synthesized netlist before nextpnr: ECP5 block RAMs take their output registers.

yosys maps a memory onto the ECP5's ``DP16KD`` without its output register (``REGMODE NOREG``,
its ``brams_16kd.txt`` has no such option, and no pass moves a register into the block). An
unregistered read takes 5.6 ns from the clock to ``DO`` on the LFE5U-85F (speed 6), so with any
route after it a 150 MHz clock (6.67 ns) cannot be met. mamfpga registers every block RAM read it
can as it leaves the block (the PE's weight, activation and bias reads, the result FIFOs' heads):
:func:`absorb_output_registers` moves those flip-flops into the block as its ``OUTREG``
(clock-to-out about 1 ns less than a flip-flop's route away), the same cycle of latency.

A port's register is absorbed only when every used ``DO`` bit of the port drives one
``TRELLIS_FF`` and nothing else, and those flip-flops share the block's port clock and one clock
enable, and have no reset (mamfpga leaves these registers without one on the ECP5): the block's
output register then holds the same value in every cycle. Any other port keeps ``NOREG``.
The 36-bit pseudo-dual port (one read port, port B, whose word is ``{DOB, DOA}``) takes both
halves' registers together. The routed netlist is simulated with the output register
(:mod:`mamfpga.boards.placed`), so the placed design's bit-exactness covers this pass.
"""

from __future__ import annotations

import collections

__all__ = ["absorb_output_registers"]


def _width(value) -> int:
    v = str(value).strip()
    return int(v, 2) if v and set(v) <= {"0", "1"} else int(v)


def absorb_output_registers(module: dict) -> int:
    """Move each block RAM port's output flip-flops into the ``DP16KD`` (``REGMODE OUTREG``) in
    ``module`` (a yosys JSON module, changed in place); the number of flip-flops absorbed."""
    cells = module["cells"]
    sinks = collections.defaultdict(list)
    for name, c in cells.items():
        dirs = c.get("port_directions", {})
        for port, bits in c["connections"].items():
            if dirs.get(port) != "output":
                for b in bits:
                    if isinstance(b, int):
                        sinks[b].append((name, port))
    ported = {b for v in module.get("ports", {}).values() for b in v["bits"] if isinstance(b, int)}
    absorbed = 0
    for name, c in list(cells.items()):
        if c["type"] != "DP16KD":
            continue
        p, cn = c["parameters"], c["connections"]
        pdp = _width(p.get("DATA_WIDTH_B", 18)) == 36
        groups = [("B", ("A", "B"))] if pdp else [("A", ("A",)), ("B", ("B",))]
        for port, outs in groups:
            if str(p.get(f"REGMODE_{port}", "NOREG")).strip() != "NOREG":
                continue
            pairs = []                     # (DO pin, its flip-flop)
            ok = True
            for q in outs:
                for i in range(18):
                    bits = cn.get(f"DO{q}{i}")
                    if not bits or not isinstance(bits[0], int) or not sinks.get(bits[0]):
                        continue
                    s = sinks[bits[0]]
                    ff = cells[s[0][0]] if len(s) == 1 else None
                    if (ff is None or ff["type"] != "TRELLIS_FF" or s[0][1] != "DI" or bits[0] in ported
                            or not _plain_register(ff, cn.get(f"CLK{port}"))):
                        ok = False
                        break
                    pairs.append((f"DO{q}{i}", s[0][0]))
                if not ok:
                    break
            if not ok or not pairs:
                continue
            enables = {_enable(cells[f]) for _, f in pairs}
            if len(enables) != 1:
                continue
            enable = enables.pop()
            for pin, f in pairs:
                cn[pin] = cells.pop(f)["connections"]["Q"]
                absorbed += 1
            for q in outs:
                p[f"REGMODE_{q}"] = "OUTREG"
                cn[f"OCE{q}"] = list(enable)
            if pdp:                        # both halves of the word: one read port's registers
                p["REGMODE_A"], cn["OCEA"] = "OUTREG", list(enable)
    return absorbed


def _enable(ff: dict) -> tuple:
    """A flip-flop's clock enable as a connection: its CE net, or constant 1."""
    if str(ff["parameters"].get("CEMUX", "1")).strip() == "CE" and ff["connections"].get("CE"):
        return tuple(ff["connections"]["CE"])
    return ("1",)


def _plain_register(ff: dict, clock) -> bool:
    """A rising-edge flip-flop on ``clock`` with no reset (set or reset) and a plain or constant
    clock enable: what the block's output register does."""
    p, cn = ff["parameters"], ff["connections"]
    if str(p.get("CLKMUX", "CLK")).strip() != "CLK" or cn.get("CLK") != clock:
        return False
    if str(p.get("CEMUX", "1")).strip() not in ("1", "CE"):
        return False
    lsr = cn.get("LSR")
    if lsr and lsr != ["0"] and str(p.get("LSRMUX", "LSR")).strip() != "0":
        return False
    if str(p.get("GSR", "ENABLED")).strip() != "DISABLED" and str(p.get("REGSET", "RESET")).strip() != "RESET":
        return False
    return True
