"""A functional model of the accelerator that reads only the compiled memory images.

It decodes each PE's weight words (delta-coded columns, end-of-row bits, gap
fillers, padding) and bias entries (bias, zero-candidate bit) the way the RTL
does, moves activations through the address map (t * P + p, or r for a
column-split layer), and reads the outputs through the output table. Tests
hold it to the golden model: it proves the compiler's encoding before any
hardware exists, and is the reference the RTL's internals are debugged against.
"""

from __future__ import annotations

import numpy as np

from mamfpga.compile.arch import bias_word_fields, unpack, weight_word_fields
from mamfpga.compile.ir import Program
from mamfpga.sw import golden
from mamfpga.sw.golden import requantize_values

__all__ = ["run_program", "run_program_layers", "first_differing_layer", "first_difference"]


def _decode(word: int, cfg) -> tuple[list[tuple[int, int]], bool]:
    f = unpack(weight_word_fields(cfg), word)
    return [(f[f"delta{k}"], f[f"weight{k}"]) for k in range(cfg.lanes)], bool(f["eor"])


def _run_rows(words: list[int], biases: list[int], acts: np.ndarray, mode: str, cfg, origin: int = 0):
    """Yield (bias, partial) per row of one PE: partial = sum, or (max, min) / None if no candidate."""
    pos = 0
    for entry in biases:
        f = unpack(bias_word_fields(cfg), entry)
        b, zc = f["bias"], bool(f["zero_candidate"])
        col = origin
        total, hi, lo = 0, None, None
        if zc and mode == "mam":
            hi = lo = 0
        while True:
            entries, eor = _decode(words[pos], cfg)
            pos += 1
            for delta, w in entries:
                col += delta
                p = w * int(acts[col]) if w != 0 else 0
                if mode == "mac":
                    total += p
                elif w != 0:              # MAM ignores zero-weight lanes (fillers, padding)
                    hi = p if hi is None else max(hi, p)
                    lo = p if lo is None else min(lo, p)
            if eor:
                break
        yield b, (total if mode == "mac" else (hi, lo))


def run_program(program: Program, x_int8: np.ndarray) -> np.ndarray:
    """Outputs [B, M_last] int8 for inputs already selected to the program's input columns."""
    return run_program_layers(program, x_int8)[-1]


def run_program_layers(program: Program, x_int8: np.ndarray) -> list[np.ndarray]:
    """Every layer's int8 output [B, M_k], rows in the order of ``program.net`` (read back
    through each layer's address map), for inputs selected to the program's input columns."""
    cfg = program.config
    x_int8 = np.asarray(x_int8)
    per_layer: list[list[np.ndarray]] = [[] for _ in program.layers]
    for sample in x_int8:
        acts = sample.astype(np.int64)
        for k, plan in enumerate(program.layers):
            size = plan.rows if plan.split else plan.rows_per_pe * cfg.pes
            nxt = np.zeros(size, dtype=np.int64)
            if plan.split:
                rows = [list(_run_rows(plan.words[p], plan.bias[p], acts, plan.mode, cfg, plan.col_ranges[p]))
                        for p in range(cfg.pes)]
                for r in range(plan.rows):
                    b = sum(rows[p][r][0] for p in range(cfg.pes))
                    parts = [rows[p][r][1] for p in range(cfg.pes)]
                    if plan.mode == "mac":
                        acc = b + sum(parts)
                    else:
                        acc = b + max(h for h, _ in parts if h is not None) + min(l for _, l in parts if l is not None)
                    nxt[r] = requantize_values(acc, plan.mult, plan.shift, plan.relu)
            else:
                for p in range(cfg.pes):
                    for t, (b, part) in enumerate(_run_rows(plan.words[p], plan.bias[p], acts, plan.mode, cfg)):
                        acc = b + (part if plan.mode == "mac" else part[0] + part[1])
                        nxt[t * cfg.pes + p] = requantize_values(acc, plan.mult, plan.shift, plan.relu)
            acts = nxt
            per_layer[k].append(acts[plan.out_address])
    return [np.array(o, dtype=np.int8).reshape(len(x_int8), plan.rows) for o, plan in zip(per_layer, program.layers)]


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
    return first_difference(run_program_layers(program, x_int8), golden.run_layers(program.net, x_int8))
