"""The compiler's IR: a :class:`Program` of :class:`LayerPlan`, what the RTL is generated from.

A ``LayerPlan`` is one layer as the accelerator runs it: which PE computes
which rows (or, column-split, which address range), each PE's weight words and
bias entries (formats of :mod:`mamfpga.compile.arch`), the activation address
every output row is written to, and the cycles it takes. A ``Program`` is the
list of them with the architecture configuration, the network it computes
and the memory figures. The passes (:mod:`mamfpga.compile.passes`) build it;
the build writer and loader (:mod:`mamfpga.compile.build`), the program
simulator, the RTL generator and the board flow read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mamfpga.compile.arch import OUTPUT_CYCLES, ArchConfig, split_weight_words, unpack_words, weight_word_fields
from mamfpga.compile.device import Device
from mamfpga.compile.maps import ConvGeometry, OutGen
from mamfpga.errors import MamfpgaError
from mamfpga.sw.qnet import QuantNetwork

__all__ = ["CompileError", "MemoryFitError", "LayerPlan", "Program"]


class CompileError(MamfpgaError, ValueError):
    """The network cannot be compiled for this configuration (the message has the numbers)."""

    exit_code = 2


class MemoryFitError(CompileError):
    """The compiled program's memories need more block RAM than the board has."""


@dataclass
class LayerPlan:
    index: int
    mode: str
    rows: int
    cols: int
    nnz: int
    mult: int
    shift: int
    relu: bool
    rows_per_pe: int
    assignment: list[list[int]]      # per PE: original row indices in order, -1 = padding row
    words: list[list[int]]           # per PE: weight words
    bias: list[list[int]]            # per PE: (bias, zero-candidate) packed, one per row
    row_words: list[list[int]]       # per PE: words of each row
    out_address: np.ndarray          # every output value (rows; C, H, W of a map) -> its byte address in the side
    cycles_model: int                # cycles from its start to the next layer's (the last: to its first output)
    cycles_bound: int                # the per-layer lower bound (nnz / (P L), rows / P)
    pe_nnz: list[int] = field(default_factory=list)   # per PE: nonzero weights
    split: bool = False              # column-split layer (all PEs on every row)
    col_ranges: list[int] = field(default_factory=list)  # split: each PE's origin (its columns: _split_sets)
    geom: "ConvGeometry | None" = None   # conv: how it walks its input map (mamfpga.compile.maps)
    out: "OutGen | None" = None          # row-parallel: where its results go
    net_index: int = 0                   # the layer of ``Program.net`` whose output this computes
    kind: str = "dense"                  # "dense" | "conv2d" (with its max pool fused, if any)
    act_max: int = 127                   # the outputs' clamp: [0 or -(act_max + 1), act_max]
    in_unsigned: bool = False            # it reads unsigned bytes (the layer before has act_max 255)
    rounding: str = "half_up"            # how its requantization rounds a half ("half_up", "half_even")
    weight_bits: int = 8                 # the narrowest width that holds its weights
    overlap: int = 0                     # cycles the next layer (the last: the outputs) starts before its last write
                                         # (mamfpga.compile.schedule; cycles_model is start to next start)

    @property
    def positions(self) -> int:
        """Positions the layer computes its rows at (1: a dense layer)."""
        return self.geom.positions if self.geom is not None else 1

    @property
    def pe_words(self) -> list[int]:
        return [len(w) for w in self.words]

    def manifest(self) -> dict:
        def scale(v):
            return np.asarray(v).tolist() if np.ndim(v) else int(v)

        g = self.geom
        conv = None if g is None else {"kernel": list(g.kernel), "stride": list(g.stride), "pool": list(g.pool),
                                       "out": [g.out_h, g.out_w], "positions": g.positions}
        return {"kind": self.kind, "conv": conv, "mode": self.mode, "rows": self.rows, "cols": self.cols,
                "nnz": self.nnz, "mult": scale(self.mult), "shift": scale(self.shift), "relu": self.relu,
                "act_max": self.act_max, "rounding": self.rounding, "rows_per_pe": self.rows_per_pe,
                "pe_words": self.pe_words, "pe_nnz": self.pe_nnz, "cycles_model": self.cycles_model,
                "cycles_bound": self.cycles_bound, "overlap": self.overlap, "kind": "column-split" if self.split else "row-parallel",
                "col_ranges": self.col_ranges}


@dataclass
class Program:
    config: ArchConfig
    net: QuantNetwork                 # after elimination: what the hardware computes
    source: QuantNetwork              # the network given to the compiler
    input_index: np.ndarray           # columns of the original input (before any quantize-time
                                      # selection) that the hardware reads, in order
    columns: np.ndarray               # the same, as columns of the source QuantNetwork's inputs
    layers: list[LayerPlan]
    output_address: np.ndarray        # output row r lives at this address of the last buffer
    eliminated: dict
    memory: dict = field(default_factory=dict)
    split: str = "auto"               # the compile option that chose each layer's kind
    device: "Device | None" = None    # the device it was compiled (and its memories counted) for
    side_bytes: int = 0               # activations one side of the ping-pong buffers holds (all its regions)
    scales: bool = False              # per-row mult and shift, carried in the bias words
    input_address: np.ndarray | None = None   # byte address of every input value (side 0)

    @property
    def cycles_model(self) -> int:
        """Cycles per inference, as the cycle model counts them."""
        return self.net.input_size + sum(l.cycles_model for l in self.layers) + OUTPUT_CYCLES * self.net.output_size

    def wide(self, plan: LayerPlan) -> bool:
        """Whether a layer's weights need the extension memory (wider than ``config.low_bits``)."""
        return bool(self.config.low_bits) and plan.weight_bits > self.config.low_bits

    def weight_order(self) -> list[int]:
        """Hardware layers in the order the weight memories hold them: those that need the
        extension memory first (it is as deep as their words), then the rest, each group in order."""
        k = range(len(self.layers))
        return [i for i in k if self.wide(self.layers[i])] + [i for i in k if not self.wide(self.layers[i])]

    def weight_images(self, p: int) -> tuple[list[int], list[int], list[int]]:
        """PE ``p``'s weight memory and extension memory contents, and each layer's first word."""
        lo, hi, base = [], [], [0] * len(self.layers)
        for i in self.weight_order():
            base[i] = len(lo)
            a, b = split_weight_words(self.config, self.layers[i].words[p])
            lo += a
            if self.wide(self.layers[i]):
                hi += b
        return lo, hi, base

    @property
    def shares_words(self) -> bool:
        """Some weight word ends one row and starts the next (ArchConfig.pack_rows)."""
        if not self.config.packs:
            return False
        fields = weight_word_fields(self.config)
        return any(unpack_words(fields, w)["share"].any() for plan in self.layers for w in plan.words if w)

    @property
    def widest(self) -> int:
        """Activations one buffer side holds: every map placed on it (mamfpga.compile.maps.place),
        padding rows and borders included."""
        return self.side_bytes

    @property
    def cycles_bound(self) -> int:
        """The lower bound of cycles per inference."""
        return self.net.input_size + sum(l.cycles_bound for l in self.layers) + self.net.output_size
