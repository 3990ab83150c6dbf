"""The compiler: QuantNetwork -> Program (CSR per PE, memory images, cycle model).

Passes over one :class:`Compilation`, run in order from :data:`PASSES`; each is a
function you can call and test alone:

1. :func:`eliminate` — integer-exact dead-row and dead-column elimination
   (a dead neuron's constant output folds into the next MAC layer's bias);
2. :func:`prove_accumulators` — no accumulator can overflow ``acc_bits``
   (|b| + sum |W| * 128 for MAC, |b| + 2 * max |W| * 128 for MAM);
3. :func:`plan_layers` — each layer row-parallel or column-split; rows to PEs,
   the same count on each (padding rows fill up), balancing the words each PE
   reads (:func:`assign_rows`: longest first, to the least loaded PE with room);
4. :func:`choose_delta_bits` — the width of the delta-coded column index, in one
   sweep over the layout: the smallest weight memory, or the fewest block RAMs;
5. :func:`encode_layer` — weight words and bias entries per PE;
6. :func:`check_capacity` — the memories (:func:`memory_use`) against the device.

The word formats and the cycle model are those of :mod:`mamfpga.compile.arch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mamfpga.compile.arch import (ArchConfig, act_side_words, bias_bits_used, bias_word_fields, bound_cycles,
                                   layer_overhead, pack, result_fields, results_may_use_block_ram, rom_width,
                                   split_overhead,
                                   weight_word_fields,
                                   word_bits)
from mamfpga.compile.device import Device, memory_blocks
from mamfpga.compile.ir import CompileError, LayerPlan, MemoryFitError, Program
from mamfpga.sw.golden import requantize_values
from mamfpga.sw.qnet import QuantLayer, QuantNetwork
from mamfpga.sw.simplify import eliminate_dead

__all__ = ["PASSES", "Compilation", "compile_network", "prove_accumulators", "eliminate", "plan_layers",
           "LayerShape", "choose_delta_bits", "assign_rows", "encode_layer", "memory_use", "check_capacity",
           "required_acc_bits", "fifo_depths"]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


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
    """What each row outputs when all its inputs are 0: its bias, requantized."""
    return requantize_values(layer.bias.astype(np.int64), layer.mult, layer.shift, layer.relu)


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


def _encode_rows(csr: _CSR, rows: list[int], cfg: ArchConfig) -> tuple[list[int], list[int]]:
    """Weight words of ``rows`` (row indices of ``csr``, -1 for a padding row), in order, and
    the words of each: delta-coded entries (delta, int8 weight), gap fillers, zero entries
    padding the last word, the end-of-row bit on the last word of each row.

    Gap fillers and the padding of the last word are zero-weight entries: a MAC
    lane adds their product 0, a MAM lane ignores them (the row's zero-candidate
    bit, not the entries, says whether 0 is a max/min candidate). An empty row,
    or a padding row, is one word of zero entries: its bias alone. The word
    layout is :func:`mamfpga.compile.arch.weight_word_fields`'s.
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


@dataclass
class LayerShape:
    """A layer laid out on the PEs before its words are encoded: row-parallel (``rows``: each
    PE's rows in order, -1 a padding row, one CSR for all) or column-split (every PE every
    row, ``csrs`` the nonzeros of each PE's address range, ``ranges`` their starts and end),
    and the activation address each output row goes to. The layout does not depend on the
    delta width, so that width can be chosen over it in one pass (:func:`choose_delta_bits`)."""
    split: bool
    rows: list[list[int]]
    csrs: list[_CSR]
    ranges: list[int]
    out_address: np.ndarray
    in_range: list[int]                  # split: real columns in each PE's range

    def pe_words(self, cfg: ArchConfig) -> list[int]:
        """Weight words each PE reads for this layer at ``cfg``'s delta width."""
        if self.split:
            return [int(_row_costs(c, cfg).sum()) for c in self.csrs]
        costs = _row_costs(self.csrs[0], cfg)
        return [int(sum(costs[r] if r >= 0 else 1 for r in rows)) for rows in self.rows]

    def cycles(self, cfg: ArchConfig) -> int:
        return max(self.pe_words(cfg)) + layer_overhead(cfg) + (split_overhead(cfg) if self.split else 0)


def _row_parallel_shape(layer: QuantLayer, col_address: np.ndarray, cfg: ArchConfig) -> LayerShape:
    csr = _csr(layer, col_address)
    rows = assign_rows(_row_costs(csr, cfg).tolist(), cfg.pes)
    out_address = np.zeros(layer.rows, dtype=np.int64)
    for p, rs in enumerate(rows):
        r = np.asarray(rs, dtype=np.int64)
        out_address[r[r >= 0]] = np.flatnonzero(r >= 0) * cfg.pes + p
    return LayerShape(False, rows, [csr], [], out_address, [])


def _split_shape(layer: QuantLayer, col_address: np.ndarray, cfg: ArchConfig) -> LayerShape:
    ranges = _split_ranges(layer, col_address, cfg.pes)
    col_address = np.asarray(col_address, dtype=np.int64)
    csrs = [_csr(layer, col_address, ranges[p], ranges[p + 1]) for p in range(cfg.pes)]
    in_range = [int(((col_address >= ranges[p]) & (col_address < ranges[p + 1])).sum()) for p in range(cfg.pes)]
    return LayerShape(True, [list(range(layer.rows))] * cfg.pes, csrs, ranges, np.arange(layer.rows), in_range)


def plan_layers(net: QuantNetwork, cfg: ArchConfig, split: str = "auto") -> list[LayerShape]:
    """Pass: every layer laid out, row-parallel or column-split, whichever takes fewer cycles
    (``split``: "auto"; "never"; "always" where the layer has at least P columns). Rows are
    balanced and kinds chosen by the word counts at ``cfg``'s delta width, which is the
    architecture's default, not the width chosen later: the layout of a network is the same
    whatever width it is finally encoded with, so a build recompiles to the same program."""
    shapes = []
    col_address = np.arange(net.input_size)
    for layer in net.layers:
        shape = _row_parallel_shape(layer, col_address, cfg) if split != "always" else None
        if split != "never" and cfg.pes > 1 and layer.cols >= cfg.pes:
            alt = _split_shape(layer, col_address, cfg)
            if shape is None or alt.cycles(cfg) < shape.cycles(cfg):
                shape = alt
        if shape is None:
            shape = _row_parallel_shape(layer, col_address, cfg)
        shapes.append(shape)
        col_address = shape.out_address
    return shapes


def choose_delta_bits(shapes: list[LayerShape], cfg: ArchConfig, family: str | None = None,
                      max_bits: int = 16) -> int:
    """Pass: the delta width, over the layout, in one sweep of the widths (no re-planning):
    the smallest weight memory in bits (fewest words on ties); for a device ``family``, the
    fewest block RAMs of the weight memories first (words must fit the block RAM shapes, which
    bits alone do not see), then bits, then cycles."""
    best = None
    for d in range(1, max_bits + 1):
        c = ArchConfig(cfg.pes, cfg.lanes, cfg.weight_bits, cfg.act_bits, cfg.acc_bits, d)
        per_layer = [sh.pe_words(c) for sh in shapes]
        depth = [sum(w[p] for w in per_layer) for p in range(cfg.pes)]
        words = sum(depth)
        key = (words * word_bits(c), words)
        if family is not None:
            bram = sum(memory_blocks(word_bits(c), max(1, dp), family, rom=True) for dp in depth)
            cycles = sum(max(w) for w in per_layer)
            key = (bram, words * word_bits(c), cycles)
        if best is None or key < best[0]:
            best = (key, d)
    return best[1]


def encode_layer(k: int, layer: QuantLayer, shape: LayerShape, cfg: ArchConfig) -> LayerPlan:
    """Pass: one layer's weight words and bias entries per PE, at ``cfg``'s delta width, in the
    layout ``shape`` gives. A row-parallel PE encodes its rows (a padding row: one word of zero
    entries, bias 0 and a zero candidate; its output is never read); a column-split PE encodes,
    for every row, the entries in its address range (deltas from the range start), its bias entry
    the row's bias (PE 0 only) and whether the row has a zero weight among the range's columns."""
    words, bias, row_words, pe_nnz = [], [], [], []
    for p in range(cfg.pes):
        csr = shape.csrs[p] if shape.split else shape.csrs[0]
        rows = shape.rows[p]
        w_p, rw_p = _encode_rows(csr, rows, cfg)
        nnz_row = np.diff(csr.indptr)
        if shape.split:
            b = layer.bias.astype(np.int64) if p == 0 else np.zeros(layer.rows, dtype=np.int64)
            zc = nnz_row < shape.in_range[p]
            pe_nnz.append(int(nnz_row.sum()))
        else:
            r = np.asarray(rows, dtype=np.int64)
            real = r >= 0
            safe = np.where(real, r, 0)
            b = np.where(real, layer.bias[safe], 0)
            zc = np.where(real, nnz_row[safe] < layer.cols, 1)        # the row has a pruned weight
            pe_nnz.append(int(nnz_row[r[real]].sum()))
        bias.append(pack(bias_word_fields(cfg), {"bias": b, "zero_candidate": zc}))
        words.append(w_p)
        row_words.append(rw_p)
    overhead = layer_overhead(cfg) + (split_overhead(cfg) if shape.split else 0)
    return LayerPlan(k, layer.mode, layer.rows, layer.cols, layer.nnz, layer.mult, layer.shift, layer.relu,
                     layer.rows if shape.split else len(shape.rows[0]), shape.rows, words, bias, row_words,
                     shape.out_address, cycles_model=max(len(w) for w in words) + overhead,
                     cycles_bound=bound_cycles(layer.nnz, layer.rows, cfg), pe_nnz=pe_nnz, split=shape.split,
                     col_ranges=shape.ranges)


def fifo_depths(program) -> list[int]:
    """Per PE, the result FIFO depth that never fills: the largest number of results a PE
    has produced that the slowest PE has not yet matched, over every layer."""
    P = program.config.pes
    depth = [1] * P
    for plan in program.layers:
        finish = [np.cumsum(plan.row_words[p]) for p in range(P)]   # cycle of each row's result
        pop = np.max(np.stack(finish), axis=0) + 1                   # when row t leaves every FIFO
        for p in range(P):
            for t, f in enumerate(finish[p]):
                held = t + 1 - int(np.searchsorted(pop, f, side="right"))
                depth[p] = max(depth[p], held + 1)
    return depth


def memory_use(program: Program, family: str | None) -> dict:
    """Bits and block RAMs of each memory of the accelerator, as the RTL builds them
    (mamfpga.hw.pe) and yosys maps them (:func:`mamfpga.compile.device.memory_blocks`):
    per PE a weight memory (its own words), a bias memory, and per lane an activation
    memory of P activations a word, both ping-pong sides, its depth a power of two. The board top adds its own FIFOs (the board flow's fit check
    counts them in the synthesized design)."""
    cfg = program.config
    P, L = cfg.pes, cfg.lanes
    depth_w = [max(1, sum(l.pe_words[p] for l in program.layers)) for p in range(P)]
    depth_b = [max(1, sum(len(l.bias[p]) for l in program.layers)) for p in range(P)]
    act_depth = 2 * act_side_words(program.widest, P)
    modes = {l.mode for l in program.layers}
    kinds = {(l.split, l.mode) for l in program.layers}
    wb, bb = word_bits(cfg), bias_bits_used(cfg, modes)
    words_w = [[w for l in program.layers for w in l.words[p]] for p in range(P)]
    words_b = [[b for l in program.layers for b in l.bias[p]] for p in range(P)]
    mems = {
        "weights": {"copies": P, "width": wb, "depths": depth_w, "rom": True, "enables": 0,
                    "widths": [rom_width(w, (1 << wb) - 1) for w in words_w]},
        "bias": {"copies": P, "width": bb, "depths": depth_b, "rom": True, "enables": 0,
                 "widths": [rom_width(b, (1 << bb) - 1) for b in words_b]},
        # every lane of every PE reads its own copy, both ping-pong sides in one memory, written
        # a byte (activation) at a time
        "activations": {"copies": P * L, "width": 8 * P, "depths": [act_depth] * (P * L), "rom": False,
                        "enables": P},
        # each PE's result FIFO (the fields some layer reads); in logic where block RAM cannot serve it
        "results": {"copies": P, "width": sum(w for _, w in result_fields(cfg, kinds)),
                    "depths": fifo_depths(program), "rom": False, "enables": 1,
                    "logic": not results_may_use_block_ram(kinds)},
    }
    # The weights are initialised from the bitstream, so they live in block RAM: the
    # iCE40UP's SPRAMs have no initial contents (they would need run-time weight loading).
    total_bits = total_blocks = 0
    for m in mems.values():
        m["depth"] = max(m["depths"])
        m["bits"] = m["width"] * sum(m["depths"])
        total_bits += m["bits"]
        if family is not None:
            # as the RTL marks them: block RAM, or logic where that costs less (small ROMs), a ROM
            # as wide as its bits that vary (mamfpga.compile.arch.rom_width)
            widths = m.get("widths", [m["width"]] * len(m["depths"]))
            m["bram"] = 0 if m.get("logic") else sum(
                memory_blocks(w, d, family, rom=m["rom"], write_enables=m["enables"])
                for w, d in zip(widths, m["depths"]))
            total_blocks += m["bram"]
        for k in ("depths", "enables", "logic", "widths"):
            m.pop(k, None)
    nnz = sum(l.nnz for l in program.layers)
    return {"memories": mems, "total_bits": total_bits, "bram": total_blocks if family else None,
            "weight_bits_per_nnz": (mems["weights"]["bits"] / nnz) if nnz else None}


def check_capacity(program: Program, device: Device) -> dict:
    """:func:`memory_use` on ``device``, or :class:`MemoryFitError` naming what does not fit."""
    use = memory_use(program, device.family)
    if use["bram"] > device.bram:
        parts = ", ".join(f"{name} {m['bram']}" for name, m in use["memories"].items() if m["bram"])
        raise MemoryFitError(f"the program needs {use['bram']} block RAMs ({parts}); the {device.name} "
                             f"has {device.bram} (fewer PEs or lanes, or more pruning, would fit)")
    return use


# ---------------------------------------------------------------------------- driver

@dataclass
class Compilation:
    """The state the passes work on: the options, then what each pass adds."""
    source: QuantNetwork
    cfg: ArchConfig
    device: Device | None = None
    split: str = "auto"
    delta_bits: int | None = None        # given, or chosen by its pass
    acc_bits: int | None = None          # given, or what the network needs
    net: QuantNetwork | None = None      # after elimination
    index: np.ndarray | None = None      # its input columns among the source's
    eliminated: dict | None = None
    shapes: list[LayerShape] | None = None
    plans: list[LayerPlan] | None = None
    program: Program | None = None


def supported(net: QuantNetwork) -> QuantNetwork:
    """``net`` as the accelerator runs it: dense layers with one mult and shift each (a per-row
    array whose entries are all equal becomes that one value), else CompileError naming the layer."""
    layers, changed = [], False
    for k, l in enumerate(net.layers):
        if l.kind != "dense":
            raise CompileError(f"layer{k} is a {l.kind} layer; the accelerator runs dense layers only so far "
                               "(the golden model runs this network: mamfpga golden)")
        if l.per_channel:
            if np.unique(np.asarray(l.mult)).size > 1 or np.unique(np.asarray(l.shift)).size > 1:
                raise CompileError(f"layer{k} has a mult and shift per output row; the accelerator has one "
                                   "per layer so far (quantize with per-tensor scales for it)")
            l, changed = QuantLayer(l.weight, l.bias, l.mode, int(np.ravel(l.mult)[0]),
                                    int(np.ravel(l.shift)[0]), l.relu), True
        layers.append(l)
    return QuantNetwork(layers, net.input_scale, net.output_scale, net.extra) if changed else net


def _eliminate(c: Compilation) -> None:
    c.source = supported(c.source)
    c.net, c.index, c.eliminated = eliminate(c.source)


def _prove_accumulators(c: Compilation) -> None:
    need = [required_acc_bits(l) for l in c.net.layers]
    acc = c.acc_bits if c.acc_bits is not None else max(8, max(need))
    if acc > 40:
        # 40 bits hold any layer of the contract (int32 bias, 65536 int8 inputs need 34), and
        # keep acc * mult within 64 bits for the golden model and the requantizer alike
        raise CompileError(f"the network needs a {max(need)}-bit accumulator; the accelerator supports "
                           "at most 40")
    c.cfg = ArchConfig(c.cfg.pes, c.cfg.lanes, c.cfg.weight_bits, c.cfg.act_bits, acc, c.cfg.delta_bits)
    prove_accumulators(c.net, acc)


def _plan_layers(c: Compilation) -> None:
    layout = ArchConfig(c.cfg.pes, c.cfg.lanes, c.cfg.weight_bits, c.cfg.act_bits, c.cfg.acc_bits)
    c.shapes = plan_layers(c.net, layout, c.split)


def _choose_delta_bits(c: Compilation) -> None:
    if c.delta_bits is None:
        c.delta_bits = choose_delta_bits(c.shapes, c.cfg, c.device.family if c.device else None)
    c.cfg = ArchConfig(c.cfg.pes, c.cfg.lanes, c.cfg.weight_bits, c.cfg.act_bits, c.cfg.acc_bits, c.delta_bits)


def _encode(c: Compilation) -> None:
    c.plans = [encode_layer(k, layer, shape, c.cfg) for k, (layer, shape) in enumerate(zip(c.net.layers, c.shapes))]
    extra = c.source.extra
    src_index = np.asarray(extra["input_index"]) if "input_index" in extra else None
    input_index = src_index[c.index] if src_index is not None else c.index
    c.program = Program(c.cfg, c.net, c.source, input_index, c.index, c.plans, c.plans[-1].out_address,
                        c.eliminated, split=c.split, device=c.device)


def _check_capacity(c: Compilation) -> None:
    c.program.memory = (check_capacity(c.program, c.device) if c.device is not None
                        else memory_use(c.program, None))


#: the compiler, in order: each pass reads what the ones before it added to the Compilation
PASSES = [_eliminate, _prove_accumulators, _plan_layers, _choose_delta_bits, _encode, _check_capacity]


def compile_network(net: QuantNetwork, cfg: ArchConfig | None = None, *, device: Device | None = None,
                    delta_bits: int | None = None, acc_bits: int | None = None,
                    split: str = "auto") -> Program:
    """``net`` compiled for the architecture ``cfg`` (P, L; the widths are the compiler's unless
    given): the :data:`PASSES` in order. With a ``device``, the delta width is the one needing
    the fewest block RAMs, and the program must fit (:class:`MemoryFitError`)."""
    c = Compilation(net, cfg or ArchConfig(), device, split, delta_bits, acc_bits)
    for run in PASSES:
        run(c)
    return c.program
