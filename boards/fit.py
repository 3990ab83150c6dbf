"""Will it fit? Every resource a device limits, estimated before place and route.

Block RAM alone does not decide whether a design fits an iCE40UP5K: logic
cells, DSPs, I/O and the PLL do too, and the board top (host link, FIFOs,
PLL) adds to the accelerator. The estimate comes from the synthesized design
itself: yosys's netlist of the board top (``synth_ice40``/``synth_ecp5``, the
same run the board build makes, cached per design), counted the way nextpnr
packs it:

- iCE40: a logic cell (ICESTORM_LC) holds one LUT4, one flip-flop and one
  carry. A flip-flop shares the cell of the LUT that drives its D input when
  that LUT drives nothing else; a carry shares the cell of the LUT whose I1/I2
  are its I0/I1 (yosys's adders are built so); every other flip-flop or carry
  takes a cell of its own, and so does each carry chain entered from logic
  (nextpnr's feed-in). nextpnr merges and legalises a little differently: the
  count is within -0.1 .. +1.4 % of nextpnr's placed count (8 networks), and
  :data:`PACKING_ALLOWANCE` keeps the estimate above it (measured over the
  robustness networks, README).
- ECP5: LUT4s and flip-flops are placed separately (TRELLIS_COMB,
  TRELLIS_FF), so they are checked separately; a CCU2C carry or a DPR16X4
  distributed RAM counts two LUT4s, a wide mux three (calibrated on one
  design only, see :func:`needs_from_netlist`).

:data:`LOGIC_MARGIN` is the stated margin: a design whose logic estimate
exceeds that fraction of the device is refused (it would place, if at all,
with little room for the router and the clock). Hard blocks (block RAM, DSP,
SPRAM, I/O, PLL) may be used to the last one.

:func:`choose` picks the fastest configuration (P, L, column split) of a
network that fits a board by these rules; :func:`lower_bound_problem` refuses
in milliseconds what no configuration can fit.
"""

from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass, field

from mamfpga.boards.resources import count_cells
from mamfpga.compile import ArchConfig, CompileError, MemoryFitError, compile_network
from mamfpga.compile.device import DEVICES
from mamfpga.errors import MamfpgaError

__all__ = ["LOGIC_MARGIN", "Needs", "needs_from_netlist", "fit_problems", "lower_bound_problem",
           "Candidate", "Choice", "candidates", "choose", "NoFitError", "device_of"]

#: logic (iCE40 logic cells; ECP5 LUTs and flip-flops) may use at most this fraction of the device
LOGIC_MARGIN = 0.90
#: added to the iCE40 packing count: nextpnr adds a few cells of its own (carry-chain feed-ins,
#: constant drivers); the count was -0.1 .. +1.4 % off over the robustness networks (README), so the
#: estimate stays above
PACKING_ALLOWANCE = 0.01


class NoFitError(MamfpgaError, ValueError):
    """No configuration of the network fits the board (the message says why, with the numbers)."""

    exit_code = 2


def device_of(board):
    return DEVICES[board.device]


@dataclass
class Needs:
    """What a synthesized design needs of its device."""
    family: str
    lc: int                 # iCE40 logic cells after packing; ECP5: LUT4s (the binding count of slices)
    lut: int
    ff: int
    carry: int
    bram: int
    dsp: int
    spram: int = 0
    io: int = 0
    pll: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _cell_counts(cells: dict) -> collections.Counter:
    return collections.Counter(c["type"] for c in cells.values())


def _ice40_logic_cells(cells: dict) -> tuple[int, int, int]:
    """(logic cells, flip-flops packed alone, carries packed alone) with nextpnr's iCE40 packing rule."""
    driver, fanout = {}, collections.Counter()
    luts, ffs, carries = {}, [], []
    for name, c in cells.items():
        t = c["type"]
        dirs = c.get("port_directions", {})
        for port, bits in c["connections"].items():
            for b in bits:
                if isinstance(b, str):          # a constant
                    continue
                if dirs.get(port) == "output":
                    driver[b] = name
                else:
                    fanout[b] += 1
        if t == "SB_LUT4":
            luts[name] = c
        elif t.startswith("SB_DFF"):
            ffs.append(c)
        elif t == "SB_CARRY":
            carries.append(c)
    paired, lone_ff = set(), 0
    for c in ffs:
        d = c["connections"]["D"][0]
        lut = driver.get(d) if not isinstance(d, str) else None
        if lut in luts and lut not in paired and fanout[d] == 1:
            paired.add(lut)
        else:
            lone_ff += 1
    by_inputs = collections.defaultdict(list)
    for name, c in luts.items():
        by_inputs[(str(c["connections"]["I1"][0]), str(c["connections"]["I2"][0]))].append(name)
    carry_out = {c["connections"]["CO"][0] for c in carries}
    with_carry, lone_carry, feed_in = set(), 0, 0
    for c in carries:
        key = (str(c["connections"]["I0"][0]), str(c["connections"]["I1"][0]))
        lut = next((n for n in by_inputs.get(key, ()) if n not in with_carry), None)
        if lut is None:
            lone_carry += 1
        else:
            with_carry.add(lut)
        ci = c["connections"]["CI"][0]
        if not isinstance(ci, str) and ci not in carry_out:
            feed_in += 1                # a chain entered from logic: nextpnr legalises it with a cell
    return len(luts) + lone_ff + lone_carry + feed_in, lone_ff, lone_carry


def needs_from_netlist(netlist: dict, top: str, family: str) -> Needs:
    """The needs of yosys's JSON netlist (``write_json`` after synthesis) of module ``top``:
    flip-flops, carries, block RAM and DSPs as :func:`~mamfpga.boards.resources.count_cells`
    counts them, logic as nextpnr packs it."""
    cells = netlist["modules"][top]["cells"]
    n = _cell_counts(cells)
    r = count_cells(dict(n), family)

    def total(prefix):
        return sum(v for k, v in n.items() if k.startswith(prefix))

    if family == "ice40":
        packed, _, _ = _ice40_logic_cells(cells)
        return Needs(family, lc=math.ceil(packed * (1 + PACKING_ALLOWANCE)), lut=r.lut, ff=r.ff, carry=r.carry,
                     bram=r.bram, dsp=r.dsp, spram=n["SB_SPRAM256KA"], io=total("SB_IO") + n["SB_GB_IO"],
                     pll=total("SB_PLL40"))
    if family == "ecp5":
        # nextpnr-ecp5's TRELLIS_COMB count: count_cells's LUT4s (a CCU2C carry is two), a
        # DPR16X4 distributed RAM two, and a PFUMX/L6MUX21 wide mux about three (the LUTs that
        # feed it sit in its slice, pass-throughs where they cannot): calibrated on the digits
        # design at P=2, L=2 (2542 estimated before the allowance, 2537 placed)
        comb = r.lut + 2 * n["TRELLIS_DPR16X4"] + 3 * (n["PFUMX"] + n["L6MUX21"])
        lut = math.ceil(comb * (1 + PACKING_ALLOWANCE))
        return Needs(family, lc=lut, lut=lut, ff=r.ff, carry=r.carry, bram=r.bram, dsp=r.dsp,
                     io=n["TRELLIS_IO"], pll=n["EHXPLLL"])
    raise ValueError(f"no fit rule for the {family} family")


def fit_problems(needs: Needs, device, margin: float = LOGIC_MARGIN) -> list[str]:
    """What does not fit ``device`` (a :class:`~mamfpga.boards.targets.Device`), one phrase each."""
    if needs.family == "ice40":
        logic = [("logic cells (LUT4 + flip-flop + carry, packed)", needs.lc, device.lut)]
    else:
        logic = [("LUT4s", needs.lut, device.lut), ("flip-flops", needs.ff, device.ff)]
    out = []
    for what, need, have in logic:
        limit = int(have * margin)
        if need > limit:
            out.append(f"{need} {what}, over the {limit} allowed ({margin:.0%} of the {device.name}'s {have})")
    for what, need, have in (("block RAMs", needs.bram, device.bram), ("DSPs", needs.dsp, device.dsp),
                             ("SPRAMs", needs.spram, device.spram), ("I/O pins", needs.io, device.io),
                             ("PLLs", needs.pll, device.pll)):
        if have is not None and need > have:
            out.append(f"{need} {what}, the {device.name} has {have}")
    return out


def lower_bound_problem(net, device) -> str | None:
    """What no configuration can fit, from counts alone (milliseconds, before any encoding).

    Every nonzero weight of a layer that computes something takes at least
    ``weight_bits + 1`` bits of block RAM (its value and a column delta of at
    least one bit); the weights live in block RAM (they are initialised by the
    bitstream). Rows the compiler would eliminate as dead are not counted, so
    this is a true lower bound.
    """
    import numpy as np

    nnz = 0
    for layer in net.layers:
        if layer.weight is None:               # a max pool: no weights
            continue
        w = layer.weight.reshape(layer.weight.shape[0], -1)
        live = np.count_nonzero(w, axis=1) > 0
        nnz += int(np.count_nonzero(w[live]))
    need = nnz * (8 + 1)
    have = device.bram * device.bram_bits
    if need > have:
        return (f"the network has {nnz} nonzero weights: at least {need:,} bits of weight memory (9 bits a "
                f"weight, before any row structure), the {device.name} has {have:,} bits of block RAM "
                f"({device.bram} x {device.bram_bits}); prune to fewer than {have // 9} nonzero weights")
    return None


@dataclass
class Candidate:
    pes: int
    lanes: int
    split: str
    cycles: int | None = None
    verdict: str = ""                  # "fits", or why not
    needs: dict | None = None
    copies: bool = False               # each lane its own copy of the activations (ArchConfig.lane_copies)
    pack: bool = False                 # rows share words (ArchConfig.pack_rows)

    @property
    def label(self) -> str:
        return (f"P={self.pes} L={self.lanes}" + (" no split" if self.split == "never" else "")
                + (" lane copies" if self.copies else "") + (" shared words" if self.pack else ""))


@dataclass
class Choice:
    program: object                    # the chosen Program
    chosen: Candidate
    device: object
    tried: list[Candidate] = field(default_factory=list)

    def record(self) -> dict:
        """For the build's manifest: what was chosen, and why."""
        return {"by": "fastest configuration that fits", "logic_margin": LOGIC_MARGIN,
                "chosen": self.chosen.label, "needs": self.chosen.needs,
                "tried": [{"config": c.label, "cycles": c.cycles, "verdict": c.verdict} for c in self.tried]}

    def explain(self, brief: bool = False) -> str:
        """The choice in a few lines: what was chosen, what it uses, why nothing faster
        (``brief``: how many faster ones, by the resource that ruled them out)."""
        c, dev = self.chosen, self.device
        lines = [f"chose {c.label}: {c.cycles} cycles per inference, the fastest that fits"]
        if c.needs:
            n = c.needs
            logic = (f"{n['lc']}/{dev.lut} logic cells ({n['lc'] / dev.lut:.0%})" if n["family"] == "ice40"
                     else f"{n['lut']}/{dev.lut} LUT4 ({n['lut'] / dev.lut:.0%}), {n['ff']}/{dev.ff} FF")
            lines.append(f"  estimate from its synthesized board top: {logic}, {n['bram']}/{dev.bram} block RAM, "
                         f"{n['dsp']}/{dev.dsp} DSP, {n['io']}/{dev.io if dev.io is not None else '?'} I/O, "
                         f"{n['pll']}/{dev.pll} PLL")
        else:
            lines.append(f"  {c.verdict}")
        faster = [t for t in self.tried if t is not c]
        if faster and brief:
            why = collections.Counter("block RAM" if t.verdict.startswith("block RAM") else
                                      "skipped (bigger than one that does not fit)" if t.verdict.startswith("skipped")
                                      else "logic/DSP/other" for t in faster)
            lines.append(f"  {len(faster)} faster configuration(s) do not fit: "
                         + ", ".join(f"{n} by {k}" for k, n in why.items()))
        elif faster:
            lines.append(f"  {len(faster)} faster configuration(s) do not fit:")
            for t in faster:
                lines.append(f"    {t.label:<18}{t.cycles:>8} cycles  {t.verdict}")
        return "\n".join(lines)


#: Rows sharing words among the board flow's candidates by device family, unless asked for
#: (``compile --rows shared`` or ``own``). On the iCEBreaker the digits demo's shared-words design
#: took 605 cycles against 645 but placed at 42.6 MHz at seed 1 (the design without: 46.6, 45.7,
#: 48.8 at seeds 1-3), and synthesized again at the lowered clock it overflowed the logic by 3
#: cells: there they are tried only when asked for. On the ECP5-85F the same shared-words design
#: meets 150 MHz with room (166.4 / 168.8 MHz at seeds 1-2, 2,997 LUT4 against 2,710), so the
#: flow tries both. The flow orders by cycles, not by inferences a second (that would need every
#: candidate placed).
DEFAULT_PACKS = {"ice40": (False,), "ecp5": (False, True)}


def default_packs(family: str | None) -> tuple[bool, ...]:
    """Whether rows share words, the values the board flow tries for ``family`` unasked."""
    return DEFAULT_PACKS.get(family, (False,))


def candidates(pes: list[int] | None = None, lanes: list[int] | None = None,
               splits: list[str] | None = None, copies: list[bool] | None = None,
               packs: list[bool] | None = None, family: str | None = None) -> list[tuple[int, int, str, bool, bool]]:
    """Every (P, L, split, lane copies, rows sharing words) worth trying: P and L powers of two,
    P up to 16, L up to 8, P x L <= 32; with two or more lanes, the activations banked across
    them or copied per lane; rows in words of their own or sharing words, as ``packs`` asks,
    else as the device ``family``'s default (:data:`DEFAULT_PACKS`)."""
    ps = pes or [1, 2, 4, 8, 16]
    ls = lanes or [1, 2, 4, 8]
    out = []
    for p in ps:
        for l in ls:
            if p * l > 32 and not (pes and lanes):
                continue
            for split in (splits or (("auto", "never") if p > 1 else ("never",))):
                for c in (copies or (False, True)):
                    # one lane has no half to share: its program is the same either way
                    for k in ((packs or default_packs(family)) if l > 1 else (False,)):
                        if not (c and l == 1):
                            out.append((p, l, split, c, k))
    return out


def _dominates(a: Candidate, b: Candidate) -> bool:
    """a needs at least what b needs: as many PEs and lanes, split layers if b has them, lane
    copies if b has them (banked activations need less memory than copied ones), and shared
    words if b has them (their split trees and carry)."""
    return (a.pes >= b.pes and a.lanes >= b.lanes and (a.split == b.split or b.split == "never")
            and (a.copies or not b.copies) and (a.pack or not b.pack))


def choose(net, board, *, pes: list[int] | None = None, lanes: list[int] | None = None,
           splits: list[str] | None = None, acc_bits: int | None = None, delta_bits: int | None = None,
           exclude: set[str] = frozenset(), log=print, baud: int | None = None,
           copies: list[bool] | None = None, packs: list[bool] | None = None) -> Choice:
    """The fastest configuration of ``net`` that fits ``board`` (a Board) by every resource.

    Each candidate is compiled (fast) and ordered by its cycle model; its block
    RAM is checked from the compiled memories, then the fastest ones are
    synthesized with the board top (yosys, cached) until one fits. A candidate
    with at least the PEs and lanes of one that overflowed logic or DSPs is
    skipped without synthesis; ``exclude`` names candidates (their labels) to
    pass over, for a caller that found one failing later (in place and route).
    A board with no open flow is checked by block RAM alone. Raises
    :class:`NoFitError` naming why each candidate failed.
    """
    from mamfpga.boards import flow          # the flow imports this module: synthesis on demand

    device = device_of(board)
    problem = lower_bound_problem(net, device)
    if problem:
        raise NoFitError(problem)
    compiled = []
    for p, l, split, cp, pk in candidates(pes, lanes, splits, copies, packs, family=device.family):
        c = Candidate(p, l, split, copies=cp, pack=pk)
        if c.label in exclude:
            continue
        cfg = ArchConfig(pes=p, lanes=l, lane_copies=cp, pack_rows=pk)
        try:
            # with the board: the delta width that needs the fewest block RAMs, and their count
            prog = compile_network(net, cfg, acc_bits=acc_bits, split=split, device=device,
                                   delta_bits=delta_bits)
        except MemoryFitError as exc:
            # without the device (it does not fit), for its cycles
            prog = compile_network(net, cfg, acc_bits=acc_bits, split=split, delta_bits=delta_bits)
            c.verdict = f"block RAM: {exc}".split(" (fewer PEs")[0]
        except CompileError as exc:
            raise NoFitError(str(exc)) from None
        if split == "auto" and not any(x.split for x in prog.layers) and (not splits or "never" in splits):
            continue                       # the same program as split="never"
        if pk and not prog.shares_words and (not packs or False in packs):
            continue                       # no row shares a word: the program without, at more cost
        c.cycles = prog.cycles_model
        compiled.append((c, prog))
    # fastest first; on a tie the smaller design (fewer PEs x lanes, no split, banked)
    compiled.sort(key=lambda cp: (cp[0].cycles, cp[0].pes * cp[0].lanes, cp[0].split != "never", cp[0].copies,
                                  cp[0].pack))
    tried: list[Candidate] = []
    too_big: list[Candidate] = []
    measured: dict[str, tuple] = {}        # label -> (needs, problems), synthesized ahead of its turn

    def measure(c, prog):
        if c.label not in measured:
            log(f"synthesizing {c.label} ({c.cycles} cycles per inference) with its board top to count "
                "its resources ...")
            needs = flow.estimate(prog, board, baud=baud)
            measured[c.label] = (needs, fit_problems(needs, device))
        return measured[c.label]

    for c, prog in compiled:
        tried.append(c)
        if c.verdict:                      # block RAM, counted by the compiler
            continue
        blocker = next((b for b in too_big if _dominates(c, b)), None)
        if blocker is not None:
            c.verdict = f"skipped: at least the PEs and lanes of {blocker.label}, which does not fit"
            continue
        if not board.open_flow:
            c.verdict = "fits by block RAM (no open synthesis flow for this device: logic not counted)"
            return Choice(prog, c, device, tried)
        if c.pack:
            # its twin without shared words needs less logic: where that one does not fit, this
            # one does not either (one synthesis, not two, for the many that fit neither way)
            twin = next(((t, tp) for t, tp in compiled if not t.verdict and not t.pack and
                         (t.pes, t.lanes, t.split, t.copies) == (c.pes, c.lanes, c.split, c.copies)), None)
            if twin is not None and measure(*twin)[1]:
                t = twin[0]
                t.needs, t.verdict = measure(*twin)[0].as_dict(), "needs " + "; ".join(measure(*twin)[1])
                too_big.append(t)
                c.verdict = f"skipped: needs more than {t.label}, which does not fit"
                continue
        needs, problems = measure(c, prog)
        c.needs = needs.as_dict()
        if problems:
            c.verdict = "needs " + "; ".join(problems)
            too_big.append(c)
            continue
        c.verdict = "fits"
        return Choice(prog, c, device, tried)
    raise NoFitError(f"no configuration of the network fits the {board.name} ({device.name}): "
                     + "; ".join(f"{c.label}: {c.verdict}" for c in tried if not c.verdict.startswith("skipped"))
                     + "; prune further")
