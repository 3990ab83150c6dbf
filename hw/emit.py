"""The build stage's hardware half: a compiled program's accelerator as Verilog in its build folder."""

from __future__ import annotations

from pathlib import Path

from mamfpga.compile.build import write_build
from mamfpga.compile.ir import Program
from mamfpga.hw.accelerator import Accelerator
from mamfpga.hw.verilog import to_verilog, write_verilog

__all__ = ["TOP_NAME", "emit", "accelerator_verilog"]

#: the accelerator's Verilog top module in every build folder
TOP_NAME = "mamfpga_accel"


def emit(program: Program, build: str | Path, *, board: str | None = None, choice: dict | None = None) -> Path:
    """BUILD/: the program's memory images and manifest (:func:`mamfpga.compile.build.write_build`)
    and ``accelerator.v``, the accelerator generated for it (top module :data:`TOP_NAME`)."""
    build = write_build(program, build, board=board, top=TOP_NAME, choice=choice)
    write_verilog(Accelerator(program), TOP_NAME, build / "accelerator.v")
    return build


def accelerator_verilog(program: Program) -> str:
    """The text :func:`emit` writes as ``accelerator.v``."""
    return to_verilog(Accelerator(program), TOP_NAME)
