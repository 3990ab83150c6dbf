"""The compiler: QuantNetwork -> Program (CSR per PE, memory images, cycle model).

Small passes over one plan, each a function you can call and test alone:

1. :func:`prove_accumulators` — no accumulator can overflow ``acc_bits``
   (|b| + sum |W| * 128 for MAC, |b| + 2 * max |W| * 128 for MAM);
2. :func:`eliminate` — integer-exact dead-row and dead-column elimination
   (a dead neuron's constant output folds into the next MAC layer's bias);
3. :func:`choose_delta_bits` — the width of the delta-coded column index that
   makes the weight memory smallest;
4. :func:`assign_rows` — rows to PEs, the same count on each (padding rows
   fill up), balancing the words each PE reads (longest first, to the least
   loaded PE with room);
5. :func:`encode_layer` — weight words and bias entries per PE;
6. :func:`memory_use` / :func:`check_capacity` — block RAMs against the board.

The word formats and the cycle model are those of :mod:`mamfpga.hw.arch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mamfpga.hw.arch import (OUTPUT_CYCLES, ArchConfig, act_side_words, bias_word_fields, bound_cycles,
                              layer_overhead, pack, split_overhead, weight_word_fields, word_bits)
from mamfpga.outputs import atomic_write_json, atomic_write_text, claim_dir
from mamfpga.sw.qnet import QuantLayer, QuantNetwork, save_qnet
from mamfpga.sw.simplify import eliminate_dead

__all__ = ["CompileError", "MemoryFitError", "LayerPlan", "Program", "compile_network", "prove_accumulators", "eliminate",
           "choose_delta_bits", "assign_rows", "encode_layer", "memory_use", "check_capacity", "write_build",
           "required_acc_bits"]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


class CompileError(ValueError):
    """The network cannot be compiled for this configuration (the message has the numbers)."""


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
    cycles: int
    bound: int
    pe_nnz: list[int] = field(default_factory=list)   # per PE: nonzero weights
    split: bool = False              # column-split layer (all PEs on every row)
    col_ranges: list[int] = field(default_factory=list)  # split: address range starts per PE, and the end

    @property
    def pe_words(self) -> list[int]:
        return [len(w) for w in self.words]

    def manifest(self) -> dict:
        return {"mode": self.mode, "rows": self.rows, "cols": self.cols, "nnz": self.nnz,
                "mult": self.mult, "shift": self.shift, "relu": self.relu, "rows_per_pe": self.rows_per_pe,
                "pe_words": self.pe_words, "pe_nnz": self.pe_nnz, "cycle_model": self.cycles,
                "cycle_bound": self.bound, "kind": "column-split" if self.split else "row-parallel",
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

    @property
    def cycles_per_inference(self) -> int:
        return self.net.input_size + sum(l.cycles for l in self.layers) + OUTPUT_CYCLES * self.net.output_size

    @property
    def widest(self) -> int:
        """Activations of the widest vector a layer reads or writes, as the buffers hold it
        (a row-parallel layer writes rows_per_pe * P words' worth, padding rows included)."""
        P = self.config.pes
        return max([self.net.input_size] + [(l.rows if l.split else l.rows_per_pe * P) for l in self.layers])

    @property
    def cycle_bound(self) -> int:
        return self.net.input_size + sum(l.bound for l in self.layers) + self.net.output_size


# ---------------------------------------------------------------------------- passes

def required_acc_bits(layer: QuantLayer) -> int:
    """Signed accumulator width that holds every value the layer can reach."""
    w = np.abs(layer.weight.astype(np.int64))
    b = np.abs(layer.bias.astype(np.int64))
    if layer.mode == "mac":
        reach = b + w.sum(axis=1) * 128
    else:
        reach = b + 2 * w.max(axis=1) * 128
    return int(reach.max()).bit_length() + 1


def prove_accumulators(net: QuantNetwork, acc_bits: int) -> list[int]:
    need = [required_acc_bits(l) for l in net.layers]
    for k, bits in enumerate(need):
        if bits > acc_bits:
            raise CompileError(f"layer {k} needs a {bits}-bit accumulator to rule out overflow "
                               f"(|b| + {'sum' if net.layers[k].mode == 'mac' else '2 max'} |W| * 128); "
                               f"the accelerator has {acc_bits} (use --acc-bits {bits})")
    return need


def _requant_const(layer: QuantLayer) -> np.ndarray:
    import torch

    from mamfpga.sw.golden import requantize

    return requantize(layer, torch.from_numpy(layer.bias.astype(np.int64))).numpy()


def eliminate(net: QuantNetwork) -> tuple[QuantNetwork, np.ndarray, dict]:
    """Integer-exact removal of dead neurons and unread inputs (see :mod:`mamfpga.sw.simplify`)."""
    layers = [QuantLayer(l.weight.copy(), l.bias.copy(), l.mode, l.mult, l.shift, l.relu) for l in net.layers]

    def fold(nxt, cols, values):
        bias = nxt.bias.astype(np.int64) + nxt.weight[:, cols].astype(np.int64) @ values.astype(np.int64)
        if bias.min() < INT32_MIN or bias.max() > INT32_MAX:
            return None
        return bias.astype(np.int32)

    layers, index, report = eliminate_dead(layers, net.input_size, None, _requant_const, fold)
    for l in layers:
        l.weight = np.ascontiguousarray(l.weight, dtype=np.int8)
        l.bias = np.ascontiguousarray(l.bias, dtype=np.int32)
    extra = {k: v for k, v in net.extra.items() if k not in ("input_index", "input_size")}
    out = QuantNetwork(layers, net.input_scale, net.output_scale, extra)
    info = {"removed_neurons": report.removed_neurons, "removed_inputs": report.removed_inputs,
            "sizes_before": report.sizes_before, "sizes_after": report.sizes_after}
    return out, index, info


@dataclass
class _CSR:
    """The nonzeros of a layer's rows in the order the PE reads them: by row, then by
    activation address (``addr``, relative to ``origin``)."""
    indptr: np.ndarray               # rows + 1
    addr: np.ndarray                 # int64, ascending within each row
    weight: np.ndarray               # int64

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    def deltas(self) -> tuple[np.ndarray, np.ndarray]:
        """(row of each nonzero, its column delta from the previous one or from 0)."""
        lens = np.diff(self.indptr)
        seg = np.repeat(np.arange(self.rows), lens)
        prev = np.empty_like(self.addr)
        if len(prev):
            prev[1:] = self.addr[:-1]
            prev[self.indptr[:-1][lens > 0]] = 0
        return seg, self.addr - prev


def _csr(layer: QuantLayer, col_address: np.ndarray, lo: int | None = None, hi: int | None = None) -> _CSR:
    """The layer's nonzeros as a :class:`_CSR` over the activation addresses of its columns
    (only those in [lo, hi), relative to lo, for one PE of a column-split layer)."""
    rr, cc = np.nonzero(layer.weight)
    addr = np.asarray(col_address, dtype=np.int64)[cc]
    if lo is not None:
        keep = (addr >= lo) & (addr < hi)
        rr, cc, addr = rr[keep], cc[keep], addr[keep] - lo
    order = np.lexsort((addr, rr))
    rr, cc, addr = rr[order], cc[order], addr[order]
    indptr = np.zeros(layer.rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rr, minlength=layer.rows), out=indptr[1:])
    return _CSR(indptr, addr, layer.weight[rr, cc].astype(np.int64))


def _fillers(delta: np.ndarray, max_delta: int) -> np.ndarray:
    """Gap-filler entries before each nonzero: a delta over ``max_delta`` takes
    (zero-weight) entries of ``max_delta`` until the rest fits."""
    return np.maximum(0, -(-delta // max_delta) - 1)


def _row_costs(csr: _CSR, cfg: ArchConfig) -> np.ndarray:
    """Weight words of each row: its nonzeros plus gap fillers, L to a word, at least one."""
    seg, delta = csr.deltas()
    entries = np.bincount(seg, weights=1 + _fillers(delta, cfg.max_delta), minlength=csr.rows)
    return np.maximum(1, -(-entries.astype(np.int64) // cfg.lanes))


def choose_delta_bits(csrs: list[_CSR], cfg: ArchConfig, max_bits: int = 16) -> int:
    """The delta width giving the smallest weight memory (fewest words on ties)."""
    parts = [(csr.deltas(), csr.rows) for csr in csrs]
    best = None
    for d in range(1, max_bits + 1):
        c = ArchConfig(cfg.pes, cfg.lanes, cfg.weight_bits, cfg.act_bits, cfg.acc_bits, d)
        words = 0
        for (seg, delta), rows in parts:
            entries = np.bincount(seg, weights=1 + _fillers(delta, c.max_delta), minlength=rows)
            words += int(np.maximum(1, -(-entries.astype(np.int64) // c.lanes)).sum())
        key = (words * word_bits(c), words)
        if best is None or key < best[0]:
            best = (key, d)
    return best[1]


def _encode_rows(csr: _CSR, rows: list[int], cfg: ArchConfig) -> tuple[list[int], list[int]]:
    """Weight words of ``rows`` (row indices of ``csr``, -1 for a padding row), in order, and
    the words of each: delta-coded entries (delta, int8 weight), gap fillers, zero entries
    padding the last word, the end-of-row bit on the last word of each row.

    Gap fillers and the padding of the last word are zero-weight entries: a MAC
    lane adds their product 0, a MAM lane ignores them (the row's zero-candidate
    bit, not the entries, says whether 0 is a max/min candidate). An empty row,
    or a padding row, is one word of zero entries: its bias alone. The word
    layout is :func:`mamfpga.hw.arch.weight_word_fields`'s.
    """
    L, maxd = cfg.lanes, cfg.max_delta
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    real = rows >= 0
    safe = np.where(real, rows, 0)
    lens = np.where(real, csr.indptr[safe + 1] - csr.indptr[safe], 0)
    total_nz = int(lens.sum())
    seg = np.repeat(np.arange(n), lens)                     # listed row of each nonzero
    first = np.zeros(n, dtype=np.int64)
    np.cumsum(lens[:-1], out=first[1:])
    idx = csr.indptr[safe][seg] + (np.arange(total_nz) - first[seg])
    addr, weight = csr.addr[idx], csr.weight[idx]
    prev = np.zeros(total_nz, dtype=np.int64)
    if total_nz:
        prev[1:] = addr[:-1]
        prev[first[lens > 0]] = 0
    delta = addr - prev
    fill = _fillers(delta, maxd)
    per_nz = 1 + fill
    entries = np.bincount(seg, weights=per_nz, minlength=n).astype(np.int64)
    words = np.maximum(1, -(-entries // L))
    row_base = L * (np.cumsum(words) - words)
    cum = np.cumsum(per_nz) - per_nz                        # entries before each nonzero, overall
    start = row_base[seg] + cum - cum[first[seg]] if total_nz else cum
    n_ent = int(L * words.sum())
    ent_delta = np.zeros(n_ent, dtype=np.int64)
    ent_weight = np.zeros(n_ent, dtype=np.int64)
    n_fill = int(fill.sum())
    if n_fill:
        fill_first = np.cumsum(fill) - fill
        ent_delta[np.repeat(start, fill) + (np.arange(n_fill) - np.repeat(fill_first, fill))] = maxd
    pos = start + fill
    ent_delta[pos] = delta - fill * maxd
    ent_weight[pos] = weight
    ent_delta, ent_weight = ent_delta.reshape(-1, L), ent_weight.reshape(-1, L)
    eor = np.zeros(len(ent_delta), dtype=np.int64)
    eor[np.cumsum(words) - 1] = 1
    values = {"eor": eor}
    for k in range(L):
        values[f"delta{k}"], values[f"weight{k}"] = ent_delta[:, k], ent_weight[:, k]
    return pack(weight_word_fields(cfg), values), words.tolist()


def assign_rows(costs: list[int], pes: int) -> list[list[int]]:
    """Rows to PEs: ceil(M/P) per PE (padding rows, cost 1, fill up), work balanced.

    Longest rows first, each to the least loaded PE that still has room; each
    PE then processes its rows in ascending order.
    """
    rows = len(costs)
    per_pe = -(-rows // pes)
    load = [0] * pes
    count = [0] * pes
    owner = [[] for _ in range(pes)]
    for r in sorted(range(rows), key=lambda r: (-costs[r], r)):
        p = min((p for p in range(pes) if count[p] < per_pe), key=lambda p: (load[p], count[p], p))
        owner[p].append(r)
        load[p] += costs[r]
        count[p] += 1
    return [sorted(o) + [-1] * (per_pe - len(o)) for o in owner]


def encode_layer(k: int, layer: QuantLayer, col_address: np.ndarray, cfg: ArchConfig,
                 csr: _CSR | None = None) -> LayerPlan:
    csr = csr if csr is not None else _csr(layer, col_address)
    costs = _row_costs(csr, cfg)
    assignment = assign_rows(costs.tolist(), cfg.pes)
    per_pe = len(assignment[0])
    out_address = np.zeros(layer.rows, dtype=np.int64)
    nnz_row = np.diff(csr.indptr)
    zero_cand = nnz_row < layer.cols                        # the row has a pruned weight
    words, bias, row_words, pe_nnz = [], [], [], []
    for p, rows in enumerate(assignment):
        w_p, rw_p = _encode_rows(csr, rows, cfg)
        r = np.asarray(rows, dtype=np.int64)
        real = r >= 0
        safe = np.where(real, r, 0)
        # padding row: bias 0 and a zero candidate; its output is never read
        bias.append(pack(bias_word_fields(cfg), {"bias": np.where(real, layer.bias[safe], 0),
                                                 "zero_candidate": np.where(real, zero_cand[safe], 1)}))
        out_address[r[real]] = np.flatnonzero(real) * cfg.pes + p
        words.append(w_p)
        row_words.append(rw_p)
        pe_nnz.append(int(nnz_row[r[real]].sum()))
    plan = LayerPlan(k, layer.mode, layer.rows, layer.cols, layer.nnz, layer.mult, layer.shift, layer.relu,
                     per_pe, assignment, words, bias, row_words, out_address,
                     cycles=max(len(w) for w in words) + layer_overhead(cfg),
                     bound=bound_cycles(layer.nnz, layer.rows, cfg), pe_nnz=pe_nnz)
    return plan


def _split_ranges(layer: QuantLayer, col_address: np.ndarray, pes: int) -> list[int]:
    """P contiguous address ranges, each with at least one real column, balancing nonzeros."""
    order = np.argsort(col_address)
    addr = col_address[order]
    col_nnz = np.count_nonzero(layer.weight, axis=0)[order].astype(float) + 1e-3   # ties: by columns
    cum = np.cumsum(col_nnz)
    cuts = [0]
    for p in range(1, pes):
        i = int(np.searchsorted(cum, cum[-1] * p / pes))
        i = min(max(i, cuts[-1] + 1), len(addr) - (pes - p))
        cuts.append(i)
    starts = [int(addr[c]) if c > 0 else 0 for c in cuts]
    return starts + [int(addr[-1]) + 1]


def encode_layer_split(k: int, layer: QuantLayer, col_address: np.ndarray, cfg: ArchConfig) -> LayerPlan:
    """Column-split plan: PE p encodes, for every row, the entries in its address range
    (deltas from the range start); its bias entry holds the row's bias (PE 0 only) and
    whether the row has a zero weight among the range's real columns."""
    ranges = _split_ranges(layer, col_address, cfg.pes)
    col_address = np.asarray(col_address, dtype=np.int64)
    words, bias, row_words, pe_nnz = [], [], [], []
    for p in range(cfg.pes):
        lo, hi = ranges[p], ranges[p + 1]
        csr = _csr(layer, col_address, lo, hi)
        w_p, rw_p = _encode_rows(csr, list(range(layer.rows)), cfg)
        in_range = int(((col_address >= lo) & (col_address < hi)).sum())
        nnz_row = np.diff(csr.indptr)
        b = layer.bias.astype(np.int64) if p == 0 else np.zeros(layer.rows, dtype=np.int64)
        bias.append(pack(bias_word_fields(cfg), {"bias": b, "zero_candidate": nnz_row < in_range}))
        words.append(w_p)
        row_words.append(rw_p)
        pe_nnz.append(int(nnz_row.sum()))
    assignment = [list(range(layer.rows)) for _ in range(cfg.pes)]
    return LayerPlan(k, layer.mode, layer.rows, layer.cols, layer.nnz, layer.mult, layer.shift, layer.relu,
                     layer.rows, assignment, words, bias, row_words, np.arange(layer.rows),
                     cycles=max(len(w) for w in words) + layer_overhead(cfg) + split_overhead(cfg),
                     bound=bound_cycles(layer.nnz, layer.rows, cfg), pe_nnz=pe_nnz, split=True,
                     col_ranges=ranges)


def memory_use(program: Program, family: str | None) -> dict:
    """Bits and block RAMs of each memory of the accelerator, as the RTL builds them
    (mamfpga.hw.pe): per PE a weight memory (its own words), a bias memory, and per
    lane an activation memory of P activations a word, both ping-pong sides, its
    depth a power of two. The board top adds its own FIFOs (counted by
    :mod:`mamfpga.boards.fit` from the synthesized design)."""
    from mamfpga.boards.targets import bram_blocks

    cfg = program.config
    P, L = cfg.pes, cfg.lanes
    depth_w = [max(1, sum(l.pe_words[p] for l in program.layers)) for p in range(P)]
    depth_b = [max(1, sum(len(l.bias[p]) for l in program.layers)) for p in range(P)]
    act_depth = 2 * act_side_words(program.widest, P)
    mems = {
        "weights": {"copies": P, "width": word_bits(cfg), "depths": depth_w},
        "bias": {"copies": P, "width": cfg.acc_bits + 1, "depths": depth_b},
        # every lane of every PE reads its own copy, both ping-pong sides in one memory
        "activations": {"copies": P * L, "width": 8 * P, "depths": [act_depth] * (P * L)},
    }
    # The weights are initialised from the bitstream, so they live in block RAM: the
    # iCE40UP's SPRAMs have no initial contents (they would need run-time weight loading).
    total_bits = total_blocks = 0
    for m in mems.values():
        m["depth"] = max(m["depths"])
        m["bits"] = m["width"] * sum(m["depths"])
        total_bits += m["bits"]
        if family is not None:
            m["bram"] = sum(bram_blocks(m["width"], d, family) for d in m["depths"])
            total_blocks += m["bram"]
        del m["depths"]
    nnz = sum(l.nnz for l in program.layers)
    return {"memories": mems, "total_bits": total_bits, "bram": total_blocks if family else None,
            "weight_bits_per_nnz": (mems["weights"]["bits"] / nnz) if nnz else None}


def check_capacity(program: Program, board: str) -> dict:
    from mamfpga.boards.targets import board_device

    dev = board_device(board)
    use = memory_use(program, dev.family)
    if use["bram"] > dev.bram:
        parts = ", ".join(f"{name} {m['bram']}" for name, m in use["memories"].items() if m["bram"])
        raise MemoryFitError(f"the program needs {use['bram']} block RAMs ({parts}); the {dev.name} on "
                           f"{board} has {dev.bram} (fewer PEs or lanes, or more pruning, would fit)")
    return use


# ---------------------------------------------------------------------------- driver

def compile_network(net: QuantNetwork, cfg: ArchConfig | None = None, *, board: str | None = None,
                    delta_bits: int | None = None, acc_bits: int | None = None,
                    split: str = "auto") -> Program:
    cfg = cfg or ArchConfig()
    source = net
    net, index, info = eliminate(net)
    need = [required_acc_bits(l) for l in net.layers]
    if acc_bits is None:
        acc_bits = max(8, max(need))
    if acc_bits > 40:
        # 40 bits hold any layer of the contract (int32 bias, 65536 int8 inputs need 34), and
        # keep acc * mult within 64 bits for the golden model and the requantizer alike
        raise CompileError(f"the network needs a {max(need)}-bit accumulator; the accelerator supports "
                           "at most 40")
    cfg = ArchConfig(cfg.pes, cfg.lanes, cfg.weight_bits, cfg.act_bits, acc_bits, cfg.delta_bits)
    prove_accumulators(net, cfg.acc_bits)
    if delta_bits is None and board is not None:
        delta_bits = _fewest_brams(net, cfg, split, board)
    if delta_bits is None:
        # the delta width depends on the addresses, which depend on the row assignment,
        # which depends on costs (hence on the width): plan with a provisional width, then refine
        delta_bits = _settle_delta_bits(net, cfg, split)
    cfg = ArchConfig(cfg.pes, cfg.lanes, cfg.weight_bits, cfg.act_bits, cfg.acc_bits, delta_bits)
    plans = _plan(net, cfg, split)
    src_index = np.asarray(source.extra["input_index"]) if "input_index" in source.extra else None
    input_index = src_index[index] if src_index is not None else index
    program = Program(cfg, net, source, input_index, index, plans, plans[-1].out_address, info, split=split)
    program.memory = memory_use(program, None)
    if board is not None:
        program.memory = check_capacity(program, board)
    return program


def _plan(net: QuantNetwork, cfg: ArchConfig, split: str = "auto") -> list[LayerPlan]:
    """Plan every layer: row-parallel, or column-split where that takes fewer cycles
    (``split``: "auto", "never", "always" where the layer has at least P columns)."""
    plans = []
    col_address = np.arange(net.input_size)
    for k, layer in enumerate(net.layers):
        plan = encode_layer(k, layer, col_address, cfg) if split != "always" else None
        if split != "never" and cfg.pes > 1 and layer.cols >= cfg.pes:
            alt = encode_layer_split(k, layer, col_address, cfg)
            if plan is None or alt.cycles < plan.cycles:
                plan = alt
        if plan is None:
            plan = encode_layer(k, layer, col_address, cfg)
        plans.append(plan)
        col_address = plan.out_address
    return plans


def _fewest_brams(net: QuantNetwork, cfg: ArchConfig, split: str, board: str) -> int:
    """For a board: the delta width whose program needs the fewest block RAMs
    (memory words must fit the block RAM shapes, which bits alone do not see)."""
    from mamfpga.boards.targets import board_device

    family = board_device(board).family
    best = None
    for d in range(1, 13):
        trial = ArchConfig(cfg.pes, cfg.lanes, cfg.weight_bits, cfg.act_bits, cfg.acc_bits, d)
        plans = _plan(net, trial, split)
        prog = Program(trial, net, net, np.arange(net.input_size), np.arange(net.input_size), plans,
                       plans[-1].out_address, {})
        use = memory_use(prog, family)
        key = (use["bram"], use["memories"]["weights"]["bits"], prog.cycles_per_inference)
        if best is None or key < best[0]:
            best = (key, d)
    return best[1]


def _settle_delta_bits(net: QuantNetwork, cfg: ArchConfig, split: str) -> int:
    d = cfg.delta_bits
    for _ in range(4):
        trial = ArchConfig(cfg.pes, cfg.lanes, cfg.weight_bits, cfg.act_bits, cfg.acc_bits, d)
        plans = _plan(net, trial, split)
        addresses = [np.arange(net.input_size)] + [p.out_address for p in plans[:-1]]
        csrs = []
        for layer, a, plan in zip(net.layers, addresses, plans):
            if plan.split:          # deltas restart at each PE's range
                starts = np.array(plan.col_ranges[:-1])
                a = a - starts[np.searchsorted(starts, a, side="right") - 1]
            csrs.append(_csr(layer, a))
        nd = choose_delta_bits(csrs, trial)
        if nd == d:
            break
        d = nd
    return d


TOP_NAME = "mamfpga_accel"


def write_build(program: Program, build: str | Path, *, board: str | None = None, verilog: bool = True,
                choice: dict | None = None) -> Path:
    """BUILD/: manifest.json, net.npz (the source network), per-PE memory images (.hex)
    and, with ``verilog``, the accelerator's Verilog (top module ``mamfpga_accel``).
    The manifest records every compile option, so that :func:`load_build` rebuilds the
    same program; ``choice`` (how the configuration was chosen) goes in as is."""
    build = claim_dir(build, what="build folder")
    cfg = program.config
    save_qnet(program.source, build / "net.npz")
    if verilog:
        from mamfpga.hw.accelerator import Accelerator
        from mamfpga.hw.verilog import write_verilog

        write_verilog(Accelerator(program), TOP_NAME, build / "accelerator.v")
    ww = -(-word_bits(cfg) // 4)
    bw = -(-(cfg.acc_bits + 1) // 4)
    for p in range(cfg.pes):
        words = [w for l in program.layers for w in l.words[p]]
        atomic_write_text(build / f"pe{p}_weights.hex", "".join(f"{w:0{ww}x}\n" for w in words))
        bias = [b for l in program.layers for b in l.bias[p]]
        atomic_write_text(build / f"pe{p}_bias.hex", "".join(f"{b:0{bw}x}\n" for b in bias))
    manifest = {
        "format": "mamfpga.build/1",
        "board": board,
        "top": TOP_NAME if verilog else None,
        "config": {"pes": cfg.pes, "lanes": cfg.lanes, "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits,
                   "acc_bits": cfg.acc_bits, "delta_bits": cfg.delta_bits, "split": program.split},
        "choice": choice,
        "input_index": [int(i) for i in program.input_index],
        "output_address": [int(a) for a in program.output_address],
        "eliminated": program.eliminated,
        "layers": [l.manifest() for l in program.layers],
        "cycles_per_inference": program.cycles_per_inference,
        "cycle_bound": program.cycle_bound,
        "cycle_model": "N_0 + sum_k (max_p words_{k,p} + layer_overhead [+ split_overhead]) "
                       "+ OUTPUT_CYCLES * M_last (mamfpga.hw.arch)",
        "memory": program.memory,
        "balance": balance(program),
    }
    atomic_write_json(build / "manifest.json", manifest)
    return build


def load_build(build: str | Path) -> Program:
    """The Program of a build folder: its net.npz compiled again with the manifest's
    configuration (compilation is deterministic), checked against the manifest."""
    import json

    from mamfpga.sw.qnet import load_qnet

    build = Path(build)
    manifest_path = build / "manifest.json"
    if not manifest_path.is_file():
        raise CompileError(f"{build}: not a build folder (no manifest.json); run mamfpga compile first")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != "mamfpga.build/1":
        raise CompileError(f"{manifest_path}: unknown build format {manifest.get('format')!r}")
    c = manifest["config"]
    cfg = ArchConfig(pes=c["pes"], lanes=c["lanes"], acc_bits=c["acc_bits"], delta_bits=c["delta_bits"])
    kinds = [l.get("kind") == "column-split" for l in manifest["layers"]]
    split = c.get("split", "auto")
    if split not in ("auto", "never", "always"):
        raise CompileError(f"{manifest_path}: config.split is {split!r}, not auto, never or always")
    program = compile_network(load_qnet(build / "net.npz"), cfg, delta_bits=c["delta_bits"],
                              acc_bits=c["acc_bits"], split=split)
    if [l.split for l in program.layers] != kinds or program.cycles_per_inference != manifest["cycles_per_inference"]:
        raise CompileError(f"{build}: net.npz no longer compiles to the manifest's program; compile again")
    return program


def balance(program: Program) -> dict:
    """max / mean nonzeros and words per PE, per layer and over the network."""
    out = {"layers": []}
    tot_nnz = np.zeros(program.config.pes)
    tot_words = np.zeros(program.config.pes)
    for l in program.layers:
        nnz = np.array(l.pe_nnz, dtype=float)
        words = np.array(l.pe_words, dtype=float)
        tot_nnz += nnz
        tot_words += words
        out["layers"].append({"nnz": _ratio(nnz), "words": _ratio(words)})
    out["nnz"] = _ratio(tot_nnz)
    out["words"] = _ratio(tot_words)
    return out


def _ratio(v: np.ndarray) -> float:
    return float(v.max() / v.mean()) if v.mean() > 0 else 1.0
