"""The boards mamfpga builds for, each carrying a device of :mod:`mamfpga.compile.device`.

A board is one small file in ``boards/catalog/`` that registers a
:class:`Board`: its name, its device (an entry of ``DEVICES``), the
amaranth-boards platform class that knows its pins, and the clock to run at.
Boards with no open flow (``open_flow=False``) get Verilog and the platform's
constraint files, to finish with the vendor's tools.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from mamfpga.compile.device import DEVICES, Device

__all__ = ["Board", "BOARDS", "register", "board_device", "board"]


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


_load_catalog()
