"""FPGA devices and the boards that carry them: capacities the compiler checks against.

A board is one small file in ``boards/catalog/`` that registers a
:class:`Board`: its name, its device (an entry of ``DEVICES``), the
amaranth-boards platform class that knows its pins, and the clock to run at.
Boards with no open flow (``open_flow=False``) get Verilog and the platform's
constraint files, to finish with the vendor's tools.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass

__all__ = ["Device", "Board", "DEVICES", "BOARDS", "register", "board_device", "board", "bram_blocks"]


@dataclass(frozen=True)
class Device:
    name: str
    family: str          # "ice40" | "ecp5" | "xc7"
    lut: int
    ff: int
    bram: int            # block RAMs (iCE40 EBR 4 Kbit, ECP5 DP16KD 18 Kbit, 7-series RAMB18)
    bram_bits: int       # bits per block RAM
    dsp: int
    spram: int = 0       # iCE40UP: 256 Kbit single-port RAMs
    io: int | None = None  # user I/O pins of the board's package (None: not checked)
    pll: int = 1


DEVICES = {
    # iCE40UP5K in the SG48 package: 39 SB_IO (nextpnr's count), one PLL
    "iCE40UP5K": Device("iCE40UP5K", "ice40", 5280, 5280, 30, 4096, 8, spram=4, io=39, pll=1),
    # ECP5 in the CABGA381 package of the ULX3S: 197 user I/O (203 on the 45F, 205 on the 85F)
    "LFE5U-12F": Device("LFE5U-12F", "ecp5", 12096, 12096, 32, 18432, 28, io=197, pll=2),
    "LFE5U-25F": Device("LFE5U-25F", "ecp5", 24288, 24288, 56, 18432, 28, io=197, pll=2),
    "LFE5U-45F": Device("LFE5U-45F", "ecp5", 43848, 43848, 108, 18432, 72, io=203, pll=4),
    "LFE5U-85F": Device("LFE5U-85F", "ecp5", 83640, 83640, 208, 18432, 156, io=205, pll=4),
    "XC7A35T": Device("XC7A35T", "xc7", 20800, 41600, 100, 18432, 90, io=210, pll=5),
}


@dataclass(frozen=True)
class Board:
    name: str
    device: str                   # key of DEVICES
    platform: str                 # "module:Class" of an amaranth-boards platform
    clock_hz: float | None = None  # PLL target for the sync clock; None: the board's oscillator
    open_flow: bool = True        # yosys + nextpnr + packer from PyPI
    programmer: str = ""          # how to load the bitstream
    serial: str = ""              # where the host link appears on the host

    @property
    def family(self) -> str:
        return DEVICES[self.device].family

    def make_platform(self):
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)()


#: board name -> Board, filled from boards/catalog/
BOARDS: dict[str, Board] = {}


def register(*boards: Board):
    for b in boards:
        if b.device not in DEVICES:
            raise ValueError(f"board {b.name}: unknown device {b.device!r}; known: {', '.join(DEVICES)}")
        BOARDS[b.name] = b


def _load_catalog():
    from mamfpga.boards import catalog

    for info in pkgutil.iter_modules(catalog.__path__):
        importlib.import_module(f"{catalog.__name__}.{info.name}")


def board(name: str) -> Board:
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name]


def board_device(name: str) -> Device:
    return DEVICES[board(name).device]


# (depth, width) configurations of one block RAM
_BRAM_SHAPES = {
    "ice40": [(256, 16), (512, 8), (1024, 4), (2048, 2)],
    "ecp5": [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)],
    "xc7": [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)],
}


def bram_blocks(width: int, depth: int, family: str) -> int:
    """Block RAMs a width x depth memory needs, in the best of the family's shapes."""
    if width <= 0 or depth <= 0:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in _BRAM_SHAPES[family])


_load_catalog()
