"""FPGA devices: the capacities the compiler and the board flow check against.

One table for both: the compiler's block-RAM check (:func:`mamfpga.compile.passes.check_capacity`)
and the board flow's fit check of the synthesized design read the same
:class:`Device`. Boards (``mamfpga.boards.targets``) name their device by key.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Device", "DEVICES", "device", "bram_blocks", "memory_blocks", "memory_style"]


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


def device(name: str) -> Device:
    """The device called ``name`` (a key of :data:`DEVICES`)."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; known devices: {', '.join(DEVICES)}")
    return DEVICES[name]


#: yosys's block RAM cell of each family, as its memory_libmap library describes it: the cost
#: of one cell, its address bits at the narrowest width, its data widths, and its byte (write
#: enable granularity; 1: per bit). iCE40: SB_RAM40_4K (256 x 16 .. 2048 x 2); ECP5: DP16KD
#: (1024 x 18 .. 16384 x 1) and PDPW16KD (512 x 36); 7-series: RAMB18 (no yosys flow here).
_BRAM_CELLS = {
    "ice40": (64, 11, (2, 4, 8, 16), 1),
    "ecp5": (128, 14, (1, 2, 4, 9, 18, 36), 9),
    "xc7": (128, 14, (1, 2, 4, 9, 18, 36), 9),
}
#: memory_libmap's cost of one bit of memory left to soft logic (its defaults)
LOGIC_COST_ROM = 1 / 16
LOGIC_COST_RAM = 1.0


def _geometries(width: int, depth: int, family: str, *, rom: bool, write_enables: int):
    """(cells, cost) of each way yosys can lay a width x depth memory (one synchronous read
    port; a write port unless ``rom``) out in the family's block RAM: address ranges of
    the cell's depth, data bits packed side by side over them, a read multiplexer of half a
    unit per bit per extra range, a write demultiplexer of half a unit per enable per range."""
    cost, abits, widths, byte = _BRAM_CELLS[family]
    for k, w in enumerate(widths):
        ranges = (depth - 1) // (1 << (abits - k)) + 1
        bits = width
        if not rom and byte > 1 and w >= byte and width % 8 == 0:
            bits = (width // 8) * byte          # each 8-bit write lane padded to the cell's byte
        cells = -(-ranges * bits // w)
        c = cost * cells + 0.5 * (ranges - 1) * width
        if not rom and ranges > 1:
            c += 0.5 * ranges * write_enables
        yield cells, c


def bram_blocks(width: int, depth: int, family: str) -> int:
    """Block RAM cells of the cheapest layout of a width x depth memory in the family's cells."""
    if width <= 0 or depth <= 0:
        return 0
    return min(_geometries(width, depth, family, rom=True, write_enables=0), key=lambda g: g[1])[0]


def memory_blocks(width: int, depth: int, family: str, *, rom: bool, write_enables: int = 1) -> int:
    """Block RAM cells a width x depth memory takes: those of its cheapest layout when that
    costs less than the memory in soft logic (``width * depth`` bits at ``LOGIC_COST_ROM`` for a
    ROM, ``LOGIC_COST_RAM`` for a RAM, yosys's own weights), else 0: it is built from logic
    cells and flip-flops. The RTL marks every memory with the style this decides
    (:func:`memory_style`), so synthesis builds what the compiler counted."""
    if width <= 0 or depth <= 0:
        return 0
    cells, cost = min(_geometries(width, depth, family, rom=rom, write_enables=write_enables), key=lambda g: g[1])
    logic = int(width * depth * (LOGIC_COST_ROM if rom else LOGIC_COST_RAM))
    return cells if cost < logic else 0


def memory_style(width: int, depth: int, family: str | None, *, rom: bool, write_enables: int = 1,
                 collisions_unused: bool = False) -> dict:
    """The attributes the RTL puts on a memory for ``family`` (``ram_style`` block or logic, as
    :func:`memory_blocks` decides); none without a family (synthesis then decides).

    ``collisions_unused``: the design never uses what its read port reads in a cycle in which
    its write port writes the same address (the schedule reads a value a cycle after its write
    at the earliest; a FIFO reads no entry it is writing). The memory is marked ``no_rw_check``
    then: neither family's block RAM defines a read that meets the other port's write, and
    without the mark yosys builds the old value's return around the block (the write data
    registered, an address compare, a multiplexer on every read bit: a LUT between the block
    and the register after it, logic cells and flip-flops on every such memory)."""
    if family is None or family not in _BRAM_CELLS:
        return {}
    blocks = memory_blocks(width, depth, family, rom=rom, write_enables=write_enables)
    style = {"ram_style": "block" if blocks else "logic"}
    if collisions_unused and not rom:
        style["no_rw_check"] = 1
    return style
