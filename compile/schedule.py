"""When each layer starts: consecutive layers overlap, exactly as the RTL runs them.

A layer alone takes ``positions x max words + layer_overhead`` cycles from its start to its
last write (:func:`alone_cycles`). The next layer need not wait for that write: its PEs start
as soon as (all counted from the layer's start, ``d`` the next layer's start):

1. every PE has fetched its last word of this layer (``d >= max words + 1``: a PE's fetch of the
   next layer begins the cycle after its start);
2. every activation a nonzero weight of the next layer reads is written before the read:
   word ``j`` a PE fetches (over all positions) is fetched at ``d + 1 + j`` and its activation
   address is presented at ``d + 4 + j`` (weight read, weight register, decode register), and
   the memories' reads are not transparent, so a value written (``aw``) at ``w`` needs
   ``d + 4 + j >= w + 1``;
3. the next layer's first result reaches the write stage after this layer's last one (the write
   side switches layers between them; a split layer's results take the cross-PE tree, a
   row-parallel one's do not, so without this a split layer's last write could meet the next
   layer's first).

Results leave the PEs in order, one step at a time: step t of a row-parallel layer (row t of
every PE, at each position in turn) is written ``alone - 1 - (fin_last - fin(t))`` cycles after
the layer's start, ``fin(t)`` the words the slowest PE has fetched when its row t is done; a
split layer's row t likewise. This is the RTL's timing with no stalls, which never happen
inside an inference (the result FIFOs never fill: :func:`mamfpga.compile.passes.fifo_depths`;
the input stream stalls only before the first layer starts, and a stalled output stream delays
the outputs, nothing else).

:func:`schedule` sets each layer's ``cycles_model`` to its start-to-next-start distance (the last
layer: to its first output beat, :func:`output_start`, the outputs streaming out as they are
written) and ``overlap`` to the cycles saved; the program's cycle model is their sum with the
input and output streams, as before. The sequencer (mamfpga.hw.accelerator) starts layer k + 1
``cycles_model_k`` cycles after layer k, and the output stream ``cycles_model`` cycles after the
last layer's start.
"""

from __future__ import annotations

import numpy as np

from mamfpga.compile.arch import decode_stream, layer_overhead, split_overhead

__all__ = ["alone_cycles", "write_times", "read_addresses", "start_distance", "output_start", "schedule",
           "FETCH_TO_READ"]

#: cycles from a layer's start to the presentation of the activation address of its first word
#: (start, fetch, weight read, weight register, decode register: mamfpga.hw.pe S0 -> S1b). With
#: 5, a layer would start a cycle early and read a value in the cycle it is written, getting the
#: old one: tests/hw/test_accelerator.py fails then (measured)
FETCH_TO_READ = 4

_NEVER = np.iinfo(np.int64).min // 4


def alone_cycles(plan, cfg) -> int:
    """Cycles from a layer's start to the cycle after its last write, nothing overlapping it."""
    return (plan.positions * max(len(w) for w in plan.words) + layer_overhead(cfg)
            + (split_overhead(cfg) if plan.split else 0))


def _finish(plan) -> np.ndarray:
    """Words the slowest PE has fetched when each step's results are all done, in step order
    (a row-parallel layer: position-major, then row; a split one: rows)."""
    cums = [np.cumsum(np.asarray(rw, dtype=np.int64)) for rw in plan.row_words]
    per_pos = np.max(np.stack(cums), axis=0)
    if plan.split or plan.positions == 1:
        return per_pos
    words = max(len(w) for w in plan.words)
    assert all(int(c[-1]) == words for c in cums), "a conv layer's PEs are padded to the same words"
    return (np.arange(plan.positions, dtype=np.int64)[:, None] * words + per_pos[None, :]).ravel()


def write_times(plan, cfg) -> tuple[np.ndarray, np.ndarray, int]:
    """(byte addresses, the cycle each is written, counted from the layer's start), and the
    cycle of the layer's first result at the write stage (a pooled layer's first result is not
    written)."""
    P = cfg.pes
    fin = _finish(plan)
    alone = alone_cycles(plan, cfg)
    at = alone - 1 - (int(fin[-1]) - fin)          # each step's write (or, pooled, its result + 1)
    first_result = int(at[0]) - 1
    if plan.split:
        return np.asarray(plan.out_address, dtype=np.int64), at, first_result
    out = plan.out
    R = len(plan.row_words[0])
    steps = at.reshape(-1, R)                      # [walk position, row]
    if out.window > 1:                             # a pool writes at each window's last position
        steps = steps[out.window - 1::out.window]
    words = out.words()
    t = steps.ravel()
    assert len(t) == len(words), "the write counters and the result steps disagree"
    addr = (words[:, None] * P + np.arange(P)[None, :]).ravel()
    return addr, np.repeat(t, P), first_result


def read_addresses(plan, p: int, cfg) -> tuple[np.ndarray, np.ndarray]:
    """PE ``p``'s reads in one layer that matter (lanes with a nonzero weight): (fetch index
    over all positions, byte address), as arrays. Each lane's column is its deltas summed since
    the row started (:func:`mamfpga.compile.arch.lane_column`)."""
    L, copies = cfg.lanes, cfg.lane_copies
    words = plan.words[p]
    n = len(words)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, q, w = decode_stream(words, cfg)
    idx, rel = [], []
    for k in range(L):
        keep = np.flatnonzero(w[:, k] != 0)
        idx.append(keep)
        rel.append(q[keep, k] if copies else k + L * q[keep, k])
    idx, rel = np.concatenate(idx), np.concatenate(rel)
    if plan.geom is not None:
        origins = plan.geom.origins().astype(np.int64)
        j = (np.arange(len(origins), dtype=np.int64)[:, None] * n + idx[None, :]).ravel()
        return j, (origins[:, None] + rel[None, :]).ravel()
    origin = plan.col_ranges[p] if plan.split else 0
    return idx, origin + rel


def start_distance(plan, nxt, cfg, side_bytes: int) -> int:
    """Cycles from ``plan``'s start to the start of ``nxt`` (the layer reading its output), the
    fewest the three rules of this module allow."""
    d = max(len(w) for w in plan.words) * plan.positions + 1          # rule 1
    addr, when, _ = write_times(plan, cfg)
    written = np.full(side_bytes + 1, _NEVER, dtype=np.int64)
    np.maximum.at(written, np.minimum(addr, side_bytes), when)
    for p in range(cfg.pes):                                           # rule 2
        j, a = read_addresses(nxt, p, cfg)
        if len(j):
            w = written[np.clip(a, 0, side_bytes)]
            d = max(d, int(np.max(w + 1 - FETCH_TO_READ - j)))
    _, _, first = write_times(nxt, cfg)                               # rule 3
    last = alone_cycles(plan, cfg) - 2                                # this layer's last result
    return max(d, last + 1 - first)


def output_start(plan, cfg, output_address) -> int:
    """Cycles from the last layer's start to its first output beat: output r goes out at that
    start + r (one a cycle, the host never stalling), after the write of its value (the output
    memory is read combinationally: a value written at ``w`` can go out at ``w + 1``)."""
    addr, when, _ = write_times(plan, cfg)
    written = dict(zip(addr.tolist(), when.tolist()))
    return max(written[int(a)] + 1 - r for r, a in enumerate(output_address))


def schedule(program) -> None:
    """Each layer's start-to-next-start distance into its ``cycles_model`` (``overlap``: the
    cycles by which it is shorter than the layer alone); the last layer's, to its first output
    beat (the outputs stream out while it drains)."""
    cfg = program.config
    plans = program.layers
    for k, plan in enumerate(plans):
        alone = alone_cycles(plan, cfg)
        d = (start_distance(plan, plans[k + 1], cfg, program.side_bytes) if k + 1 < len(plans)
             else output_start(plan, cfg, program.output_address))
        assert d <= alone, f"layer {k}: the next layer would start {d} cycles in, later than alone ({alone})"
        plan.cycles_model, plan.overlap = d, alone - d
