"""Feature maps in the activation buffers, and the address generators of conv layers.

One place for where every activation lives; the compiler lays layers out with it, the program
simulator and the RTL's address generators follow the numbers it gives.

A feature map [C, H, W] is stored with the zero border its consumer's padding asks for:

    byte address of (c, y, x) = base + chan[c] + ((y + top) * pitch + (x + left)) * cs

with Wp = left + W + right and pitch = Wp + extra (``extra`` columns after the right border that
nothing reads or writes: the compiler pitches the input so that a filter's columns spread over
the lanes' banks, an address's bank being its residue mod L). The network's input is stored
channel-major (``cs`` = 1, ``chan[c]`` = c * Hp * pitch): the order it streams in. A conv layer's output is stored position-major: at each
position the ``R * P`` channel slots of the P PEs' R rows (``cs`` = R * P, channel c in slot
r * P + p when it is row r of PE p), so that the P results a step writes form one activation
word. A dense layer reading a feature map reads these addresses as its columns.

Borders are never written: a padded map has a region of its side to itself (:func:`place`)
and the memories start at zero, so its border reads 0 at every inference, as the contract's
zero padding does, in MAC (product 0) and MAM (0 is then a candidate) alike.

A conv layer (with the max pool that follows it fused in, kernel = stride) computes, per PE,
its rows at every position in the order (py, px, dy, dx): pooled output row and column, then
the pool window. The position's window starts at ``origin`` (:func:`ConvGeometry.origins`); a
filter entry (c, ky, kx) sits at the fixed offset ``chan[c] + (ky * Wp + kx) * cs`` from it, so
the filters are stored once, delta-coded by offset, and read again at every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MapLayout", "ConvGeometry", "OutGen", "place"]


@dataclass(frozen=True)
class MapLayout:
    """Where a feature map [C, H, W] lives in its buffer side (bytes)."""
    base: int
    cs: int                      # bytes from one position to the next
    chan: tuple                  # per channel: its byte offset within a position
    h: int
    w: int
    pad: tuple = (0, 0, 0, 0)    # zero border: top, left, bottom, right
    extra: int = 0               # unused columns after the right border: the row pitch is wp + extra

    @property
    def hp(self) -> int:
        return self.pad[0] + self.h + self.pad[2]

    @property
    def wp(self) -> int:
        return self.pad[1] + self.w + self.pad[3]

    @property
    def pitch(self) -> int:
        """Positions from one map row to the next."""
        return self.wp + self.extra

    @property
    def extent(self) -> int:
        """One past the last byte of the region (border included)."""
        return self.base + max(self.chan) + (self.hp * self.pitch - 1) * self.cs + 1

    def addresses(self) -> np.ndarray:
        """The byte address of every value, in C, H, W order (the flattening of the contract)."""
        y, x = np.meshgrid(np.arange(self.h), np.arange(self.w), indexing="ij")
        pos = ((y + self.pad[0]) * self.pitch + x + self.pad[1]).ravel() * self.cs
        return (self.base + np.asarray(self.chan, dtype=np.int64)[:, None] + pos[None, :]).ravel()

    @staticmethod
    def channel_major(base: int, c: int, h: int, w: int, pad=(0, 0, 0, 0), extra: int = 0) -> "MapLayout":
        hp, pitch = pad[0] + h + pad[2], pad[1] + w + pad[3] + extra
        return MapLayout(base, 1, tuple(k * hp * pitch for k in range(c)), h, w, tuple(pad), extra)

    @staticmethod
    def extent_of_channel_major(c: int, h: int, w: int, pad, extra: int = 0) -> int:
        return c * (pad[0] + h + pad[2]) * (pad[1] + w + pad[3] + extra)


@dataclass(frozen=True)
class ConvGeometry:
    """How a conv layer (and its fused max pool) walks its input map."""
    src: MapLayout               # the input map, its border the conv's padding
    kernel: tuple                # (KH, KW) of the filters
    stride: tuple                # (sy, sx)
    pool: tuple                  # (ph, pw) window = stride of the fused max pool; (1, 1): none
    out_h: int                   # outputs after the pool
    out_w: int

    @property
    def window(self) -> int:
        return self.pool[0] * self.pool[1]

    @property
    def positions(self) -> int:
        """Conv positions computed: every position of every pool window."""
        return self.out_h * self.out_w * self.window

    def offsets(self, channels: int) -> np.ndarray:
        """The byte offset of every filter column (c, ky, kx), in that order, from the origin."""
        kh, kw = self.kernel
        ky, kx = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
        within = ((ky * self.src.pitch + kx) * self.src.cs).ravel()
        return (np.asarray(self.src.chan[:channels], dtype=np.int64)[:, None] + within[None, :]).ravel()

    def steps(self) -> dict:
        """The origin generator's increments: along the window (x, y), then the pooled output (px, py)."""
        sy, sx = self.stride
        ph, pw = self.pool
        pitch, cs = self.src.pitch, self.src.cs
        return {"x": sx * cs, "y": sy * pitch * cs, "px": pw * sx * cs, "py": ph * sy * pitch * cs}

    def origins(self) -> np.ndarray:
        """The origin of every position, in the order the PEs compute them: py, px, dy, dx."""
        st = self.steps()
        py, px, dy, dx = np.meshgrid(np.arange(self.out_h), np.arange(self.out_w), np.arange(self.pool[0]),
                                     np.arange(self.pool[1]), indexing="ij")
        return (self.src.base + py * st["py"] + px * st["px"] + dy * st["y"] + dx * st["x"]).ravel()


@dataclass(frozen=True)
class OutGen:
    """Where a row-parallel layer's results go: the P results of row r at output position q
    form the word at ``first + (q // per_row) * (per_row * rows + skip) + (q % per_row) * rows
    + r`` (words of P activations). A dense layer: one position, ``first`` its region. A conv
    layer: the positions of its map, ``skip`` the border words between map rows. With a pool,
    each output word is the max of ``window`` consecutive results of the same row."""
    first: int                   # word address of position 0
    rows: int                    # R: rows per PE per position
    per_row: int                 # positions per map row
    skip: int                    # words skipped at the end of a map row (the border)
    positions: int
    window: int = 1

    def words(self) -> np.ndarray:
        """The word address of every write, in order: position-major, then row."""
        q = np.arange(self.positions)
        pos = self.first + (q // self.per_row) * (self.per_row * self.rows + self.skip) + (q % self.per_row) * self.rows
        return (pos[:, None] + np.arange(self.rows)[None, :]).ravel()


def place(maps: list[tuple[int, int, bool]], pes: int) -> tuple[list[int], list[int]]:
    """Bases of maps ``(side, bytes, exclusive)`` in their buffer side, and the bytes each side
    needs. An exclusive map (one with a border, which must stay zero) gets a region of its side
    that nothing else writes; the others share the rest, one after another in time. Regions
    start on word boundaries (P bytes)."""
    def up(n):
        return -(-n // pes) * pes

    ends = [0, 0]
    bases = [0] * len(maps)
    for i, (side, size, exclusive) in enumerate(maps):
        if exclusive:
            bases[i] = ends[side]
            ends[side] += up(size)
    need = list(ends)
    for i, (side, size, exclusive) in enumerate(maps):
        if not exclusive:
            bases[i] = ends[side]
            need[side] = max(need[side], ends[side] + up(size))
    return bases, need
