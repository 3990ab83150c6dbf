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

from mamfpga.compile.arch import OUTPUT_CYCLES, ArchConfig
from mamfpga.compile.device import Device
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
    out_address: np.ndarray          # original row -> activation address t*P + p
    cycles_model: int                # cycles the layer takes (the cycle model of mamfpga.compile.arch)
    cycles_bound: int                # the per-layer lower bound (nnz / (P L), rows / P)
    pe_nnz: list[int] = field(default_factory=list)   # per PE: nonzero weights
    split: bool = False              # column-split layer (all PEs on every row)
    col_ranges: list[int] = field(default_factory=list)  # split: address range starts per PE, and the end

    @property
    def pe_words(self) -> list[int]:
        return [len(w) for w in self.words]

    def manifest(self) -> dict:
        return {"mode": self.mode, "rows": self.rows, "cols": self.cols, "nnz": self.nnz,
                "mult": self.mult, "shift": self.shift, "relu": self.relu, "rows_per_pe": self.rows_per_pe,
                "pe_words": self.pe_words, "pe_nnz": self.pe_nnz, "cycles_model": self.cycles_model,
                "cycles_bound": self.cycles_bound, "kind": "column-split" if self.split else "row-parallel",
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

    @property
    def cycles_model(self) -> int:
        """Cycles per inference, as the cycle model counts them."""
        return self.net.input_size + sum(l.cycles_model for l in self.layers) + OUTPUT_CYCLES * self.net.output_size

    @property
    def widest(self) -> int:
        """Activations of the widest vector a layer reads or writes, as the buffers hold it
        (a row-parallel layer writes rows_per_pe * P words' worth, padding rows included)."""
        P = self.config.pes
        return max([self.net.input_size] + [(l.rows if l.split else l.rows_per_pe * P) for l in self.layers])

    @property
    def cycles_bound(self) -> int:
        """The lower bound of cycles per inference."""
        return self.net.input_size + sum(l.cycles_bound for l in self.layers) + self.net.output_size
