"""``mamfpga synth``: a compiled build -> board top -> yosys -> nextpnr -> bitstream, and the report.

The board top (:class:`~mamfpga.boards.top.BoardTop`) goes through amaranth's
own build plan for the board's amaranth-boards platform (Verilog, constraints,
the yosys script and the build script), run with the YoWASP tools in
``BUILD/board-NAME/``. nextpnr writes a JSON report (``--report``) from which
utilisation and Fmax are read; yosys's ``stat -json`` after synthesis gives the
flip-flop count and, when place and route fails, says which resource overflowed.

Boards with no open flow get the same files, ready for the vendor's tools.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mamfpga import toolchain
from mamfpga.boards import hostlink
from mamfpga.boards.clocking import pll_plan
from mamfpga.boards.resources import count_cells
from mamfpga.boards.targets import DEVICES, Board
from mamfpga.boards.top import BOARD_TOP_NAME, BoardTop

__all__ = ["SynthError", "CapacityError", "synth_board", "board_dir", "DEFAULT_BAUD", "parse_nextpnr_report"]

DEFAULT_BAUD = 115200
#: a rebuild aims this far under the Fmax reached: a new placement moves Fmax by a few per cent,
#: and a rebuild that misses again costs another place and route
RETRY_MARGIN = 0.93


class SynthError(RuntimeError):
    pass


class CapacityError(SynthError):
    pass


def board_dir(build: Path, board: Board) -> Path:
    return Path(build) / f"board-{board.name}"


@dataclass
class _Placed:
    lut: int
    ff: int
    bram: int
    dsp: int
    fmax: float | None
    critical_path: dict | None = None


def parse_nextpnr_report(report: dict, family: str) -> _Placed:
    """Utilisation and the sync clock's Fmax (MHz) from nextpnr's ``--report`` JSON."""
    util = report.get("utilization", {})

    def used(*names):
        return sum(int(util[n]["used"]) for n in names if n in util)

    fmax = [float(v["achieved"]) for v in report.get("fmax", {}).values() if "achieved" in v]
    if family == "ice40":
        placed = _Placed(used("ICESTORM_LC"), 0, used("ICESTORM_RAM"), used("ICESTORM_DSP"), None)
    else:
        # TRELLIS_COMB is one LUT4 (or carry half); TRELLIS_FF one flip-flop
        placed = _Placed(used("TRELLIS_COMB"), used("TRELLIS_FF"), used("DP16KD"),
                         used("MULT18X18D", "ALU54B"), None)
    placed.fmax = min(fmax) if fmax else None
    paths = [p for p in report.get("critical_paths", []) if p.get("path")]
    if paths:
        worst = max(paths, key=lambda p: sum(step["delay"] for step in p["path"]))
        steps = worst["path"]
        placed.critical_path = {
            "from": steps[0]["from"]["cell"], "to": steps[-1]["to"]["cell"],
            "ns": round(sum(step["delay"] for step in steps), 2),
            "logic_ns": round(sum(step["delay"] for step in steps if step["type"] == "logic"), 2),
            "routing_ns": round(sum(step["delay"] for step in steps if step["type"] == "routing"), 2),
        }
    return placed


def _capacity_message(stat_json: Path, device, family: str) -> str | None:
    """What does not fit, from yosys's statistics after synthesis."""
    if not stat_json.is_file():
        return None
    data = json.loads(stat_json.read_text())
    cells = data.get("design", {}).get("num_cells_by_type", {})
    r = count_cells(dict(cells), family)
    over = [(what, need, have) for what, need, have in
            (("LUTs", r.lut, device.lut), ("flip-flops", r.ff, device.ff), ("block RAMs", r.bram, device.bram),
             ("DSPs", r.dsp, device.dsp)) if need > have]
    if not over:
        return None
    return "; ".join(f"the design needs {need} {what}, the {device.name} has {have} ({need - have} over, "
                     f"{need / have:.0%})" for what, need, have in over)


def synth_board(build: Path, board: Board, *, bitstream: bool = False, clock_hz: float | None = None,
                baud: int = DEFAULT_BAUD, seed: int = 1, retries: int = 2, log=print) -> dict:
    """Build the board top for ``build`` on ``board``; returns the report's new keys.

    The clock is ``clock_hz``, else the board's target. When place and route
    misses it and the clock was not pinned (``clock_hz`` None), the build is
    run again with the PLL under the Fmax reached (``RETRY_MARGIN``), up to ``retries``
    times, so that the bitstream runs at a clock it meets; the report keeps
    the target, the Fmax of each attempt and the clock built.

    Raises :class:`CapacityError` (what does not fit, by how much) and :class:`SynthError`.
    """
    target = clock_hz or board.clock_hz
    attempts = []
    while True:
        result = _synth_once(build, board, bitstream=bitstream, target=target, baud=baud, seed=seed, log=log)
        if "fmax_mhz" not in result:
            return result
        attempts.append({"clock_mhz": result["clock"]["mhz"], "fmax_mhz": result["fmax_mhz"]})
        result["attempts"] = attempts
        result["target_mhz"] = target / 1e6 if target else None
        if result["timing_met"] or clock_hz is not None or len(attempts) > retries or not result["fmax_mhz"]:
            return result
        lower = result["fmax_mhz"] * 1e6 * RETRY_MARGIN
        log(f"timing not met: Fmax {result['fmax_mhz']:.1f} MHz < {result['clock']['mhz']:g} MHz; "
            f"building again with the clock at or below {lower / 1e6:.1f} MHz")
        target = lower


def _synth_once(build: Path, board: Board, *, bitstream: bool, target: float | None, baud: int, seed: int,
                log) -> dict:
    from mamfpga.sw.compiler import CompileError, check_capacity, load_build

    build = Path(build)
    program = load_build(build)
    device = DEVICES[board.device]
    try:
        memory = check_capacity(program, board.name)
    except CompileError as exc:
        raise CapacityError(str(exc)) from None

    platform = board.make_platform()
    f_osc = platform.default_clk_frequency
    plan = None
    if target is not None and board.open_flow:
        try:
            plan = pll_plan(board.family, f_osc, target)
        except ValueError:
            if f_osc > target:
                raise
            plan = None             # below the PLL's range: the oscillator itself
    f_clk = plan.f_out if plan else f_osc
    ident = hostlink.build_id(build)
    top = BoardTop(program, f_clk=f_clk, baud=baud, ident=ident, pll=plan)   # ValueError on a bad baud

    out = board_dir(build, board)
    if out.exists():
        shutil.rmtree(out)
    overrides = {}
    if board.open_flow:
        overrides = {
            "script_after_synth": "tee -q -o stat.json stat -json",
            # multipliers (the requantizers') in DSP blocks: a LUT multiplier is the critical path
            "synth_opts": "-dsp" if board.family == "ice40" else "",
            "nextpnr_opts": f"--report nextpnr.json --timing-allow-fail --seed {seed}",
        }
    bplan = platform.prepare(top, name=BOARD_TOP_NAME, **overrides)
    bplan.extract(out)
    result = {
        "board": board.name, "device": device.name,
        "clock": {"oscillator_mhz": f_osc / 1e6, "mhz": f_clk / 1e6,
                  "pll": plan.params if plan else None},
        "host_link": {"baud": baud, "divisor": top.divisor, "build_id": f"{ident:08x}"},
        "memory_bram_estimate": memory["bram"],
    }
    if not board.open_flow:
        log(f"{board.name}: no open place-and-route flow on PyPI for the {device.name}; wrote Verilog, "
            f"constraints and the vendor script to {out}/ (run {bplan.script}.sh there with the vendor's tools)")
        result["export_only"] = str(out)
        return result

    toolchain.activate()
    for tool in ("YOSYS", f"NEXTPNR_{board.family.upper()}", "ICEPACK" if board.family == "ice40" else "ECPPACK"):
        toolchain.require(os.environ[tool])
    logfile = out / "build.log"
    log(f"synthesizing with yosys, placing and routing with nextpnr-{board.family} "
        f"({device.name}, {f_clk / 1e6:g} MHz clock); log: {logfile}")
    t0 = time.monotonic()
    with open(logfile, "w") as fh:
        proc = subprocess.run(["sh", f"{bplan.script}.sh"], cwd=out, stdout=fh, stderr=subprocess.STDOUT,
                              env=os.environ)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        msg = _capacity_message(out / "stat.json", device, board.family)
        if msg:
            raise CapacityError(msg)
        tail = logfile.read_text(errors="replace").splitlines()[-15:]
        raise SynthError(f"the board build failed (exit {proc.returncode}); the end of {logfile}:\n"
                         + "\n".join(tail))
    stat = count_cells(dict(json.loads((out / "stat.json").read_text())["design"]["num_cells_by_type"]),
                  board.family)
    placed = parse_nextpnr_report(json.loads((out / "nextpnr.json").read_text()), board.family)
    cycles = program.cycles_per_inference
    result.update({
        "resources": {"lut": placed.lut, "ff": stat.ff, "bram": placed.bram, "dsp": placed.dsp,
                      "lut_avail": device.lut, "ff_avail": device.ff, "bram_avail": device.bram,
                      "dsp_avail": device.dsp},
        "fmax_mhz": placed.fmax,
        "critical_path": placed.critical_path,
        "timing_met": placed.fmax is not None and placed.fmax * 1e6 >= f_clk,
        "latency_us": cycles / f_clk * 1e6,
        "inferences_per_s": f_clk / cycles,
        "synth_seconds": round(seconds, 1),
    })
    ext = "bin" if board.family == "ice40" else "bit"
    packed = out / f"{BOARD_TOP_NAME}.{ext}"
    if bitstream and result["timing_met"]:
        result["bitstream"] = str(packed)
    elif packed.exists():
        packed.unlink()             # not asked for, or it would not run at the clock it was built for
    return result
