"""Board figures: Fmax of the digits network's board top (UART host link included) on the
iCE40UP5K and the ECP5-85F, the warm time of ``mamfpga demo``, whether the demo's
bitstream comes out byte-identical when built twice, and the demo's bitstream's own
design (nextpnr's routed netlist) answering the 540 test digits through its UART
(``mamfpga sim BUILD --board NAME --placed``).

Runs the demo twice (the second time warm, timed), then builds the demo's
network (its net.npz, in the configuration the demo chose) for each board once at the DESIGN.md target clock (48 MHz,
150 MHz) with no retry, so Fmax is what nextpnr reaches against that target.
Usage: .venv/bin/python scripts/bench_board.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path("build/bench")


def bitstream_reproducible(build: Path, board: str, clock_mhz: float) -> dict:
    """Build ``build``'s board top twice from scratch (two copies of the build folder, the same
    clock and nextpnr seed, the cache of synthesized designs emptied before each, so yosys runs
    too) and compare the bitstreams byte for byte."""
    from mamfpga import stages, toolchain

    bins = []
    for k in (1, 2):
        shutil.rmtree(toolchain.cache_dir() / "synth", ignore_errors=True)
        copy = OUT / f"repro-{k}"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(build, copy, ignore=shutil.ignore_patterns("board-*", "sim_*"))
        t = time.perf_counter()
        r = stages.synthesize(copy, board, bitstream=True, clock_mhz=clock_mhz, retries=0, log=lambda _m: None)
        if not r.bitstream:
            raise SystemExit(f"no bitstream at {clock_mhz} MHz (timing not met): cannot compare")
        bins.append((Path(r.bitstream).read_bytes(), time.perf_counter() - t))
    same = bins[0][0] == bins[1][0]
    print(f"bitstream of the demo's build on the {board} at {clock_mhz} MHz, built twice: "
          f"{'byte-identical' if same else 'DIFFERENT'} ({len(bins[0][0])} bytes, {bins[0][1]:.0f} s and "
          f"{bins[1][1]:.0f} s)\n", flush=True)
    return {"identical": same, "bytes": len(bins[0][0]), "seconds": [b[1] for b in bins]}


def placed_simulation(demo: Path) -> dict:
    """The demo network's placed and routed design behind its UART, on every test digit, against
    the golden model and the cycle model: the iCEBreaker's from the demo's own bitstream, the
    ULX3S-85F's from a bitstream of the same network built here (the demo's configuration)."""
    from mamfpga import stages

    ds = stages.load_dataset("digits")
    out = {}
    head = (f"{'board':<12}{'clock':>8}{'baud':>9}{'div':>5}{'samples':>9}{'wrong':>7}{'cycles':>8}{'model':>7}"
            f"{'checks':>8}{'seconds':>9}  netlist")
    print(head)
    print("-" * len(head))
    cfg = stages.Report.load(demo).compile
    net = stages.load_qnet(demo / "net.npz")
    for board in ("icebreaker", "ulx3s-85f"):
        if board == "icebreaker":
            build = demo / "build"
            program, _ = stages.load(build)
        else:
            c = stages.compile_for(net, pes=cfg.pes, lanes=cfg.lanes, board=board, split=cfg.split,
                                   lane_copies=cfg.lane_copies, pack_rows=cfg.pack_rows)
            build = OUT / f"placed-{board}"
            if build.exists():
                shutil.rmtree(build)
            build = stages.emit(c, build, board=board)
            stages.synthesize(build, board, bitstream=True, log=lambda _m: None)
            program = c.program
        fig, _res = stages.simulate_placed(program, build, board, ds.x_test)
        syn = stages.Report.load(build).synth
        print(f"{board:<12}{syn.clock['mhz']:>8.2f}{fig.baud:>9}{fig.divisor:>5}{fig.samples:>9}{fig.mismatches:>7}"
              f"{'/'.join(map(str, fig.cycles_placed)):>8}{fig.cycles_model:>7}"
              f"{'ok' if not fig.protocol_problems else 'FAILED':>8}{fig.seconds:>9.0f}  {fig.netlist}; {fig.clock}",
              flush=True)
        out[board] = {k: getattr(fig, k) for k in ("samples", "mismatches", "cycles_placed", "cycles_model",
                                                   "protocol_problems", "seconds", "baud", "divisor")}
    print()
    return out


def main():
    from mamfpga import stages

    figures = {}
    demo = OUT / "demo"
    subprocess.run([sys.executable, "-m", "mamfpga", "demo", "--out", str(demo), "-q"], check=True,
                   capture_output=True)                               # warms every cache
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mamfpga", "demo", "--out", str(demo), "-q"], check=True,
                   capture_output=True)
    figures["demo_warm_s"] = time.perf_counter() - t
    print(f"mamfpga demo, warm caches: {figures['demo_warm_s']:.0f} s\n")
    # the same inputs give the same bitstream (with the same nextpnr seed)
    synth = stages.Report.load(demo / "build").synth
    figures["placed_sim"] = placed_simulation(demo)
    figures["bitstream_repro"] = bitstream_reproducible(demo / "build", "icebreaker", synth.clock["mhz"])
    net = stages.load_qnet(demo / "net.npz")
    # the configuration the demo chose to fit the iCEBreaker (mamfpga.boards.fit), on both boards
    cfg = stages.Report.load(demo).compile
    P, L, split, copies, packs = cfg.pes, cfg.lanes, cfg.split, cfg.lane_copies, cfg.pack_rows
    head = f"{'board':<12}{'device':<11}{'P':>3}{'L':>3}{'target':>8}{'Fmax':>8}{'LUT':>7}{'FF':>7}{'BRAM':>6}{'DSP':>5}  critical path"
    print(head)
    print("-" * len(head))
    for name, target in (("icebreaker", 48e6), ("ulx3s-85f", 150e6)):
        c = stages.compile_for(net, pes=P, lanes=L, board=name, split=split, lane_copies=copies, pack_rows=packs)
        program = c.program
        folder = OUT / f"board-{name}"
        if folder.exists():
            shutil.rmtree(folder)
        build = stages.emit(c, folder, board=name)
        r = stages.synthesize(build, name, clock_mhz=target / 1e6, log=lambda _m: None)
        res, cp = r.resources, r.critical_path
        print(f"{name:<12}{r.device:<11}{P:>3}{L:>3}{target / 1e6:>8.0f}{r.fmax_mhz:>8.1f}{res['lut']:>7}"
              f"{res['ff']:>7}{res['bram']:>6}{res['dsp']:>5}  {cp['ns']:.1f} ns, {cp['routing_ns']:.1f} routing: "
              f"{cp['from']} -> {cp['to']}", flush=True)
        figures[name] = {"fmax_mhz": r.fmax_mhz, "target_mhz": target / 1e6, "resources": res,
                         "critical_path": cp, "cycles": program.cycles_model}
    (OUT / "board.json").write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
