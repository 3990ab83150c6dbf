"""The accelerator's architecture in numbers: what the compiler plans for and the RTL builds.

One place for the facts both sides must agree on: the word formats of the
memories, the pipeline depth, and the cycle model.

Dataflow (per layer, all P processing elements in parallel):

- Each PE owns ``R = ceil(M / P)`` rows of the layer (the compiler balances
  their work and pads with empty rows so every PE has exactly R). It reads
  its weight memory sequentially, one word per cycle: a word holds L entries
  (delta-coded column, int8 weight) of one row and an end-of-row bit. Lane k
  holds the row's nonzeros whose address is the row's origin + k modulo L, each
  delta-coded from the lane's previous one (:func:`lane_column`), so the L
  lanes read L different banks of the PE's one copy of the activation buffer
  (bank = address mod L) and a row costs as many words as its longest lane. They
  multiply, and reduce (adder tree for MAC, max/min comparator trees
  for MAM) into a running sum or max/min; at the end of a row it adds the
  bias, requantizes and clamps. Zero-weight entries (gap fillers, padding)
  add 0 in MAC and are ignored in MAM, where the running max and min start at
  0 when the row's zero-candidate bit says it has a pruned weight, else at
  the first product (DESIGN.md's zero-candidate rule). A row costs one cycle per word, no bubbles
  between rows.
- The t-th result of PE p goes to activation address ``t * P + p`` of the layer's
  region: the P results of step t form one P-activation word, written to every
  PE's buffer at once (across its banks). The compiler renumbers the next
  layer's columns to these addresses, and the output is read through a table
  that restores the original row order.
- A conv layer's rows are its output channels; each PE runs its R rows at every
  position (its words read again, the first column of each row the position's
  origin), and the results go to the feature-map layout of
  :mod:`mamfpga.compile.maps` (a fused max pool keeps each window's max).
- A layer with fewer rows than PEs, or whose rows balance badly, runs
  *column-split* instead: PE p takes a set of columns for every row (blocks of
  L addresses interleaved over the PEs, balanced by nonzeros round by round:
  :func:`mamfpga.compile.passes._split_sets`); the P
  partial results of a row (sums, or max and min) meet in a cross-PE tree,
  which adds the bias, requantizes and writes the row's activation at
  address r. Its cost: :func:`split_overhead` more cycles.
- Layers overlap: layer k+1 starts as soon as every PE has fetched its last word of layer k
  and every activation it reads is written before it reads it, while layer k's last results
  drain through the pipeline (:mod:`mamfpga.compile.schedule`; alone, a layer costs its words
  and a fixed pipeline cost, :func:`layer_overhead`). The compiler orders each PE's rows of a
  dense layer by when their inputs are written, so that the next layer's first rows read the
  previous layer's first results.

Cycle model of one inference (inputs streamed one activation per cycle,
outputs read one per cycle, the environment never stalling):

    cycles = N_0 + sum_{k < K-1} d_k + e + OUTPUT_CYCLES * M_{K-1}
    alone_k = positions_k * max_p words_{k,p} + layer_overhead [+ split_overhead]

where ``words_{k,p}`` is the number of weight words PE p reads in layer k (per position; a
dense layer has one position, and a conv layer's PEs are padded to the same count),
``d_k <= alone_k`` the distance from layer k's start to layer k+1's and ``e <= alone_{K-1}``
from the last layer's start to its first output (the outputs stream out as they are written),
the schedule's (each layer's ``LayerPlan.cycles_model``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ArchConfig", "pipeline_depth", "layer_overhead", "split_overhead", "entry_bits", "word_bits",
           "LAYER_HANDOFF", "PE_LATENCY", "lane_tree_latency", "REQUANT_LATENCY", "OUTPUT_CYCLES", "bound_cycles", "clog2",
           "index_bits", "pow2_at_least", "not_powers_of_two", "act_side_words", "weight_word_fields", "bias_word_fields", "pack",
           "unpack", "unpack_words", "lane_column", "bank_bytes", "PRODUCT_BITS", "MULT_BITS", "MULT_BITS_MAX", "SHIFT_BITS", "bias_bits", "result_fields", "results_may_use_block_ram", "bias_bits_used", "rom_width",
           "weight_bits_of", "mult_bits_of", "low_word_fields", "high_word_fields", "split_weight_words",
           "low_word_bits", "high_word_bits", "lane_rows", "decode_stream"]

#: Cycles from fetching a row's last weight word to its result leaving the PE,
#: besides the tree levels: weight read, weight register, decode, activation read,
#: read register, byte select, multiply, tree output register, accumulate, the row's results
#: registered (the bias register alongside), zero candidate, max + min or sum, bias
#: (mamfpga.hw.pe). Every block RAM output is registered before
#: logic uses it.
PE_LATENCY = 13
#: Requantizer stages: operands, partial products, product, coarse shift, fine shift,
#: saturation flags, clamp (mamfpga.hw.requant): one step per stage, for the clock. Pipeline stages cost
#: one cycle per layer each, a fraction of a per cent of an inference.
REQUANT_LATENCY = 7
#: Per layer, besides the pipeline: the sequencer's start cycle, the result FIFO, the popped
#: record's register (a FIFO's block RAM output is not fed straight into the requantizers) and
#: the registered write stage (mamfpga.hw.accelerator: the address adders and the fused pool's
#: compare in a cycle of their own before the memories' write ports).
LAYER_HANDOFF = 4
#: Cycles per output value on the output stream.
OUTPUT_CYCLES = 1


def clog2(n: int) -> int:
    """ceil(log2 n): the levels of a binary tree over n leaves (0 for n <= 1)."""
    return max(0, (n - 1).bit_length())


def index_bits(n: int) -> int:
    """Width of a signal that indexes n things (at least 1)."""
    return max(1, clog2(n))


def not_powers_of_two(values) -> list:
    """Those of ``values`` that are not powers of two: the one rule for P and L (the PE's byte
    selects, the activation banks), which ArchConfig and the CLI's option checks apply."""
    return [v for v in values if v < 1 or v & (v - 1)]


def pow2_at_least(n: int) -> int:
    return 1 << clog2(max(1, n))


def act_side_words(widest: int, pes: int, lanes: int = 1) -> int:
    """Words of P activations one ping-pong side of the activation memory holds: the widest
    layer input or output, P to a word, rounded up to a power of two (the side is the top
    address bit), and at least L / P (a row of every bank). Both sides: twice this."""
    return max(pow2_at_least(-(-widest // pes)), lanes // pes)


#: the requantizers' mult width: 16 bits (a DSP-sized operand; mamfpga's own quantizer), widened
#: to the program's widest mult up to the contract's 24 (an imported model's float scales); and
#: the shift's width. A row's own mult and shift (per-channel scales) ride in the bias word this wide.
MULT_BITS, MULT_BITS_MAX, SHIFT_BITS = 16, 24, 6


@dataclass(frozen=True)
class ArchConfig:
    pes: int = 4                 # P
    lanes: int = 2               # L
    weight_bits: int = 8
    act_bits: int = 8
    acc_bits: int = 32           # accumulator width (the compiler proves it suffices)
    delta_bits: int = 4          # width of a delta-coded column index
    mult_bits: int = 16          # the requantizers' mult: 16, or up to 24 for an imported model's scales
    #: 0: one weight memory, every weight weight_bits wide. b (2 <= b < weight_bits): layers whose
    #: weights fit b bits are stored b wide; the wider layers' upper weight bits live in an
    #: extension memory as deep as their words (those layers first in the weight memory)
    low_bits: int = 0
    #: False (the default): the lanes share one copy of the activations per PE, in L banks (lane k
    #: reads addresses origin + k mod L). True: each lane reads its own copy (L copies per PE, any
    #: entry in any lane: rows cost ceil(nnz / L) words, never more): faster on short rows, L times
    #: the activation memory; the board flow takes it where it fits and is faster
    lane_copies: bool = False
    #: registered stages per level of the PE's lane trees: 1, or 2 (each level's comparisons
    #: registered before its selects, the adder tree's sum delayed to match: a cycle more a level
    #: in every layer). 1 on both families: the compiler set 2 for an ECP5 device while yosys's
    #: signed compare left three logic levels behind its carry chain (+12 MHz then); with the
    #: compares one chain (mamfpga.hw.compare) one stage places as fast (the digits demo design
    #: at 150 MHz, seeds 1-2: 175.5 / 174.6 MHz against 174.6 / 175.0, 110 fewer flip-flops)
    tree_stages: int = 1
    #: False (the default): every row starts a word of its own. True: where a row's last word has
    #: its upper half of lanes free, the next row's first entries of those lanes go there (the
    #: word's ``share`` bit; :func:`lane_rows`), so a row costs its lanes' entries, not whole words:
    #: short rows (a conv filter of 3-6 nonzeros on 2 lanes) waste half as much. The PE then
    #: builds its trees as two halves and carries the upper half's partial result into the next
    #: row (mamfpga.hw.pe); no effect with one lane
    pack_rows: bool = False

    @property
    def packs(self) -> bool:
        """Rows share words (:attr:`pack_rows` with at least two lanes)."""
        return self.pack_rows and self.lanes > 1

    def __post_init__(self):
        for name, lo, hi in (("pes", 1, 64), ("lanes", 1, 32), ("acc_bits", 8, 40), ("delta_bits", 1, 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer between {lo} and {hi}, not {v!r}")
        if not_powers_of_two([self.pes]):
            raise ValueError(f"the generated accelerator needs a power-of-two number of PEs, not {self.pes}")
        if not_powers_of_two([self.lanes]):
            raise ValueError(f"the generated accelerator needs a power-of-two number of lanes (the activation "
                             f"memory's banks), not {self.lanes}")
        if isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, int) \
                or not 2 <= self.weight_bits <= 8:
            raise ValueError(f"weight_bits must be an integer between 2 and 8, not {self.weight_bits!r}")
        if isinstance(self.mult_bits, bool) or not isinstance(self.mult_bits, int) \
                or not MULT_BITS <= self.mult_bits <= MULT_BITS_MAX:
            raise ValueError(f"mult_bits must be an integer between {MULT_BITS} and {MULT_BITS_MAX}, "
                             f"not {self.mult_bits!r}")
        if isinstance(self.low_bits, bool) or not isinstance(self.low_bits, int) \
                or not (self.low_bits == 0 or 2 <= self.low_bits < self.weight_bits):
            raise ValueError(f"low_bits must be 0 or an integer from 2 to weight_bits - 1 ({self.weight_bits - 1}), "
                             f"not {self.low_bits!r}")
        if self.tree_stages not in (1, 2) or isinstance(self.tree_stages, bool):
            raise ValueError(f"tree_stages must be 1 or 2, not {self.tree_stages!r}")
        if not isinstance(self.lane_copies, bool):
            raise ValueError(f"lane_copies must be True or False, not {self.lane_copies!r}")
        if not isinstance(self.pack_rows, bool):
            raise ValueError(f"pack_rows must be True or False, not {self.pack_rows!r}")
        if self.act_bits != 8:
            raise ValueError("the contract has 8-bit activations")

    @property
    def max_delta(self) -> int:
        return (1 << self.delta_bits) - 1


def weight_bits_of(weights) -> int:
    """The narrowest signed width, 2 to 8 bits, that holds every weight of ``weights`` (arrays
    of int8 in [-127, 127]) symmetrically: max |w| <= 2**(b-1) - 1."""
    top = max((int(np.abs(w.astype(np.int64)).max()) for w in weights if w is not None and w.size), default=0)
    return max(2, top.bit_length() + 1)


def mult_bits_of(layers) -> int:
    """The requantizers' mult width for ``layers`` (QuantLayers): :data:`MULT_BITS`, or the
    widest mult's bits where a layer's is wider."""
    top = max((int(np.max(l.mult)) for l in layers if l.weight is not None), default=1)
    return max(MULT_BITS, top.bit_length())


def low_word_fields(cfg: ArchConfig) -> list[tuple[str, int, int, bool]]:
    """A weight word as the weight memory stores it: the word of :func:`weight_word_fields` with
    each weight cut to its low ``cfg.low_bits`` bits (all of it without an extension memory)."""
    if not cfg.low_bits:
        return weight_word_fields(cfg)
    eb = cfg.delta_bits + cfg.low_bits
    fields = []
    for k in range(cfg.lanes):
        fields += [(f"delta{k}", k * eb, cfg.delta_bits, False), (f"weight{k}", k * eb + cfg.delta_bits, cfg.low_bits, True)]
    return fields + _flag_fields(cfg, cfg.lanes * eb)


def high_word_fields(cfg: ArchConfig) -> list[tuple[str, int, int, bool]]:
    """A word of the extension memory: each lane's weight bits above ``cfg.low_bits``."""
    hb = cfg.weight_bits - cfg.low_bits
    return [(f"high{k}", k * hb, hb, False) for k in range(cfg.lanes)] if cfg.low_bits else []


def low_word_bits(cfg: ArchConfig) -> int:
    """Width of the weight memory's words (:func:`low_word_fields`)."""
    return sum(w for _, _, w, _ in low_word_fields(cfg))


def high_word_bits(cfg: ArchConfig) -> int:
    """Width of the extension memory's words (0: none)."""
    return sum(w for _, _, w, _ in high_word_fields(cfg))


def split_weight_words(cfg: ArchConfig, words: list[int]) -> tuple[list[int], list[int]]:
    """Weight words (:func:`weight_word_fields`) as the weight memory and the extension memory
    store them; without an extension memory, the words and none."""
    import numpy as np

    if not cfg.low_bits or not words:
        return list(words), []
    f = unpack_words(weight_word_fields(cfg), words)
    lo = {name: f[name] for name, _, _, _ in _flag_fields(cfg, 0)}
    hi = {}
    for k in range(cfg.lanes):
        w = f[f"weight{k}"]
        lo[f"delta{k}"] = f[f"delta{k}"]
        lo[f"weight{k}"] = w
        hi[f"high{k}"] = w >> cfg.low_bits
    return pack(low_word_fields(cfg), lo), pack(high_word_fields(cfg), hi)


def lane_column(origin: int, lane: int, q: int, lanes: int, copies: bool = False) -> int:
    """The activation address lane ``lane`` of a row reads, ``q`` the sum of the lane's deltas
    since the row started. Banked (the default): the row's origin plus ``lane`` plus L times
    ``q``; a lane reads only the addresses ``origin + lane`` modulo L, so the L lanes of a word
    always read L different banks of the activation memory (bank = address mod L), whatever the
    origin. With ``copies`` (each lane its own copy of the activations): origin + ``q``."""
    return origin + q if copies else origin + lane + lanes * q


def bank_bytes(cfg: ArchConfig) -> int:
    """Activations in a row of one activation bank: P / L (a word of P activations is written
    across the L banks), at least 1 (P < L: a written word reaches P of the banks)."""
    return max(1, cfg.pes // cfg.lanes)


def entry_bits(cfg: ArchConfig) -> int:
    return cfg.delta_bits + cfg.weight_bits


def word_bits(cfg: ArchConfig) -> int:
    """A weight-memory word: L entries, the end-of-row bit and, where rows share words, the
    share bit."""
    return cfg.lanes * entry_bits(cfg) + len(_flag_fields(cfg, 0))


# ---------------------------------------------------------------------------- memory word layouts
# Defined once here; the compiler packs with them, the program simulator unpacks with them,
# and the PE views its memory words through an Amaranth StructLayout built from them.

def weight_word_fields(cfg: ArchConfig) -> list[tuple[str, int, int, bool]]:
    """The weight word, low bits first: (name, offset, width, signed) of each field. Entry k
    (one lane) is its column delta (unsigned) then its weight (signed); the end-of-row bit
    is on top, and above it, where rows share words (:attr:`ArchConfig.packs`), the share bit:
    the word ends its row in its lower half of lanes, and its upper half holds the next row's
    first entries (:func:`lane_rows`)."""
    eb = entry_bits(cfg)
    fields = []
    for k in range(cfg.lanes):
        fields += [(f"delta{k}", k * eb, cfg.delta_bits, False),
                   (f"weight{k}", k * eb + cfg.delta_bits, cfg.weight_bits, True)]
    return fields + _flag_fields(cfg, cfg.lanes * eb)


def _flag_fields(cfg: ArchConfig, offset: int) -> list[tuple[str, int, int, bool]]:
    """The weight word's flags above its entries: end of row, and share where rows share words."""
    return [("eor", offset, 1, False)] + ([("share", offset + 1, 1, False)] if cfg.packs else [])


def decode_stream(words: list[int], cfg: ArchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A PE's weight words (one position's) as the PE reads them: [words, L] arrays of each lane's
    row (:func:`lane_rows`), its ``q`` (the lane's deltas summed since it started that row: the
    column is :func:`lane_column` of it) and its weight."""
    L = cfg.lanes
    f = unpack_words(weight_word_fields(cfg), words)
    row, start = lane_rows(f["eor"], f.get("share"), L)
    d = np.stack([f[f"delta{k}"] for k in range(L)], axis=1) if len(words) else np.zeros((0, L), dtype=np.int64)
    total = np.cumsum(d, axis=0)
    n = len(words)
    at = np.maximum.accumulate(np.where(start, np.arange(n)[:, None], 0), axis=0)    # the lane's row start
    q = total - (total - d)[at, np.arange(L)[None, :]]
    w = np.stack([f[f"weight{k}"] for k in range(L)], axis=1) if n else np.zeros((0, L), dtype=np.int64)
    return row, q, w


def lane_rows(eor: np.ndarray, share: np.ndarray | None, lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """Which row each lane of each word of a PE's stream belongs to, and where each lane starts a
    row (its column restarts from the origin there: :func:`lane_column`), as [words, L] arrays.
    A word's lanes belong to the row that ends at the first word from it on with its end-of-row
    bit; where a word has its share bit (which comes with an end-of-row bit), its upper half of
    lanes (L / 2 and up) belongs to the next row instead: that row's first entries of those
    lanes."""
    eor = np.asarray(eor, dtype=np.int64)
    n = len(eor)
    before = np.concatenate([[0], np.cumsum(eor)[:-1]]) if n else np.zeros(0, dtype=np.int64)
    row = np.repeat(before[:, None], lanes, axis=1)
    if share is not None and n:
        row[:, lanes // 2:] += np.asarray(share, dtype=np.int64)[:, None]
    start = np.ones((n, lanes), dtype=bool)
    if n:
        start[1:] = row[1:] != row[:-1]
    return row, start




def bias_word_fields(cfg: ArchConfig, scales: bool = False) -> list[tuple[str, int, int, bool]]:
    """The bias word: the row's bias (acc_bits, signed) and its zero-candidate bit on top; with
    ``scales`` (a program with a mult and shift per row or channel), the row's mult and shift above."""
    fields = [("bias", 0, cfg.acc_bits, True), ("zero_candidate", cfg.acc_bits, 1, False)]
    if scales:
        fields += [("mult", cfg.acc_bits + 1, cfg.mult_bits, False),
                   ("shift", cfg.acc_bits + 1 + cfg.mult_bits, SHIFT_BITS, False)]
    return fields


def bias_bits(cfg: ArchConfig, scales: bool = False) -> int:
    """Width of a bias word."""
    return sum(w for _, _, w, _ in bias_word_fields(cfg, scales))


#: width of one lane's product (int8 x int8), as the PE's trees and result records carry it
PRODUCT_BITS = 16


def result_fields(cfg: ArchConfig, kinds: set[tuple[bool, str]], scales: bool = False) -> list[tuple[str, int]]:
    """The fields a PE's result record carries through its FIFO to the requantizers, for the
    (split, mode) layer kinds a program has: ``acc`` (bias + sum, or + max + min) for
    row-parallel layers; for column-split ones the partial ``sum`` (MAC), the ``bias``, and the
    partial ``hi``/``lo`` (MAM), which the cross-PE tree combines. Only what some layer
    reads, so that the FIFO memory is as wide as what synthesis keeps of it."""
    a = cfg.acc_bits
    split_modes = {mode for split, mode in kinds if split}
    fields = [("acc", a)] if any(not split for split, _ in kinds) else []
    if "mac" in split_modes:
        fields.append(("sum", a))
    if split_modes:
        fields.append(("bias", a))
    if "mam" in split_modes:
        fields += [("hi", PRODUCT_BITS), ("lo", PRODUCT_BITS)]
    if scales:
        fields += [("mult", cfg.mult_bits), ("shift", SHIFT_BITS)]
    return fields


def results_may_use_block_ram(kinds: set[tuple[bool, str]]) -> bool:
    """Whether a PE's result FIFO can live in block RAM: its read is combinational, which block
    RAM can serve only when the data goes straight into a register (the requantizers' inputs,
    row-parallel layers alone); the cross-PE tree of column-split layers adds first."""
    return not any(split for split, _ in kinds)


def bias_bits_used(cfg: ArchConfig, modes: set[str], scales: bool = False) -> int:
    """A mask of the bits of a bias word the PE reads: the zero-candidate bit only matters to
    MAM layers; the scales are there only in a program with per-row scales."""
    mask = (1 << cfg.acc_bits) - 1
    if "mam" in modes:
        mask |= 1 << cfg.acc_bits
    if scales:
        mask |= ((1 << (cfg.mult_bits + SHIFT_BITS)) - 1) << (cfg.acc_bits + 1)
    return mask


def rom_width(words: list[int], used: int) -> int:
    """The bits of a ROM that synthesis keeps: those the logic reads (``used``, a mask) that
    are not the same in every word (a constant bit is no memory). A PE builds its weight and
    bias memories this wide in block RAM or logic (:func:`mamfpga.compile.device.memory_style`),
    and the compiler counts them so."""
    import numpy as np

    if not len(words):
        return 0
    try:
        a = np.asarray(words, dtype=np.uint64)
        any_one, all_one = int(np.bitwise_or.reduce(a)), int(np.bitwise_and.reduce(a))
    except OverflowError:                    # words wider than 64 bits
        any_one, all_one = 0, -1
        for w in words:
            any_one |= w
            all_one &= w
    return bin(any_one & ~all_one & used).count("1")


def pack(fields, values: dict) -> list[int]:
    """Words from arrays of field values (NumPy integer arrays of one length, signed values
    in two's complement), as Python integers (words can be wider than 64 bits)."""
    import numpy as np

    total = sum(w for _, _, w, _ in fields)
    n = len(next(iter(values.values())))
    masked = {name: np.asarray(values[name], dtype=np.int64) & ((1 << w) - 1) for name, _, w, _ in fields}
    if total <= 62:
        word = np.zeros(n, dtype=np.int64)
        for name, off, _, _ in fields:
            word |= masked[name] << off
        return word.tolist()
    word = np.zeros(n, dtype=object)
    for name, off, _, _ in fields:
        word = word + (masked[name].astype(object) << off)
    return word.tolist()


def unpack(fields, word: int) -> dict:
    """The fields of one word (signed ones sign-extended)."""
    out = {}
    for name, off, width, is_signed in fields:
        v = (word >> off) & ((1 << width) - 1)
        out[name] = v - (1 << width) if is_signed and v >> (width - 1) else v
    return out


def unpack_words(fields, words: list[int]) -> dict:
    """The fields of many words at once, as int64 arrays (signed ones sign-extended): the words
    cut into bytes once, each field read from the bytes it spans (words can be wider than 64
    bits; a field is at most 24 bits). :func:`pack`'s inverse."""
    import numpy as np

    width = max(off + w for _, off, w, _ in fields)
    nb = (width + 7) // 8 + 4                                     # room to read 4 bytes past any field
    raw = np.frombuffer(b"".join(int(x).to_bytes(nb, "little") for x in words), dtype=np.uint8)
    raw = raw.reshape(len(words), nb).astype(np.int64)
    out = {}
    for name, off, w, is_signed in fields:
        assert w <= 24, "a field spans at most 4 bytes"
        i, sh = off // 8, off % 8
        v = ((raw[:, i] | (raw[:, i + 1] << 8) | (raw[:, i + 2] << 16) | (raw[:, i + 3] << 24)) >> sh) & ((1 << w) - 1)
        out[name] = v - ((v >> (w - 1)) << w) if is_signed else v
    return out


def lane_tree_latency(cfg: "ArchConfig") -> int:
    """Cycles of the PE's lane trees over L lanes: ceil(log2 L) levels of ``cfg.tree_stages``
    registered stages each."""
    return clog2(cfg.lanes) * cfg.tree_stages


def pipeline_depth(cfg: "ArchConfig") -> int:
    """Cycles from reading a row's last weight word to writing its activation:
    the PE (with its lane trees, :func:`lane_tree_latency`) and the requantizer."""
    return PE_LATENCY + lane_tree_latency(cfg) + REQUANT_LATENCY


def layer_overhead(cfg: ArchConfig) -> int:
    return pipeline_depth(cfg) + LAYER_HANDOFF


def split_overhead(cfg: ArchConfig) -> int:
    """Extra cycles of a column-split layer: the cross-PE combining tree."""
    return clog2(cfg.pes)


def bound_cycles(nnz: int, rows: int, cfg: ArchConfig) -> int:
    """DESIGN.md's lower bound for a layer: multiply at full rate, or move its
    activations at the write port's width (P activations a cycle), whichever is slower."""
    return max(math.ceil(nnz / (cfg.pes * cfg.lanes)), math.ceil(rows / cfg.pes))
