"""The ``mamfpga`` command line (DESIGN.md's CLI contract).

Exit codes: 0 success; 1 the work ran and found a problem (a mismatch, a
missing tool); 2 bad input (a malformed file, a bad option, an output that
would overwrite a user's file). Errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mamfpga import toolchain
from mamfpga.outputs import OutputError, atomic_write_json, claim_dir

__all__ = ["main"]

BOARDS_FAMILY = {"icebreaker": "ice40", "ulx3s-85f": "ecp5", "ulx3s-45f": "ecp5",
                 "ulx3s-25f": "ecp5", "ulx3s-12f": "ecp5"}


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


# --------------------------------------------------------------------------- doctor

def cmd_doctor(args) -> int:
    checks = toolchain.doctor_checks()
    width = max(len(c.name) for c in checks)
    print(f"{'':2}{'component':<{width}}  {'status':<8}  version / how to get it")
    for c in checks:
        status = "OK" if c.ok else ("MISSING" if c.required else "absent")
        detail = c.version if c.ok else c.hint
        flag = "  " if c.ok else ("! " if c.required else "- ")
        print(f"{flag}{c.name:<{width}}  {status:<8}  {detail}")
    missing = [c.name for c in checks if c.required and not c.ok]
    optional = [c.name for c in checks if not c.required and not c.ok]
    if missing:
        print(f"\n{len(missing)} required component(s) missing: {', '.join(missing)}")
        return 1
    note = f" (optional, absent: {', '.join(optional)})" if optional else ""
    print(f"\nall required components present{note}")
    return 0


# --------------------------------------------------------------------------- demo

class Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.monotonic()

    def start(self, what: str):
        self.n += 1
        self._t = time.monotonic()
        print(f"[{self.n}/{self.total}] {what} ...", flush=True)

    def done(self, result: str):
        print(f"      {result} ({time.monotonic() - self._t:.1f} s)", flush=True)


def cmd_demo(args) -> int:
    from mamfpga.boards.resources import synth_resources
    from mamfpga.hw.maxmin_tree import MaxMinTree
    from mamfpga.hw.verilog import lint, write_verilog
    from mamfpga.sim.runner import run_cocotb

    board = args.board
    if board not in BOARDS_FAMILY:
        raise UsageError(f"unknown board {board!r}; known: {', '.join(BOARDS_FAMILY)}")
    out = claim_dir(args.out, what="demo output folder")
    width, lanes, vectors = 8, 4, 1000
    steps = Steps(4)
    print(f"mamfpga demo: the pipelined max/min comparator tree of a MAM processing element "
          f"(W={width}, L={lanes}), through the whole open toolchain, into {out}/")

    steps.start("generating Verilog with Amaranth")
    tree = MaxMinTree(width=width, lanes=lanes)
    src = write_verilog(tree, "maxmin_tree", out / "maxmin_tree.v")
    steps.done(f"{src} (latency {tree.latency} cycles)")

    steps.start("linting with verilator -Wall")
    issues = lint(src)
    steps.done("clean" if not issues else f"{len(issues)} warning(s): {issues[0]}")

    steps.start(f"co-simulating {vectors} random vectors on Verilator against the Python reference")
    res = run_cocotb(verilog_sources=[src], toplevel="maxmin_tree",
                     test_module="mamfpga.sim.tb_maxmin_tree", build_dir=out / "sim_verilator",
                     config={"width": width, "lanes": lanes, "vectors": vectors, "seed": 1})
    steps.done("0 mismatches" if res.ok else f"FAILED: {'; '.join(res.failures)}")

    steps.start("synthesizing with yosys for iCE40 and ECP5")
    resources = {fam: synth_resources(src, "maxmin_tree", fam) for fam in ("ice40", "ecp5")}
    steps.done(", ".join(f"{f}: {r.lut} LUT / {r.ff} FF" for f, r in resources.items()))

    report = {
        "board": board, "device": None,
        "config": {"pes": 1, "lanes": lanes, "weight_bits": width, "act_bits": width},
        "sim": {"simulator": "verilator", "samples": vectors, "mismatches": 0 if res.ok else None},
        "resources_by_family": {f: r.as_dict() for f, r in resources.items()},
        "lint_warnings": issues,
    }
    atomic_write_json(out / "report.json", report)
    print(f"\n{'block':<24}{'sim':<14}{'iCE40 LUT/FF':<16}{'ECP5 LUT/FF':<16}")
    ice, ecp = resources["ice40"], resources["ecp5"]
    print(f"{f'MaxMinTree W{width} L{lanes}':<24}{('pass' if res.ok else 'FAIL'):<14}"
          f"{f'{ice.lut}/{ice.ff}':<16}{f'{ecp.lut}/{ecp.ff}':<16}")
    print(f"\nreport: {out / 'report.json'}")
    print("Not yet part of the demo (open issues): training, pruning, quantization, "
          "the compiler, the accelerator, board bitstreams.")
    return 0 if res.ok and not issues else 1


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mamfpga", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    d = sub.add_parser("doctor", help="which tools are present, and how to get the rest")
    d.set_defaults(func=cmd_doctor)

    d = sub.add_parser("demo", help="the whole flow on the built-in default")
    d.add_argument("--out", default="build/demo", type=Path, help="output folder (default build/demo)")
    d.add_argument("--board", default="icebreaker", help="target board (default icebreaker)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    toolchain.activate()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, OutputError) as exc:
        print(f"mamfpga {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except toolchain.MissingToolError as exc:
        print(f"mamfpga {args.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mamfpga {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
