"""Vendor multiplier blocks with their own registers, where synthesis would leave them out.

yosys maps a multiply onto the ECP5's MULT18X18D without its input and output registers (it
has no pass that absorbs them, unlike the iCE40's SB_MAC16); the unregistered block takes
about 4 ns, and with its routing it was the ECP5 design's critical path. Designs built for an
ECP5 board instantiate the block here with the registers they would otherwise build in logic.
"""

from __future__ import annotations

from amaranth import Cat, ClockSignal, Const, Instance, Module, Signal

__all__ = ["ecp5_mult", "sext18"]


def ecp5_mult(m: Module, name: str, a, b, *, in_reg: bool, out_reg: bool) -> Signal:
    """The 36-bit product of two 18-bit signed operands through an ECP5 MULT18X18D with its
    input registers (``in_reg``) and its output register (``out_reg``) in the sync domain: a
    cycle for each."""
    p = Signal(36, name=f"{name}_p")
    ports = {f"i_A{k}": a[k] for k in range(18)}
    ports.update({f"i_B{k}": b[k] for k in range(18)})
    ports.update({f"i_C{k}": Const(0, 1) for k in range(18)})
    ports.update({f"o_P{k}": p[k] for k in range(36)})
    regs = {f"p_REG_{r}_{s}": v for r in ("INPUTA", "INPUTB", "OUTPUT") for s, v in
            (("CLK", "CLK0" if (out_reg if r == "OUTPUT" else in_reg) else "NONE"), ("CE", "CE0"), ("RST", "RST0"))}
    m.submodules[name] = Instance(
        "MULT18X18D", **regs, p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE", p_GSR="DISABLED",
        p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED", p_SOURCEB_MODE="B_SHIFT",
        i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
        i_CLK0=ClockSignal("sync"), i_CE0=Const(1, 1), i_RST0=Const(0, 1),
        **{f"i_{s}{k}": Const(0, 1) for s in ("CLK", "CE", "RST") for k in (1, 2, 3)}, **ports)
    return p


def sext18(v):
    """A signed value of at most 18 bits, sign-extended to a multiplier operand's 18 bits."""
    v = v.as_signed()
    assert len(v) <= 18, "a MULT18X18D operand has 18 bits"
    return Cat(v, v[-1].replicate(18 - len(v)))
