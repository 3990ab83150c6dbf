"""FPGA devices and the boards that carry them: capacities the compiler checks against.

Adding a board with an open flow is one entry here (and, for bitstreams, its
amaranth-boards platform class in the board flow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Device", "DEVICES", "BOARDS", "board_device", "bram_blocks"]


@dataclass(frozen=True)
class Device:
    name: str
    family: str          # "ice40" | "ecp5"
    lut: int
    ff: int
    bram: int            # block RAMs
    bram_bits: int       # bits per block RAM
    dsp: int
    spram: int = 0       # iCE40UP: 256 Kbit single-port RAMs


DEVICES = {
    "iCE40UP5K": Device("iCE40UP5K", "ice40", 5280, 5280, 30, 4096, 8, spram=4),
    "LFE5U-12F": Device("LFE5U-12F", "ecp5", 12096, 12096, 32, 18432, 28),
    "LFE5U-25F": Device("LFE5U-25F", "ecp5", 24288, 24288, 56, 18432, 28),
    "LFE5U-45F": Device("LFE5U-45F", "ecp5", 43848, 43848, 108, 18432, 72),
    "LFE5U-85F": Device("LFE5U-85F", "ecp5", 83640, 83640, 208, 18432, 156),
}

#: board name -> device
BOARDS = {
    "icebreaker": "iCE40UP5K",
    "ulx3s-12f": "LFE5U-12F",
    "ulx3s-25f": "LFE5U-25F",
    "ulx3s-45f": "LFE5U-45F",
    "ulx3s-85f": "LFE5U-85F",
}

# (depth, width) configurations of one block RAM
_BRAM_SHAPES = {
    "ice40": [(256, 16), (512, 8), (1024, 4), (2048, 2)],
    "ecp5": [(512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)],
}


def board_device(board: str) -> Device:
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known boards: {', '.join(BOARDS)}")
    return DEVICES[BOARDS[board]]


def bram_blocks(width: int, depth: int, family: str) -> int:
    """Block RAMs a width x depth memory needs, in the best of the family's shapes."""
    if width <= 0 or depth <= 0:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in _BRAM_SHAPES[family])
