"""The board's ``sync`` clock: from its oscillator through a PLL, with a power-on reset.

``pll_plan(family, f_in, f_target)`` picks the PLL dividers whose output is the
highest frequency not above the target (the divider ranges and VCO/PFD limits
are those of Lattice's iCE40 sysCLOCK and ECP5 sysCLOCK guides, as icepll and
ecppll use them). :class:`ClockReset` instantiates it (``SB_PLL40_PAD`` on
iCE40, ``EHXPLLL`` on ECP5) and holds ``sync`` in reset until the PLL locks and
then for ``POR_US`` more (iCE40 block RAMs read zeros for about 3 us after
configuration).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io

__all__ = ["PLLPlan", "pll_plan", "ClockReset", "POR_US", "por_cycles"]

POR_US = 20


def por_cycles(f_clk: float) -> int:
    """Cycles of the ``sync`` clock the power-on reset holds after the PLL locks."""
    return int(POR_US * 1e-6 * f_clk)


@dataclass(frozen=True)
class PLLPlan:
    family: str
    f_in: float
    f_out: float
    params: dict


def _ice40(f_in: float, f_target: float) -> PLLPlan | None:
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f_out = f_vco / 2 ** divq
                if 16e6 <= f_out <= f_target and (best is None or f_out > best[0]):
                    best = (f_out, divr, divf, divq, f_pfd)
    if best is None:
        return None
    f_out, divr, divf, divq, f_pfd = best
    filt = next(i for i, top in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, float("inf")), 1) if f_pfd < top)
    return PLLPlan("ice40", f_in, f_out, {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filt})


def _ecp5(f_in: float, f_target: float) -> PLLPlan | None:
    best = None
    for clki in range(1, 129):
        f_pfd = f_in / clki
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            f_out = f_pfd * clkfb
            if f_out > f_target or f_out < 3.125e6:
                continue
            for clkop in range(1, 129):
                if 400e6 <= f_out * clkop <= 800e6:
                    if best is None or f_out > best[0]:
                        best = (f_out, clki, clkfb, clkop)
                    break
    if best is None:
        return None
    f_out, clki, clkfb, clkop = best
    return PLLPlan("ecp5", f_in, f_out, {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop,
                                         "CLKOP_CPHASE": clkop - 1})


def pll_plan(family: str, f_in: float, f_target: float) -> PLLPlan:
    """The PLL settings for the fastest clock not above ``f_target`` Hz from ``f_in`` Hz."""
    plan = {"ice40": _ice40, "ecp5": _ecp5}[family](f_in, f_target)
    if plan is None:
        raise ValueError(f"no {family} PLL setting makes {f_target / 1e6:g} MHz or less from "
                         f"{f_in / 1e6:g} MHz")
    return plan


class ClockReset(Elaboratable):
    """Drives the ``sync`` domain from the platform's default clock, through ``plan``'s PLL
    (or directly when ``plan`` is None), with a power-on reset held until lock + ``POR_US``."""

    def __init__(self, plan: PLLPlan | None):
        self.plan = plan
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()            # drives ``sync``, which the top defines
        f_clk = self.plan.f_out if self.plan else platform.default_clk_frequency
        clk_in = platform.request(platform.default_clk, dir="-")
        lock, clk = Signal(), Signal()
        m.d.comb += ClockSignal("sync").eq(clk)
        if self.plan is None:
            m.submodules.clk_buf = buf = io.Buffer("i", clk_in)
            m.d.comb += [clk.eq(buf.i), lock.eq(1)]
        elif self.plan.family == "ice40":
            p = self.plan.params
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"],
                i_PACKAGEPIN=clk_in.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        else:
            p = self.plan.params
            m.submodules.clk_buf = buf = io.Buffer("i", clk_in)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{self.plan.f_in / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{f_clk / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                i_CLKI=buf.i, i_CLKFB=clk, i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0),
                i_PHASESEL1=Const(0), i_PHASEDIR=Const(1), i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1),
                i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
                o_CLKOP=clk, o_LOCK=lock)
        # no explicit constraint: nextpnr derives the PLL output's from the oscillator's
        # power-on reset: counts on the sync clock itself, from lock (flip-flops start at 0)
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += ClockSignal("por").eq(ClockSignal("sync"))
        delay = por_cycles(f_clk)
        timer = Signal(range(delay + 1))
        ready = Signal()
        with m.If(~lock):
            m.d.por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.d.comb += [ResetSignal("sync").eq(~ready), self.locked.eq(lock)]
        return m
