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
   sweep over the layout: among the widths within 2 % of the fewest cycles, the smallest
   weight memory, or the fewest block RAMs;
5. :func:`encode_layer` — weight words and bias entries per PE;
6. :func:`check_capacity` — the memories (:func:`memory_use`) against the device.

The word formats and the cycle model are those of :mod:`mamfpga.compile.arch`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mamfpga.compile.arch import (ArchConfig, act_side_words, bank_bytes, bias_bits, bias_bits_used, bias_word_fields,
                                   bound_cycles, layer_overhead, pack, result_fields, results_may_use_block_ram,
                                   rom_width, split_overhead, weight_bits_of, mult_bits_of, weight_word_fields,
                                   low_word_bits, high_word_bits,
                                   word_bits)
from mamfpga.compile.device import Device, memory_blocks
from mamfpga.compile.ir import CompileError, LayerPlan, MemoryFitError, Program
from mamfpga.compile.maps import ConvGeometry, MapLayout, OutGen, place
from mamfpga.compile.schedule import schedule
from mamfpga.sw.golden import requantize_values
from mamfpga.sw.qnet import QuantLayer, QuantNetwork, input_max
from mamfpga.sw.simplify import eliminate_dead

__all__ = ["PASSES", "Compilation", "compile_network", "prove_accumulators", "eliminate", "plan_layers",
           "LayerShape", "choose_delta_bits", "assign_rows", "encode_layer", "memory_use", "check_capacity",
           "required_acc_bits", "fifo_depths", "hw_layers", "balance_lanes", "input_pitch_extra",
           "order_by_readiness"]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ---------------------------------------------------------------------------- passes

def required_acc_bits(layer: QuantLayer, in_max: int = 128) -> int:
    """Signed accumulator width that holds every value the layer can reach, its inputs at most
    ``in_max`` in magnitude (128 for int8, 255 for the unsigned bytes of an act_max-255 layer)."""
    if layer.weight is None:                     # a max pool: no accumulator
        return 8
    w = np.abs(layer.weight.reshape(layer.rows, -1).astype(np.int64))
    b = np.abs(layer.bias.astype(np.int64))
    if layer.mode == "mac":
        reach = b + w.sum(axis=1) * in_max
    else:
        reach = b + 2 * w.max(axis=1) * in_max
    return int(reach.max()).bit_length() + 1


def prove_accumulators(net: QuantNetwork, acc_bits: int) -> list[int]:
    need = [required_acc_bits(l, input_max(net.layers, k)) for k, l in enumerate(net.layers)]
    for k, bits in enumerate(need):
        if bits > acc_bits:
            raise CompileError(f"layer {k} needs a {bits}-bit accumulator to rule out overflow "
                               f"(|b| + {'sum' if net.layers[k].mode == 'mac' else '2 max'} |W| * "
                               f"{input_max(net.layers, k)}); the accelerator has {acc_bits} (use --acc-bits {bits})")
    return need


def _requant_const(layer: QuantLayer) -> np.ndarray:
    """What each row outputs when all its inputs are 0: its bias, requantized."""
    return requantize_values(layer.bias.astype(np.int64), layer.mult, layer.shift, layer.relu, layer.act_max,
                             layer.rounding)


def eliminate(net: QuantNetwork) -> tuple[QuantNetwork, np.ndarray, dict]:
    """Integer-exact removal of dead neurons and unread inputs (see :mod:`mamfpga.sw.simplify`)."""
    layers = [QuantLayer(None if l.weight is None else l.weight.copy(), None if l.bias is None else l.bias.copy(),
                         l.mode, np.copy(l.mult) if np.ndim(l.mult) else l.mult,
                         np.copy(l.shift) if np.ndim(l.shift) else l.shift, l.relu, kind=l.kind, stride=l.stride,
                         padding=l.padding, kernel=l.kernel, weight_bits=l.weight_bits, act_max=l.act_max,
                         rounding=l.rounding)
              for l in net.layers]

    def fold(nxt, cols, values):
        bias = nxt.bias.astype(np.int64) + nxt.weight[:, cols].astype(np.int64) @ values.astype(np.int64)
        if bias.min() < INT32_MIN or bias.max() > INT32_MAX:
            return None
        return bias.astype(np.int32)

    layers, index, report = eliminate_dead(layers, net.input_size, None, _requant_const, fold,
                                           input_shape=net.input_shape)
    for l in layers:
        if l.weight is not None:
            l.weight = np.ascontiguousarray(l.weight, dtype=np.int8)
            l.bias = np.ascontiguousarray(l.bias, dtype=np.int32)
    extra = {k: v for k, v in net.extra.items() if k not in ("input_index", "input_size")}
    out = QuantNetwork(layers, net.input_scale, net.output_scale, extra,
                       input_shape=net.input_shape if len(net.input_shape) == 3 else None)
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

    def lanes(self, cfg: ArchConfig, rows=None) -> "_LaneEntries":
        """The nonzeros of ``rows`` (row indices, -1 a padding row; default all) as the lanes
        read them: :func:`_lane_entries`."""
        if rows is None:
            rows = np.arange(self.rows)
        return _lane_entries(self, np.asarray(rows, dtype=np.int64), cfg.lanes, cfg.max_delta, cfg.lane_copies)


@dataclass
class _LaneEntries:
    """The nonzeros of listed rows, each in the lane of its address: lane k of a row holds the
    nonzeros whose address (relative to the row's origin) is k modulo L, in ascending order,
    each delta-coded from the lane's previous one in units of L (from 0 at the row's start), gap
    fillers before a delta over ``maxd`` (:func:`mamfpga.compile.arch.lane_column`). With lane
    copies, lane k holds the row's k-th, (k + L)-th, ... nonzero, delta-coded in units of 1.
    Arrays in that order: by listed row, lane, address."""
    seg: np.ndarray                  # listed row of each nonzero
    lane: np.ndarray
    delta: np.ndarray                # in units of L
    fill: np.ndarray                 # gap fillers before it
    weight: np.ndarray
    entries: np.ndarray              # [listed rows, L]: entries of each lane, fillers included

    @property
    def words(self) -> np.ndarray:
        """Weight words of each listed row: its longest lane, at least one."""
        return np.maximum(1, self.entries.max(axis=1)) if len(self.entries) else np.zeros(0, dtype=np.int64)


def _lane_entries(csr: _CSR, rows: np.ndarray, L: int, maxd: int, copies: bool = False,
                  share: np.ndarray | None = None) -> _LaneEntries:
    """:class:`_LaneEntries` of ``rows``. With lane copies, a row that starts in its predecessor's
    last word (``share``) deals its first L / 2 nonzeros to the upper half of lanes (that word's
    free half), the rest round robin from lane 0; banked lanes do not depend on it."""
    n = len(rows)
    real = rows >= 0
    safe = np.where(real, rows, 0)
    lens = np.where(real, csr.indptr[safe + 1] - csr.indptr[safe], 0)
    total = int(lens.sum())
    seg = np.repeat(np.arange(n), lens)
    first = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(lens[:-1], out=first[1:])
    idx = csr.indptr[safe][seg] + (np.arange(total) - first[seg])
    addr, weight = csr.addr[idx], csr.weight[idx]
    if copies:                                   # round robin over the row's nonzeros, by address
        j = np.arange(total) - first[seg]
        lane, q = j % L, addr
        if share is not None and total:
            h = L // 2
            sh = np.asarray(share, dtype=bool)[seg]
            lane = np.where(sh, np.where(j < h, h + j, (j - h) % L), lane)
    else:
        lane, q = addr % L, addr // L
    order = np.lexsort((q, lane, seg))
    seg, lane, q, weight = seg[order], lane[order], q[order], weight[order]
    key = seg * L + lane
    prev = np.zeros(total, dtype=np.int64)
    if total:
        prev[1:] = q[:-1]
        prev[np.r_[True, key[1:] != key[:-1]]] = 0
    delta = q - prev
    fill = _fillers(delta, maxd)
    entries = np.bincount(key, weights=1 + fill, minlength=n * L).astype(np.int64).reshape(n, L)
    return _LaneEntries(seg, lane, delta, fill, weight, entries)


@dataclass
class _Packed:
    """A PE's listed rows as its weight stream holds them: their lane entries, which rows start
    in their predecessor's last word (``share``: that word's upper half of lanes), and each row's
    own words (from its first word of its own to its last; the shared word is its
    predecessor's)."""
    entries: _LaneEntries
    share: np.ndarray                # bool per listed row
    own: np.ndarray                  # words per listed row


def _pack_rows(csr: _CSR, rows, cfg: ArchConfig) -> _Packed:
    """The rows of one PE's stream (row indices, -1 a padding row), packed where rows share words
    (:attr:`ArchConfig.packs`): a row starts in its predecessor's last word when that word's
    upper half of lanes is free and the row has entries there, and that does not make it end
    later (greedy, in order: starting early never delays a row, nor fills the upper half of its
    last word). A row still ends in a word of its own (one row end a word). Without packing,
    every row's words are its longest lane, at least one."""
    rows = np.asarray(rows, dtype=np.int64)
    le = csr.lanes(cfg, rows)
    n = len(rows)
    share = np.zeros(n, dtype=bool)
    own = le.words
    if not cfg.packs or n < 2:
        return _Packed(le, share, own)
    plain = le.entries.tolist()
    dealt = _shared_entries(csr, rows, cfg) if cfg.lane_copies else plain
    sh, words = _pack_counts(plain, dealt, cfg.lanes)
    share, own = np.array(sh, dtype=bool), np.array(words, dtype=np.int64)
    if cfg.lane_copies and share.any():
        le = _lane_entries(csr, rows, cfg.lanes, cfg.max_delta, True, share)
    return _Packed(le, share, own)


def _shared_entries(csr: _CSR, rows: np.ndarray, cfg: ArchConfig) -> list:
    """Each listed row's entries per lane as it deals them when it shares its predecessor's word
    (lane copies; banked lanes do not change)."""
    return _lane_entries(csr, rows, cfg.lanes, cfg.max_delta, True, np.ones(len(rows), dtype=bool)).entries.tolist()


def _pack_counts(plain: list, dealt: list, lanes: int) -> tuple[list[bool], list[int]]:
    """:func:`_pack_rows`'s choice over the rows' lane entries (``plain``: each row's entries per
    lane; ``dealt``: as the row deals them when it shares a word, the same banked): whether
    each row shares its predecessor's last word, and its own words."""
    h = lanes // 2
    share, own = [], []
    end, free = -1, False
    for e, es in zip(plain, dealt):
        s = end + 1
        fin = s + max(1, max(e)) - 1
        sh = False
        if free:
            up = max(es[h:])
            if up:
                f2 = max(s, s + max(es[:h]) - 1, s + up - 2)
                if f2 <= fin:
                    sh, e, fin = True, es, f2
        # the upper half of this row's last word is free: no upper lane has an entry there
        free = all(c == 0 or s + c - 1 - sh < fin for c in e[h:])
        share.append(sh)
        own.append(fin - s + 1)
        end = fin
    return share, own


def _row_words(csr: _CSR, rows, cfg: ArchConfig, costs: np.ndarray | None = None) -> np.ndarray:
    """Own words of each listed row of one PE's stream (:func:`_pack_rows`); ``costs``: the rows'
    unpacked words, when the caller has them (used where rows do not share words)."""
    if not cfg.packs:
        r = np.asarray(rows, dtype=np.int64)
        c = _row_costs(csr, cfg) if costs is None else np.asarray(costs, dtype=np.int64)
        return np.where(r >= 0, c[np.maximum(r, 0)], 1) if len(r) else np.zeros(0, dtype=np.int64)
    return _pack_rows(csr, rows, cfg).own


def _csr(layer: QuantLayer, col_address: np.ndarray, keep: np.ndarray | None = None, origin: int = 0) -> _CSR:
    """The layer's nonzeros as a :class:`_CSR` over the activation addresses of its columns
    (only the columns where ``keep`` is set, relative to ``origin``, for one PE of a column-split
    layer)."""
    weight = layer.weight.reshape(layer.weight.shape[0], -1)         # a conv's filters as rows
    rr, cc = np.nonzero(weight)
    addr = np.asarray(col_address, dtype=np.int64)[cc]
    if keep is not None:
        k = np.asarray(keep, dtype=bool)[cc]
        rr, cc, addr = rr[k], cc[k], addr[k] - origin
    order = np.lexsort((addr, rr))
    rr, cc, addr = rr[order], cc[order], addr[order]
    indptr = np.zeros(layer.rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rr, minlength=layer.rows), out=indptr[1:])
    return _CSR(indptr, addr, weight[rr, cc].astype(np.int64))


def _fillers(delta: np.ndarray, max_delta: int) -> np.ndarray:
    """Gap-filler entries before each nonzero: a delta over ``max_delta`` takes
    (zero-weight) entries of ``max_delta`` until the rest fits."""
    return np.maximum(0, -(-delta // max_delta) - 1)


def _row_costs(csr: _CSR, cfg: ArchConfig) -> np.ndarray:
    """Weight words of each row: its longest lane (nonzeros plus gap fillers), at least one."""
    return csr.lanes(cfg).words


def _encode_rows(csr: _CSR, rows: list[int], cfg: ArchConfig) -> tuple[list[int], list[int]]:
    """Weight words of ``rows`` (row indices of ``csr``, -1 for a padding row), in order, and
    the words of each: lane k of the j-th word of a row holds the j-th entry of the row's lane k
    (:class:`_LaneEntries`: gap fillers, then the nonzero), zero entries where a lane has run
    out, the end-of-row bit on the last word of each row.

    Gap fillers and the padding of the shorter lanes are zero-weight entries: a MAC
    lane adds their product 0, a MAM lane ignores them (the row's zero-candidate
    bit, not the entries, says whether 0 is a max/min candidate). An empty row,
    or a padding row, is one word of zero entries: its bias alone. The word
    layout is :func:`mamfpga.compile.arch.weight_word_fields`'s.
    """
    L, maxd = cfg.lanes, cfg.max_delta
    packed = _pack_rows(csr, rows, cfg)
    le, words = packed.entries, packed.own
    n_words = int(words.sum())
    row_base = np.cumsum(words) - words
    # where each row's lanes start: its first own word; a shared row's upper lanes a word earlier
    lane_base = np.repeat(row_base[:, None], L, axis=1)
    lane_base[:, L // 2:] -= packed.share[:, None]
    per_nz = 1 + le.fill
    key = le.seg * L + le.lane
    cum = np.cumsum(per_nz) - per_nz                        # entries before each nonzero, overall
    if len(key):
        group_first = np.r_[True, key[1:] != key[:-1]]
        start = cum - np.maximum.accumulate(np.where(group_first, cum, 0))
    else:
        start = cum
    word = lane_base[le.seg, le.lane] + start               # the word of each nonzero's first entry
    ent_delta = np.zeros((n_words, L), dtype=np.int64)
    ent_weight = np.zeros((n_words, L), dtype=np.int64)
    n_fill = int(le.fill.sum())
    if n_fill:
        fill_first = np.cumsum(le.fill) - le.fill
        fw = np.repeat(word, le.fill) + (np.arange(n_fill) - np.repeat(fill_first, le.fill))
        ent_delta[fw, np.repeat(le.lane, le.fill)] = maxd
    ent_delta[word + le.fill, le.lane] = le.delta - le.fill * maxd
    ent_weight[word + le.fill, le.lane] = le.weight
    eor = np.zeros(n_words, dtype=np.int64)
    eor[np.cumsum(words) - 1] = 1
    values = {"eor": eor}
    if cfg.packs:
        share = np.zeros(n_words, dtype=np.int64)
        share[row_base[packed.share] - 1] = 1              # the predecessor's last word
        values["share"] = share
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


def _split_sets(layer: QuantLayer, col_address: np.ndarray, pes: int, lanes: int) -> list[np.ndarray]:
    """Which columns each PE of a column-split layer takes (a boolean mask over the columns per
    PE), interleaved over the addresses: the columns in blocks of L consecutive addresses (one
    a bank), the blocks in address order dealt a round of P at a time, each round's heaviest
    block (nonzeros) to the PE with the fewest so far. Every PE reads its blocks in address
    order, so all of them read the input as the layer before writes it (P results a step,
    address by address) and the layer can start while that one drains
    (:mod:`mamfpga.compile.schedule`): with contiguous ranges the last PE's first read waited
    for nearly all of it. With fewer blocks than PEs, columns are dealt one by one. Every PE
    gets at least one column (the layer has at least P)."""
    addr = np.asarray(col_address, dtype=np.int64)
    col_nnz = np.count_nonzero(layer.weight.reshape(layer.weight.shape[0], -1), axis=0)
    block = addr // lanes
    if len(np.unique(block)) < pes:
        block = addr
    ids, inv = np.unique(block, return_inverse=True)
    block_nnz = np.bincount(inv, weights=col_nnz, minlength=len(ids))
    owner = np.zeros(len(ids), dtype=np.int64)
    load = np.zeros(pes)
    for first in range(0, len(ids), pes):
        rnd = np.arange(first, min(first + pes, len(ids)))
        heavy = rnd[np.argsort(-block_nnz[rnd], kind="stable")]
        light = np.argsort(load, kind="stable")[:len(rnd)]
        owner[heavy] = light
        load[light] += block_nnz[heavy]
    col_owner = owner[inv]
    return [col_owner == p for p in range(pes)]

@dataclass
class LayerShape:
    """A layer laid out on the PEs before its words are encoded: row-parallel (``rows``: each
    PE's rows in order, -1 a padding row, one CSR for all) or column-split (every PE every
    row, ``csrs`` the nonzeros of each PE's columns, ``ranges`` their origins),
    and the activation address each output value goes to. A conv layer is row-parallel, its rows
    the output channels, run at each of ``geom``'s positions. The layout does not depend on the
    delta width, so that width can be chosen over it in one pass (:func:`choose_delta_bits`)."""
    split: bool
    rows: list[list[int]]
    csrs: list[_CSR]
    ranges: list[int]                    # split: each PE's origin (the first address of its columns)
    out_address: np.ndarray              # byte address of every output value (C, H, W order)
    in_range: list[int]                  # split: real columns each PE takes
    geom: ConvGeometry | None = None     # conv: how it walks its input
    out: OutGen | None = None            # row-parallel: where its results go
    net_index: int = 0                   # the network layer whose output this is (a fused pool's)

    @property
    def positions(self) -> int:
        return self.geom.positions if self.geom is not None else 1

    def pe_words(self, cfg: ArchConfig) -> list[int]:
        """Weight words each PE reads for this layer (per position) at ``cfg``'s delta width; a
        conv layer's PEs all read as many (the shorter ones padded), so that none runs ahead."""
        words = [int(w.sum()) for w in self.row_words(cfg)]
        return [max(words)] * len(words) if self.geom is not None else words

    def row_words(self, cfg: ArchConfig) -> list[np.ndarray]:
        """Each PE's own words of each of its rows, in order (:func:`_pack_rows`)."""
        if self.split:
            return [_row_words(c, np.arange(c.rows), cfg) for c in self.csrs]
        costs = None if cfg.packs else _row_costs(self.csrs[0], cfg)
        return [_row_words(self.csrs[0], rows, cfg, costs) for rows in self.rows]

    def cycles(self, cfg: ArchConfig) -> int:
        return (self.positions * max(self.pe_words(cfg)) + layer_overhead(cfg)
                + (split_overhead(cfg) if self.split else 0))


#: pairs of rows the lane balancing (:func:`balance_lanes`) tries swapping, at most, per layer;
#: the consumer nonzeros it may score in all (fewer tries for a large consumer: compile time); up
#: to this many consumer rows it scores the consumer's busiest PE, beyond them its words / P
LANE_BALANCE_TRIES, LANE_BALANCE_WORK, EXACT_CONSUMER_ROWS = 3000, 20_000_000, 64


def balance_lanes(rows: list[list[int]], costs: np.ndarray, positions: int, consumer: tuple | None,
                  cfg: ArchConfig, tries: int | None = None, csr: "_CSR | None" = None) -> list[list[int]]:
    """Which slot each output of a row-parallel layer takes, for its consumer's lanes and, where
    rows share words, for its own packing. Output row ``rows[p][r]`` goes to slot r P + p, and a
    consumer's nonzero reading it sits in lane (slot + rest) mod L: its rows cost their longest
    lane. Starting from the balanced assignment, swaps of two slots (sampled, seeded) are kept
    when they lower the cycles: positions x the layer's busiest PE + the consumer's positions x
    its busiest PE (its rows balanced by :func:`assign_rows`; beyond
    :data:`EXACT_CONSUMER_ROWS` rows, its words / P), ties broken by the consumer's words, then
    the spread of the loads (gap fillers left out). With ``csr`` (the layer's rows) and rows
    that share words (:attr:`ArchConfig.packs`), a PE's load is its packed words
    (:func:`_pack_counts`: which rows follow which matters), for up to
    :data:`EXACT_CONSUMER_ROWS` rows a PE. At most ``tries`` swaps, fewer for a large consumer
    (:data:`LANE_BALANCE_WORK` nonzeros scored in all). ``consumer``: (positions, consumer row
    of each nonzero, producer row it reads, rest of its address), or None (the last layer)."""
    L, P = cfg.lanes, cfg.pes
    tries = LANE_BALANCE_TRIES if tries is None else tries
    grid = np.array(rows, dtype=np.int64)                  # [P, R]
    R = grid.shape[1]
    lanes_matter = consumer is not None and L > 1 and not cfg.lane_copies and len(consumer[1]) > 0
    packed = cfg.packs and csr is not None and R <= EXACT_CONSUMER_ROWS and R > 1
    if not lanes_matter and not packed:
        return rows
    cost = np.concatenate([np.asarray(costs, dtype=np.int64), [1]])   # index -1: a padding row
    if packed:
        n_rows = len(costs)
        plain = csr.lanes(cfg).entries.tolist() + [[0] * L]             # index -1: a padding row
        dealt = _shared_entries(csr, np.arange(n_rows), cfg) + [[0] * L] if cfg.lane_copies else plain

        def load_of(p):
            return sum(_pack_counts([plain[r] for r in grid[p]], [dealt[r] for r in grid[p]], L)[1])
    else:
        def load_of(p):
            return int(cost[grid[p]].sum())
    loads = np.array([load_of(p) for p in range(P)], dtype=np.int64)
    if lanes_matter:
        c_pos, nz_row, nz_ch, nz_rest = consumer
        tries = min(tries, LANE_BALANCE_WORK // len(nz_row))
        n_cons = int(nz_row.max()) + 1
        n_out = max(int(grid.max()) + 1, int(nz_ch.max()) + 1)

    def slots(g):
        s = np.zeros(n_out, dtype=np.int64)
        pp, rr = np.nonzero(g >= 0)
        s[g[pp, rr]] = rr * P + pp
        return s

    def score(g):
        if not lanes_matter:
            return (positions * int(loads.max()), 0, int((loads ** 2).sum()))
        lane = (slots(g)[nz_ch] + nz_rest) % L
        words = np.bincount(nz_row * L + lane, minlength=n_cons * L).reshape(n_cons, L).max(axis=1)
        words = np.maximum(1, words)
        total = int(words.sum())
        if n_cons <= EXACT_CONSUMER_ROWS:        # the consumer's busiest PE, as plan_layers balances it
            cons = max(sum(int(words[r]) if r >= 0 else 1 for r in rs) for rs in assign_rows(words.tolist(), P))
        else:
            cons = -(-total // P)
        # cycles first; then the consumer's words and the spread of the loads, so that the search
        # moves over the plateaus of the maxima
        return (positions * int(loads.max()) + c_pos * cons, c_pos * total, int((loads ** 2).sum()))

    best = score(grid)
    rng = np.random.default_rng(0)
    n = P * R
    for _ in range(tries if n > 1 else 0):
        a, b = rng.integers(0, n, 2)
        (pa, ra), (pb, rb) = divmod(int(a), R), divmod(int(b), R)
        if grid[pa, ra] == grid[pb, rb]:
            continue
        old = loads[pa], loads[pb]
        grid[pa, ra], grid[pb, rb] = grid[pb, rb], grid[pa, ra]
        loads[pa] = load_of(pa)
        loads[pb] = load_of(pb)
        now = score(grid)
        if now < best:
            best = now
        else:
            grid[pa, ra], grid[pb, rb] = grid[pb, rb], grid[pa, ra]
            loads[pa], loads[pb] = old
    return grid.tolist()


def _written_when(shape: LayerShape, cfg: ArchConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """A dense layer's outputs: (byte address, when it is written, in words the slowest PE has
    fetched by then: the order of mamfpga.compile.schedule at the layout's delta width); None
    for a conv layer."""
    if shape.geom is not None:
        return None
    per_pe = np.stack([np.cumsum(w) for w in shape.row_words(cfg)])
    fin = np.max(per_pe, axis=0)                                            # step t's results all done
    if shape.split:
        return np.asarray(shape.out_address, dtype=np.int64), fin
    grid = np.asarray(shape.rows, dtype=np.int64)
    pp, tt = np.nonzero(grid >= 0)
    when = np.zeros(len(shape.out_address), dtype=np.int64)
    when[grid[pp, tt]] = fin[tt]
    return np.asarray(shape.out_address, dtype=np.int64), when


def order_by_readiness(shape: LayerShape, before: LayerShape, cfg: ArchConfig) -> list[list[int]]:
    """Each PE's rows of a dense row-parallel layer in the order their inputs are written by the
    layer ``before`` it (a row's inputs are ready when the last of them is; padding rows first,
    they read nothing), so that the layer can start while that one drains
    (:mod:`mamfpga.compile.schedule`). A row keeps its PE; its slot r P + p changes only in r,
    which leaves the lane its consumer reads it in unchanged ((r P + p) mod L, L dividing P), so
    this is done only where L divides P or each lane has its own copy."""
    written = _written_when(before, cfg)
    if shape.split or shape.geom is not None or written is None or \
            not (cfg.lane_copies or cfg.pes % cfg.lanes == 0):
        return shape.rows
    addr, when = written
    at = np.full(int(addr.max()) + 2, -1, dtype=np.int64)
    at[addr] = when
    csr = shape.csrs[0]
    seen = np.where(csr.addr < len(at) - 1, at[np.minimum(csr.addr, len(at) - 1)], -1)
    ready = np.full(csr.rows, -1, dtype=np.int64)
    rows_of = np.repeat(np.arange(csr.rows), np.diff(csr.indptr))
    np.maximum.at(ready, rows_of, seen)
    return [sorted(rs, key=lambda r: (ready[r] if r >= 0 else -2, r)) for rs in shape.rows]


def _consumer_of(net: QuantNetwork, groups, g: int, out_map: "MapLayout | None") -> tuple | None:
    """What :func:`balance_lanes` needs of the layer reading hardware layer ``g``'s output:
    its positions and, per nonzero, its row, the output row of ``g`` it reads, and the part of
    its address that does not depend on that row's slot (None: ``g`` is the last layer)."""
    if g + 1 >= len(groups):
        return None
    layer = net.layers[groups[g + 1][0]]
    w = layer.weight.reshape(layer.weight.shape[0], -1)
    nz_row, col = np.nonzero(w)
    if layer.kind == "conv2d":
        _, _, kh, kw = layer.weight.shape
        ch, k = col // (kh * kw), col % (kh * kw)
        rest = ((k // kw) * out_map.pitch + k % kw) * out_map.cs
        oh = (out_map.hp - kh) // layer.stride[0] + 1
        ow = (out_map.wp - kw) // layer.stride[1] + 1
        positions = oh * ow
    elif out_map is not None:                    # a dense layer reading a conv's map
        per = out_map.h * out_map.w
        ch, pos = col // per, col % per
        rest = ((pos // out_map.w + out_map.pad[0]) * out_map.pitch + pos % out_map.w + out_map.pad[1]) * out_map.cs
        positions = 1
    else:
        ch, rest, positions = col, np.zeros_like(col), 1
    return positions, nz_row.astype(np.int64), ch.astype(np.int64), rest.astype(np.int64)


def _row_parallel_shape(layer: QuantLayer, col_address: np.ndarray, cfg: ArchConfig, base: int,
                        rows: list[list[int]] | None = None) -> LayerShape:
    csr = _csr(layer, col_address)
    if rows is None:
        rows = assign_rows(_row_costs(csr, cfg).tolist(), cfg.pes)
    out_address = np.zeros(layer.rows, dtype=np.int64)
    for p, rs in enumerate(rows):
        r = np.asarray(rs, dtype=np.int64)
        out_address[r[r >= 0]] = base + np.flatnonzero(r >= 0) * cfg.pes + p
    out = OutGen(base // cfg.pes, len(rows[0]), 1, 0, 1)
    return LayerShape(False, rows, [csr], [], out_address, [], out=out)


def _split_shape(layer: QuantLayer, col_address: np.ndarray, cfg: ArchConfig, base: int) -> LayerShape:
    col_address = np.asarray(col_address, dtype=np.int64)
    sets = _split_sets(layer, col_address, cfg.pes, cfg.lanes)
    origins = [int(col_address[s].min()) for s in sets]
    csrs = [_csr(layer, col_address, s, o) for s, o in zip(sets, origins)]
    return LayerShape(True, [list(range(layer.rows))] * cfg.pes, csrs, origins, base + np.arange(layer.rows),
                      [int(s.sum()) for s in sets])


def _conv_shape(layer: QuantLayer, pool: QuantLayer | None, src: MapLayout, base: int, pad: tuple,
                cfg: ArchConfig, rows: list[list[int]] | None = None) -> tuple[LayerShape, MapLayout]:
    """A conv layer (and its fused pool) on the PEs: output channels balanced over the PEs like
    rows, the filters' columns at their offsets from a position's origin; its output map, in the
    layout of :mod:`mamfpga.compile.maps`, with the border ``pad`` its consumer needs."""
    P = cfg.pes
    m, c, kh, kw = layer.weight.shape
    oh = (src.hp - kh) // layer.stride[0] + 1
    ow = (src.wp - kw) // layer.stride[1] + 1
    ph, pw = pool.kernel if pool is not None else (1, 1)
    out_h, out_w = (oh - ph) // ph + 1, (ow - pw) // pw + 1
    geom = ConvGeometry(src, (kh, kw), tuple(layer.stride), (ph, pw), out_h, out_w)
    csr = _csr(layer, geom.offsets(c))
    if rows is None:
        rows = assign_rows(_row_costs(csr, cfg).tolist(), P)
    R = len(rows[0])
    chan = np.zeros(m, dtype=np.int64)
    for p, rs in enumerate(rows):
        for r, row in enumerate(rs):
            if row >= 0:
                chan[row] = r * P + p
    dst = MapLayout(base, R * P, tuple(int(v) for v in chan), out_h, out_w, tuple(pad))
    out = OutGen((base + (pad[0] * dst.wp + pad[1]) * R * P) // P, R, out_w, (pad[1] + pad[3]) * R,
                 out_h * out_w, ph * pw)
    return LayerShape(False, rows, [csr], [], dst.addresses(), [], geom=geom, out=out), dst


def input_pitch_extra(net: QuantNetwork, cfg: ArchConfig, pad: tuple) -> int:
    """Unused columns after each row of a conv network's input map (0 to 2 L - 1), the fewest
    that minimise the first layer's words per position: a filter entry's lane is its offset
    ky pitch + kx mod L, so with an even pitch a 3 x 3 filter on a one-channel input puts
    kx = 0 and 2 in the same lane of two; an odd pitch spreads it (ky + kx mod 2)."""
    first = net.layers[0]
    if first.kind != "conv2d" or cfg.lanes == 1 or cfg.lane_copies:
        return 0
    c, h, w = net.input_shape
    best = None
    for extra in range(2 * cfg.lanes):
        src = MapLayout.channel_major(0, c, h, w, pad, extra)
        geom = ConvGeometry(src, tuple(first.weight.shape[2:]), tuple(first.stride), (1, 1), 1, 1)
        costs = _row_costs(_csr(first, geom.offsets(c)), cfg)
        words = max(sum(int(costs[r]) if r >= 0 else 1 for r in rs) for rs in assign_rows(costs.tolist(), cfg.pes))
        if best is None or words < best[0]:
            best = (words, extra)
    return best[1]


def hw_layers(net: QuantNetwork) -> list[tuple[int, int | None]]:
    """The layers the accelerator runs: (weighted layer, the max pool fused after it or None)."""
    groups = []
    for k, layer in enumerate(net.layers):
        if layer.kind == "maxpool2d":
            groups[-1] = (groups[-1][0], k)
        else:
            groups.append((k, None))
    return groups


def _padding_of(net: QuantNetwork, groups, g: int) -> tuple:
    """The zero border hardware layer ``g`` reads its input with (none past the last layer)."""
    if g < len(groups) and net.layers[groups[g][0]].kind == "conv2d":
        return tuple(net.layers[groups[g][0]].padding)
    return (0, 0, 0, 0)


def plan_layers(net: QuantNetwork, cfg: ArchConfig, split: str = "auto") -> tuple[list[LayerShape], int, np.ndarray]:
    """Pass: every layer laid out. First the maps: the input on side 0, layer g's output on side
    (g + 1) % 2, regions placed by :func:`mamfpga.compile.maps.place` (sizes known before any
    row is assigned: R = ceil(rows / P) slots per position). Then each layer: conv layers
    row-parallel over their channels; dense ones row-parallel or column-split, whichever takes
    fewer cycles (``split``: "auto"; "never"; "always" where the layer has at least P columns and
    one mult and shift). Rows are balanced and kinds chosen by the word counts at ``cfg``'s delta
    width (:data:`LAYOUT_DELTA_BITS`, wide enough for no gap fillers), not the width chosen later: the layout of a
    network is the same whatever width it is finally encoded with, so a build recompiles to the
    same program. Returns the shapes, the bytes a buffer side holds and the address of every
    input value (side 0)."""
    P = cfg.pes
    groups = hw_layers(net)
    qshapes = net.shapes
    first = net.layers[0]
    in_pad = _padding_of(net, groups, 0)
    extra = input_pitch_extra(net, cfg, in_pad)
    if first.kind == "conv2d":
        sizes = [(0, MapLayout.extent_of_channel_major(*net.input_shape, in_pad, extra), any(in_pad))]
    else:
        sizes = [(0, net.input_size, False)]
    for g, (k, pk) in enumerate(groups):
        layer, pad = net.layers[k], _padding_of(net, groups, g + 1)
        slots = -(-layer.rows // P) * P
        if layer.kind == "conv2d":
            _, h, w = qshapes[(pk if pk is not None else k) + 1]
            sizes.append(((g + 1) % 2, slots * (pad[0] + h + pad[2]) * (pad[1] + w + pad[3]), any(pad)))
        else:
            sizes.append(((g + 1) % 2, slots, False))
    bases, need = place(sizes, P)

    shapes = []
    src = None
    if first.kind == "conv2d":
        src = MapLayout.channel_major(bases[0], *net.input_shape, in_pad, extra)
        col_address = src.addresses()
    else:
        col_address = bases[0] + np.arange(net.input_size)
    input_address = col_address
    for g, (k, pk) in enumerate(groups):
        layer, base = net.layers[k], bases[g + 1]
        if layer.kind == "conv2d":
            pool, pad = net.layers[pk] if pk is not None else None, _padding_of(net, groups, g + 1)
            in_map = src
            shape, src = _conv_shape(layer, pool, in_map, base, pad, cfg)
            rows = balance_lanes(shape.rows, _row_costs(shape.csrs[0], cfg), shape.positions,
                                 _consumer_of(net, groups, g, src), cfg, csr=shape.csrs[0])
            if rows != shape.rows:
                shape, src = _conv_shape(layer, pool, in_map, base, pad, cfg, rows)
        else:
            may_split = split != "never" and P > 1 and layer.cols >= P and not layer.per_channel
            shape = _row_parallel_shape(layer, col_address, cfg, base) if split != "always" or not may_split \
                else None
            if shape is not None:
                rows = balance_lanes(shape.rows, _row_costs(shape.csrs[0], cfg), 1,
                                     _consumer_of(net, groups, g, None), cfg, csr=shape.csrs[0])
                if rows != shape.rows:
                    shape = _row_parallel_shape(layer, col_address, cfg, base, rows)
            if may_split:
                alt = _split_shape(layer, col_address, cfg, base)
                if shape is None or alt.cycles(cfg) < shape.cycles(cfg):
                    shape = alt
            if shapes and not shape.split:
                rows = order_by_readiness(shape, shapes[-1], cfg)
                if rows != shape.rows:
                    shape = _row_parallel_shape(layer, col_address, cfg, base, rows)
            src = None
        shape.net_index = pk if pk is not None else k
        shapes.append(shape)
        col_address = shape.out_address
    return shapes, max(need), input_address


#: how much slower than the fastest width the chosen delta width may be (gap fillers cost cycles,
#: at every position of a conv layer)
DELTA_CYCLE_SLACK = 0.02


def choose_delta_bits(shapes: list[LayerShape], cfg: ArchConfig, family: str | None = None,
                      max_bits: int = 16, memory_first: bool = False) -> int:
    """Pass: the delta width, over the layout, in one sweep of the widths (no re-planning).
    Among the widths within :data:`DELTA_CYCLE_SLACK` of the fewest cycles (a narrow width pays
    gap fillers, at every position of a conv layer; ``memory_first``: among all widths), the
    smallest weight memory in bits (fewest words on ties); for a device ``family``, the fewest
    block RAMs of the weight memories first (words must fit the block RAM shapes, which bits
    alone do not see), then bits, then cycles."""
    options = []
    for d in range(1, max_bits + 1):
        c = replace(cfg, delta_bits=d)
        per_layer = [sh.pe_words(c) for sh in shapes]
        depth = [sum(w[p] for w in per_layer) for p in range(cfg.pes)]
        words = sum(depth)
        cycles = sum(max(w) * sh.positions for w, sh in zip(per_layer, shapes))
        key = (words * word_bits(c), words)
        if family is not None:
            bram = sum(memory_blocks(word_bits(c), max(1, dp), family, rom=True) for dp in depth)
            key = (bram, words * word_bits(c), cycles)
        options.append((key, cycles, d))
    fastest = min(cycles for _, cycles, _ in options)
    if not memory_first:
        options = [o for o in options if o[1] <= fastest * (1 + DELTA_CYCLE_SLACK)]
    return min(options)[2]


def _scale_of(v, rows: np.ndarray) -> np.ndarray:
    """A mult or shift (one, or one per row) for the listed rows (-1: padding, 0)."""
    real = rows >= 0
    if np.ndim(v) == 0:
        return np.where(real, int(v), 0)
    return np.where(real, np.asarray(v, dtype=np.int64)[np.where(real, rows, 0)], 0)


def encode_layer(k: int, layer: QuantLayer, shape: LayerShape, cfg: ArchConfig, scales: bool = False) -> LayerPlan:
    """Pass: one layer's weight words and bias entries per PE, at ``cfg``'s delta width, in the
    layout ``shape`` gives. A row-parallel PE encodes its rows (a padding row: one word of zero
    entries, bias 0 and a zero candidate; its output is never read); a column-split PE encodes,
    for every row, the entries in its address range (deltas from the range start), its bias entry
    the row's bias (PE 0 only) and whether the row has a zero weight among the range's columns.
    A conv layer's PEs are padded to the same words per position with zero words (before the
    last word of their last row: they add 0, and MAM ignores them). With ``scales`` (a program
    with per-row scales), every bias entry also carries its row's mult and shift."""
    words, bias, row_words, pe_nnz = [], [], [], []
    target = max(shape.pe_words(cfg)) if shape.geom is not None else None
    for p in range(cfg.pes):
        csr = shape.csrs[p] if shape.split else shape.csrs[0]
        rows = shape.rows[p]
        w_p, rw_p = _encode_rows(csr, rows, cfg)
        if target is not None and len(w_p) < target:
            extra = target - len(w_p)
            w_p = w_p[:-1] + [0] * extra + w_p[-1:]
            rw_p = rw_p[:-1] + [rw_p[-1] + extra]
        nnz_row = np.diff(csr.indptr)
        r = np.asarray(rows, dtype=np.int64)
        if shape.split:
            b = layer.bias.astype(np.int64) if p == 0 else np.zeros(layer.rows, dtype=np.int64)
            zc = nnz_row < shape.in_range[p]
            pe_nnz.append(int(nnz_row.sum()))
        else:
            real = r >= 0
            safe = np.where(real, r, 0)
            b = np.where(real, layer.bias[safe], 0)
            zc = np.where(real, nnz_row[safe] < layer.cols, 1)        # the row has a pruned weight
            pe_nnz.append(int(nnz_row[r[real]].sum()))
        values = {"bias": b, "zero_candidate": zc}
        if scales:
            values["mult"], values["shift"] = _scale_of(layer.mult, r), _scale_of(layer.shift, r)
        bias.append(pack(bias_word_fields(cfg, scales), values))
        words.append(w_p)
        row_words.append(rw_p)
    overhead = layer_overhead(cfg) + (split_overhead(cfg) if shape.split else 0)
    positions = shape.positions
    out_values = shape.out.positions * layer.rows if shape.out is not None else layer.rows
    return LayerPlan(k, layer.mode, layer.rows, layer.cols, layer.nnz, layer.mult, layer.shift, layer.relu,
                     layer.rows if shape.split else len(shape.rows[0]), shape.rows, words, bias, row_words,
                     shape.out_address, cycles_model=positions * max(len(w) for w in words) + overhead,
                     cycles_bound=bound_cycles(layer.nnz * positions, out_values, cfg), pe_nnz=pe_nnz,
                     split=shape.split, col_ranges=shape.ranges, geom=shape.geom, out=shape.out,
                     net_index=shape.net_index, kind=layer.kind, act_max=layer.act_max, rounding=layer.rounding,
                     weight_bits=weight_bits_of([layer.weight]))


def fifo_depths(program) -> list[int]:
    """Per PE, the result FIFO depth that never fills: the largest number of results a PE
    has produced that the slowest PE has not yet matched, over every layer (a conv layer over
    two positions: its PEs read as many words per position, so the pattern repeats)."""
    P = program.config.pes
    depth = [1] * P
    for plan in program.layers:
        reps = 2 if plan.geom is not None and plan.geom.positions > 1 else 1
        finish = [np.cumsum(plan.row_words[p] * reps) for p in range(P)]   # cycle of each row's result
        pop = np.max(np.stack(finish), axis=0) + 1                   # when row t leaves every FIFO
        for p in range(P):
            for t, f in enumerate(finish[p]):
                held = t + 1 - int(np.searchsorted(pop, f, side="right"))
                depth[p] = max(depth[p], held + 1)
    return depth


def memory_use(program: Program, family: str | None) -> dict:
    """Bits and block RAMs of each memory of the accelerator, as the RTL builds them
    (mamfpga.hw.pe) and yosys maps them (:func:`mamfpga.compile.device.memory_blocks`):
    per PE a weight memory (its own words), a bias memory, and an activation memory in L banks
    of max(1, P / L) activations a row, both ping-pong sides, the depth a power of two. The board top adds its own FIFOs (the board flow's fit check
    counts them in the synthesized design)."""
    cfg = program.config
    P, L = cfg.pes, cfg.lanes
    depth_w = [max(2, sum(l.pe_words[p] for l in program.layers)) for p in range(P)]   # as hw/pe.py pads them
    depth_b = [max(2, sum(len(l.bias[p]) for l in program.layers)) for p in range(P)]
    B = bank_bytes(cfg)
    bank_depth = 2 * act_side_words(program.widest, P, L) * P // (L * B)
    modes = {l.mode for l in program.layers}
    kinds = {(l.split, l.mode) for l in program.layers}
    wb, bb = low_word_bits(cfg), bias_bits(cfg, program.scales)
    bb_used = bias_bits_used(cfg, modes, program.scales)
    images = [program.weight_images(p) for p in range(P)]
    words_b = [[b for l in program.layers for b in l.bias[p]] for p in range(P)]
    mems = {
        "weights": {"copies": P, "width": wb, "depths": depth_w, "rom": True, "enables": 0,
                    "widths": [rom_width(lo, (1 << wb) - 1) for lo, _, _ in images]},
        "bias": {"copies": P, "width": bin(bb_used).count("1"), "depths": depth_b, "rom": True, "enables": 0,
                 "widths": [rom_width(b, bb_used) for b in words_b]},
        # every PE reads its own copy, in L banks (a lane's bank: its address mod L), both
        # ping-pong sides in each, written a byte (activation) at a time
        "activations": {"copies": P * L, "width": 8 * B, "depths": [bank_depth] * (P * L), "rom": False,
                        "enables": B} if not cfg.lane_copies else
        # with lane copies: each lane of each PE its own copy, P activations a word
        {"copies": P * L, "width": 8 * P, "depths": [2 * act_side_words(program.widest, P)] * (P * L),
         "rom": False, "enables": P},
        # the upper weight bits of the layers wider than low_bits (none without them)
        **({"weights_high": {"copies": P, "width": hb, "depths": [max(2, len(hi)) for _, hi, _ in images], "rom": True,
                             "enables": 0, "widths": [rom_width(hi, (1 << hb) - 1) for _, hi, _ in images]}}
           if (hb := high_word_bits(cfg)) else {}),
        # each PE's result FIFO (the fields some layer reads); in logic where block RAM cannot serve it
        "results": {"copies": P, "width": sum(w for _, w in result_fields(cfg, kinds, program.scales)),
                    "depths": fifo_depths(program), "rom": False, "enables": 1,
                    "logic": not results_may_use_block_ram(kinds)},
    }
    del bb
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
            "weight_bits_per_nnz": ((mems["weights"]["bits"] + mems.get("weights_high", {}).get("bits", 0)) / nnz)
            if nnz else None}


def check_capacity(program: Program, device: Device) -> dict:
    """:func:`memory_use` on ``device``, or :class:`MemoryFitError` naming what does not fit."""
    use = memory_use(program, device.family)
    if use["bram"] > device.bram:
        parts = ", ".join(f"{name} {m['bram']}" for name, m in use["memories"].items() if m["bram"])
        raise MemoryFitError(f"the program needs {use['bram']} block RAMs ({parts}); the {device.name} "
                             f"has {device.bram}, {use['bram'] - device.bram} too few (fewer PEs or lanes, "
                             "or more pruning, would fit)")
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
    side_bytes: int = 0                  # bytes of one activation buffer side
    input_address: np.ndarray | None = None   # where each input value goes (side 0)
    plans: list[LayerPlan] | None = None
    program: Program | None = None


def supported(net: QuantNetwork) -> QuantNetwork:
    """``net`` as the accelerator runs it, else CompileError naming the layer: dense and conv2d
    layers (a conv reads a feature map: the input or a conv's, as the format has it), a max pool
    right after a conv with its stride equal to its kernel (fused into the conv's output). A per-row mult or shift
    array whose entries are all equal becomes that one value."""
    layers, changed = [], False
    for k, l in enumerate(net.layers):
        prev = net.layers[k - 1].kind if k else None
        if l.kind == "maxpool2d":
            if prev != "conv2d":
                raise CompileError(f"layer{k} is a max pool after {'the input' if prev is None else 'a ' + prev}"
                                   " layer; the accelerator fuses a max pool into the conv layer before it")
            if tuple(l.kernel) != tuple(l.stride):
                raise CompileError(f"layer{k} is a {l.kernel[0]} x {l.kernel[1]} max pool with stride "
                                   f"{l.stride[0]} x {l.stride[1]}; the accelerator fuses pools whose stride "
                                   "equals their kernel (non-overlapping windows)")
        if l.per_channel and np.unique(np.asarray(l.mult)).size == 1 and np.unique(np.asarray(l.shift)).size == 1:
            l, changed = replace(l, mult=int(np.ravel(l.mult)[0]), shift=int(np.ravel(l.shift)[0])), True
        layers.append(l)
    if not changed:
        return net
    return QuantNetwork(layers, net.input_scale, net.output_scale, net.extra,
                        input_shape=net.input_shape if len(net.input_shape) == 3 else None)


def _eliminate(c: Compilation) -> None:
    c.source = supported(c.source)
    c.net, c.index, c.eliminated = eliminate(c.source)


def _prove_accumulators(c: Compilation) -> None:
    need = [required_acc_bits(l, input_max(c.net.layers, k)) for k, l in enumerate(c.net.layers)]
    acc = c.acc_bits if c.acc_bits is not None else max(8, max(need))
    if acc > 40:
        # 40 bits hold any layer of the contract (int32 bias, 65536 int8 inputs need 34), and
        # keep acc * mult within 64 bits for the golden model and the requantizer alike
        raise CompileError(f"the network needs a {max(need)}-bit accumulator; the accelerator supports "
                           "at most 40")
    # weights are stored as narrow as the network's widest layer needs (sign-extended to 8 bits
    # as they leave the memory): a network of 4-bit weights packs 4 bits per weight (narrower
    # layers narrower still: _choose_low_bits); the requantizers' mult as wide as the widest
    # (16 bits, more for an imported model's scales)
    wbits = weight_bits_of([l.weight for l in c.net.layers])
    c.cfg = replace(c.cfg, weight_bits=wbits, acc_bits=acc, mult_bits=mult_bits_of(c.net.layers))
    prove_accumulators(c.net, acc)


#: the delta width layers are laid out (rows balanced, kinds chosen) at: no gap fillers, so the
#: balance is of the nonzeros the lanes hold. At the default width (4) the fillers were not those
#: of the width chosen later (6 on the digits network), and PEs balanced at 4 differed by up to
#: 12 words at 6
LAYOUT_DELTA_BITS = 16


def _plan_layers(c: Compilation) -> None:
    layout = replace(c.cfg, delta_bits=LAYOUT_DELTA_BITS)
    c.shapes, c.side_bytes, c.input_address = plan_layers(c.net, layout, c.split)


def _choose_delta_bits(c: Compilation) -> None:
    if c.delta_bits is None:
        c.delta_bits = choose_delta_bits(c.shapes, c.cfg, c.device.family if c.device else None)
    c.cfg = replace(c.cfg, delta_bits=c.delta_bits)


def _encode(c: Compilation) -> None:
    scales = any(l.per_channel for l in c.net.layers)
    c.plans = [encode_layer(g, c.net.layers[k], shape, c.cfg, scales)
               for g, ((k, _), shape) in enumerate(zip(hw_layers(c.net), c.shapes))]
    for plan, (k, _) in zip(c.plans, hw_layers(c.net)):
        plan.in_unsigned = input_max(c.net.layers, k) > 128      # it reads unsigned bytes
    extra = c.source.extra
    src_index = np.asarray(extra["input_index"]) if "input_index" in extra else None
    input_index = src_index[c.index] if src_index is not None else c.index
    c.program = Program(c.cfg, c.net, c.source, input_index, c.index, c.plans, c.plans[-1].out_address,
                        c.eliminated, split=c.split, device=c.device, side_bytes=c.side_bytes, scales=scales,
                        input_address=c.input_address)
    schedule(c.program)


def _choose_low_bits(c: Compilation) -> None:
    """Pass: per-layer weight widths. Where layers' weights differ in width, each candidate
    narrow width b (a narrower layer's) stores the layers that fit b bits b wide and the wider
    layers' upper bits in an extension memory; kept if it needs fewer block RAMs (with a device),
    else fewer bits, than one memory at the widest width."""
    widths = sorted({plan.weight_bits for plan in c.plans if plan.nnz})
    best, best_key = 0, None
    for b in [0] + [w for w in widths if w < c.cfg.weight_bits]:
        c.program.config = replace(c.cfg, low_bits=b)
        use = memory_use(c.program, c.device.family if c.device is not None else None)
        bits = sum(m["bits"] for k, m in use["memories"].items() if k.startswith("weights"))
        key = ((use["bram"], bits) if c.device is not None else (bits,))
        if best_key is None or key < best_key:
            best, best_key = b, key
    c.cfg = c.program.config = replace(c.cfg, low_bits=best)


def _check_capacity(c: Compilation) -> None:
    c.program.memory = (check_capacity(c.program, c.device) if c.device is not None
                        else memory_use(c.program, None))


#: the compiler, in order: each pass reads what the ones before it added to the Compilation
PASSES = [_eliminate, _prove_accumulators, _plan_layers, _choose_delta_bits, _encode, _choose_low_bits,
          _check_capacity]


def compile_network(net: QuantNetwork, cfg: ArchConfig | None = None, *, device: Device | None = None,
                    delta_bits: int | None = None, acc_bits: int | None = None,
                    split: str = "auto") -> Program:
    """``net`` compiled for the architecture ``cfg`` (P, L; the widths are the compiler's unless
    given): the :data:`PASSES` in order. With a ``device``, the delta width is the one needing
    the fewest block RAMs (among those within a slack of the fewest cycles, or of all if that one
    does not fit), and the program must fit (:class:`MemoryFitError`). With ``pack_rows`` and no
    row that shares a word, the program is compiled without it (the PE would build its split
    trees for nothing)."""
    cfg = cfg or ArchConfig()
    program = _compile(net, cfg, device, delta_bits, acc_bits, split)
    if cfg.packs and not program.shares_words:
        program = _compile(net, replace(cfg, pack_rows=False), device, delta_bits, acc_bits, split)
    return program


def _compile(net, cfg, device, delta_bits, acc_bits, split) -> Program:
    c = Compilation(net, cfg, device, split, delta_bits, acc_bits)
    for run in PASSES[:-1]:
        run(c)
    try:
        _check_capacity(c)
    except MemoryFitError:
        if delta_bits is not None or device is None:
            raise
        # the width chosen for cycles needs too much memory: the one needing the least, if another
        c.delta_bits = choose_delta_bits(c.shapes, c.cfg, device.family, memory_first=True)
        if c.delta_bits == c.cfg.delta_bits:
            raise
        _choose_delta_bits(c)
        _encode(c)
        _choose_low_bits(c)
        _check_capacity(c)
    return c.program
