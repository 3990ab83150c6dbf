"""A functional model of the accelerator that reads only the compiled memory images.

It decodes each PE's weight words (each lane's delta-coded columns, end-of-row bits, gap
fillers, padding) and bias entries (bias, zero-candidate bit) the way the RTL
does, moves activations through the address map (t * P + p, or r for a
column-split layer), and reads the outputs through the output table. Tests
hold it to the golden model: it proves the compiler's encoding before any
hardware exists, and is the reference the RTL's internals are debugged against.
"""

from __future__ import annotations

import numpy as np

from mamfpga.compile.arch import bias_word_fields, decode_stream, lane_column, unpack
from mamfpga.compile.ir import Program
from mamfpga.sw import golden
from mamfpga.sw.golden import requantize_values

__all__ = ["run_program", "run_program_layers", "golden_layers", "first_differing_layer", "first_difference"]


class _Stream:
    """One PE's words and bias entries of one layer, decoded once (its rows run at every
    position): each lane entry's row (:func:`mamfpga.compile.arch.lane_rows`: a shared word's
    upper half is the next row's), lane, q and weight, the zero-weight ones (fillers, padding)
    left out, and each row's bias fields."""

    def __init__(self, words: list[int], biases: list[int], cfg, scales: bool):
        row, q, w = decode_stream(words, cfg)
        nz = w != 0
        self.lane = np.broadcast_to(np.arange(cfg.lanes), w.shape)[nz]
        self.row, self.q, self.w = row[nz], q[nz], w[nz]
        self.fields = [unpack(bias_word_fields(cfg, scales), e) for e in biases]
        assert len(self.row) == 0 or int(self.row.max()) < len(self.fields), "more rows than bias entries"
        self.cfg = cfg

    def run(self, acts: np.ndarray, mode: str, origin: int = 0) -> list:
        """(bias word fields, partial) per row: partial = the sum, or (max, min) with None where
        nothing is a candidate."""
        cfg, n = self.cfg, len(self.fields)
        prod = self.w * acts[lane_column(origin, self.lane, self.q, cfg.lanes, cfg.lane_copies)].astype(np.int64)
        if mode == "mac":
            sums = np.bincount(self.row, weights=prod, minlength=n).astype(np.int64) if len(prod) \
                else np.zeros(n, dtype=np.int64)
            return [(f, int(v)) for f, v in zip(self.fields, sums)]
        big = 1 << 40
        hi, lo = np.full(n, -big, dtype=np.int64), np.full(n, big, dtype=np.int64)
        np.maximum.at(hi, self.row, prod)
        np.minimum.at(lo, self.row, prod)
        out = []
        for f, h, l in zip(self.fields, hi.tolist(), lo.tolist()):
            h, l = (None, None) if h == -big else (h, l)
            if f["zero_candidate"]:
                h = 0 if h is None else max(h, 0)
                l = 0 if l is None else min(l, 0)
            out.append((f, (h, l)))
        return out


def run_program(program: Program, x_int8: np.ndarray) -> np.ndarray:
    """Outputs [B, M_last] int8 for inputs already selected to the program's input columns."""
    return run_program_layers(program, x_int8)[-1]


def _run_rows(words: list[int], biases: list[int], acts: np.ndarray, mode: str, cfg, origin: int = 0,
              scales: bool = False) -> list:
    """(bias word fields, partial) per row of one PE's stream: :meth:`_Stream.run`."""
    return _Stream(words, biases, cfg, scales).run(acts, mode, origin)


def _row_parallel(program: Program, plan, acts: np.ndarray, dst: np.ndarray, streams: list) -> None:
    """One row-parallel layer (a conv layer at each of its positions, its pool fused): each PE
    runs its rows from the position's origin, the results requantized (the row's own mult and
    shift with per-row scales), pooled over the window, written at the addresses of ``plan.out``."""
    cfg, P = program.config, program.config.pes
    origins = plan.geom.origins() if plan.geom is not None else [0]
    R, window = plan.out.rows, plan.out.window
    words = plan.out.words()
    for p in range(P):
        y = np.zeros((len(origins), R), dtype=np.int64)
        stream = streams[p]
        for i, origin in enumerate(origins):
            for r, (f, part) in enumerate(stream.run(acts, plan.mode, int(origin))):
                acc = f["bias"] + (part if plan.mode == "mac" else part[0] + part[1])
                mult, shift = (f["mult"], f["shift"]) if program.scales else (plan.mult, plan.shift)
                y[i, r] = requantize_values(acc, mult, shift, plan.relu, plan.act_max, plan.rounding)
        y = y.reshape(-1, window, R).max(axis=1).ravel()       # the max pool, window by window
        dst[words * P + p] = y


def run_program_layers(program: Program, x_int8: np.ndarray) -> list[np.ndarray]:
    """Every hardware layer's int8 output [B, values] (the network's order: rows, or C, H, W),
    read back through its addresses, for inputs selected to the program's input columns. The two
    buffer sides persist from sample to sample, as the memories do (a border some write
    reached would show)."""
    cfg = program.config
    x_int8 = np.asarray(x_int8).reshape(len(x_int8), -1)
    per_layer: list[list[np.ndarray]] = [[] for _ in program.layers]
    sides = [np.zeros(program.side_bytes, dtype=np.int64) for _ in range(2)]
    streams = [[_Stream(plan.words[p], plan.bias[p], cfg, program.scales) for p in range(cfg.pes)]
               for plan in program.layers]
    for sample in x_int8:
        sides[0][program.input_address] = sample.astype(np.int64)
        for k, plan in enumerate(program.layers):
            acts, nxt = sides[k % 2], sides[(k + 1) % 2]
            if plan.split:
                rows = [streams[k][p].run(acts, plan.mode, plan.col_ranges[p]) for p in range(cfg.pes)]
                for r in range(plan.rows):
                    b = sum(rows[p][r][0]["bias"] for p in range(cfg.pes))
                    parts = [rows[p][r][1] for p in range(cfg.pes)]
                    if plan.mode == "mac":
                        acc = b + sum(parts)
                    else:
                        acc = b + max(h for h, _ in parts if h is not None) + min(l for _, l in parts if l is not None)
                    nxt[plan.out_address[r]] = requantize_values(acc, plan.mult, plan.shift, plan.relu,
                                                                  plan.act_max, plan.rounding)
            else:
                _row_parallel(program, plan, acts, nxt, streams[k])
            per_layer[k].append(nxt[plan.out_address].copy())
    # as bytes read as int8 (an act_max-255 layer's unsigned 200 is -56), as golden.run_layers gives them
    return [np.array(o, dtype=np.int64).astype(np.uint8).view(np.int8).reshape(len(x_int8), len(plan.out_address))
            for o, plan in zip(per_layer, program.layers)]


def golden_layers(program: Program, x_int8: np.ndarray) -> list[np.ndarray]:
    """The golden model's outputs of the network layers the hardware layers compute (a conv's
    fused pool: the pool's), flattened, for inputs selected to the program's input columns."""
    want = golden.run_layers(program.net, np.asarray(x_int8).reshape(len(x_int8), -1))
    return [want[plan.net_index] for plan in program.layers]


def first_difference(got: list[np.ndarray], want: list[np.ndarray]) -> int | None:
    """The first layer whose outputs differ between two per-layer lists (None: none does)."""
    for k, (g, w) in enumerate(zip(got, want)):
        if not np.array_equal(np.asarray(g, dtype=np.int64), np.asarray(w, dtype=np.int64)):
            return k
    return None


def first_differing_layer(program: Program, x_int8: np.ndarray) -> int | None:
    """The first layer where the program's memory images, run here, compute something else than
    the golden model on the network the program computes (None: the program is right), for
    inputs selected to the program's input columns."""
    return first_difference(run_program_layers(program, x_int8), golden_layers(program, x_int8))
