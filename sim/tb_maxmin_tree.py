"""cocotb testbench: MaxMinTree against a Python reference on random vectors.

Config (MAMFPGA_TB_CONFIG): width, lanes, vectors, seed, gap_prob, stall_prob.
Random values include the extremes of the signed range; random input gaps and
output back-pressure exercise the pipeline's stall logic.
"""

from __future__ import annotations

import random

import cocotb

from mamfpga.sim.runner import env_config
from mamfpga.sim.tb import TB, StreamSink, StreamSource, pack, unpack_signed


def random_vectors(rng: random.Random, width: int, lanes: int, count: int) -> list[list[int]]:
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    vectors = []
    for k in range(count):
        kind = k % 4
        if kind == 0:
            v = [rng.randint(lo, hi) for _ in range(lanes)]
        elif kind == 1:      # extremes and ties
            v = [rng.choice([lo, hi, 0, -1, 1]) for _ in range(lanes)]
        elif kind == 2:      # all equal
            v = [rng.randint(lo, hi)] * lanes
        else:                # narrow range: many ties
            v = [rng.randint(-2, 2) for _ in range(lanes)]
        vectors.append(v)
    return vectors


@cocotb.test()
async def maxmin_matches_reference(dut):
    cfg = env_config()
    width, lanes = cfg["width"], cfg["lanes"]
    rng = random.Random(cfg.get("seed", 0))
    vectors = random_vectors(rng, width, lanes, cfg.get("vectors", 500))

    tb = TB(dut)
    dut.lane_valid.value = (1 << lanes) - 1       # every lane valid (masks: tests/hw/test_maxmin_tree.py)
    src = StreamSource(dut, "i", gap_prob=cfg.get("gap_prob", 0.3), rng=random.Random(rng.random()))
    sink = StreamSink(dut, "o", stall_prob=cfg.get("stall_prob", 0.3), rng=random.Random(rng.random()))
    await tb.reset()
    cocotb.start_soon(src.send([pack(v, width) for v in vectors]))
    await tb.run_with_watchdog(sink.collect(len(vectors)), max_cycles=20 * len(vectors) + 100,
                               what="MaxMinTree output stream")

    for n, (v, word) in enumerate(zip(vectors, sink.items)):
        got_max, got_min = unpack_signed(word, width, 2)
        assert (got_max, got_min) == (max(v), min(v)), (
            f"vector {n} {v}: got max {got_max} min {got_min}, expected {max(v)} {min(v)}")
