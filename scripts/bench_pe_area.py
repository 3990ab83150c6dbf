"""MAM processing element against MAC processing element: yosys LUT/FF counts, iCE40 and ECP5.

Both PEs run the same compiled 32 x 32 layer (same weight and bias memories),
built for one mode each, so the difference is the reduction (comparator trees
and the max/min bookkeeping against an adder tree and an accumulator).
Usage: .venv/bin/python scripts/bench_pe_area.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def pe_area(mode: str, lanes: int, family: str, pes: int = 1):
    from mamfpga.boards.resources import synth_resources
    from mamfpga.compile.arch import ArchConfig
    from mamfpga.hw.pe import pe_from_program
    from mamfpga.hw.verilog import to_verilog
    from mamfpga.compile import compile_network
    from mamfpga.sw.qnet import QuantLayer, QuantNetwork

    rng = np.random.default_rng(0)
    w = (rng.integers(-127, 128, size=(32, 32)) * (rng.random((32, 32)) < 0.3)).astype(np.int8)
    net = QuantNetwork([QuantLayer(w, rng.integers(-1000, 1000, size=32).astype(np.int32), mode, 3, 10, True)])
    program = compile_network(net, ArchConfig(pes=pes, lanes=lanes), split="never", acc_bits=24)
    return synth_resources(to_verilog(pe_from_program(program, 0), "pe_top"), "pe_top", family)


def main():
    head = f"{'family':<8}{'L':>3}{'MAC LUT':>9}{'MAM LUT':>9}{'ratio':>7}{'MAC FF':>8}{'MAM FF':>8}"
    print(head)
    print("-" * len(head))
    ratios = {}
    for family in ("ice40", "ecp5"):
        for lanes in (1, 2, 4):
            mac = pe_area("mac", lanes, family)
            mam = pe_area("mam", lanes, family)
            print(f"{family:<8}{lanes:>3}{mac.lut:>9}{mam.lut:>9}{mam.lut / mac.lut:>7.2f}{mac.ff:>8}{mam.ff:>8}",
                  flush=True)
            ratios[f"{family} L={lanes}"] = mam.lut / mac.lut
    print("\nyosys synth_ice40 / synth_ecp5 -nodsp (multipliers in LUTs), 24-bit accumulators, one PE,")
    print("its weight, bias and activation memories in block RAM.")
    Path("build/bench").mkdir(parents=True, exist_ok=True)
    Path("build/bench/pe_area.json").write_text(json.dumps(ratios))


if __name__ == "__main__":
    main()
