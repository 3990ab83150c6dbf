"""cocotb testbench for the generated accelerator (top ``mamfpga_accel``).

Config (MAMFPGA_TB_CONFIG): inputs (.npy int8 [B, N_0], the program's input
columns), n_out, results (.json to write), gap_prob, stall_prob, seed,
max_cycles (watchdog). It streams every sample in and every output out
(random input gaps and output back-pressure when asked), and records the
outputs, the cycles of each inference (first input beat to last output beat)
and, from the ``phase``/``layer`` status outputs, the cycles of each layer of
the first inference. Python does no work on cycles where nothing happens.
Comparison with the golden model is the caller's (mamfpga.sim.cosim).
"""

from __future__ import annotations

import json
import random

import cocotb
import numpy as np
from cocotb.triggers import Edge, First, ReadOnly
from cocotb.utils import get_sim_time

from mamfpga.sim.runner import env_config
from mamfpga.sim.tb import TB, StreamSink, StreamSource

PERIOD_NS = 10


def _cycle() -> int:
    return int(get_sim_time("ns") // PERIOD_NS)


async def _watch_layers(dut, events: list):
    """(cycle, phase, layer) at each change of the sequencer's status."""
    while True:
        await ReadOnly()
        phase, layer = dut.phase.value, dut.layer.value
        if phase.is_resolvable and layer.is_resolvable:      # Icarus: X until first evaluated
            events.append((_cycle(), int(phase), int(layer)))
        await First(Edge(dut.phase), Edge(dut.layer))


@cocotb.test()
async def run_inputs(dut):
    cfg = env_config()
    x = np.load(cfg["inputs"])
    n_in, n_out = x.shape[1], cfg["n_out"]
    rng = random.Random(cfg.get("seed", 0))
    tb = TB(dut, period_ns=PERIOD_NS)
    src = StreamSource(dut, "i", gap_prob=cfg.get("gap_prob", 0.0), rng=random.Random(rng.random()))
    sink = StreamSink(dut, "o", stall_prob=cfg.get("stall_prob", 0.0), rng=random.Random(rng.random()))
    await tb.reset()

    starts, ends, events = {}, {}, []
    src.on_accept = lambda k: starts.setdefault(k // n_in, _cycle() - 1) if k % n_in == 0 else None
    sink.on_item = lambda k: ends.__setitem__(k // n_out, _cycle()) if k % n_out == n_out - 1 else None
    cocotb.start_soon(_watch_layers(dut, events))
    cocotb.start_soon(src.send([int(v) & 0xFF for v in x.reshape(-1)]))
    await tb.run_with_watchdog(sink.collect(len(x) * n_out, signed_bits=8), max_cycles=cfg["max_cycles"],
                               what=f"the accelerator ({len(x)} samples)")

    # per-layer cycles of the first inference: from a layer's start to the next phase change
    layers, first_out = [], None
    for c, phase, layer in events:
        if phase == 2 and first_out is None:
            first_out = c
        if first_out is None and phase == 1 and (not layers or layers[-1]["layer"] != layer):
            layers.append({"layer": layer, "start": c})
    cycles_layers = []
    bounds = [e["start"] for e in layers] + ([first_out] if first_out is not None else [])
    for e, nxt_start in zip(layers, bounds[1:]):
        cycles_layers.append(nxt_start - e["start"])
    results = {
        "outputs": np.array(sink.items, dtype=np.int64).reshape(len(x), n_out).tolist(),
        "cycles": [ends[s] - starts[s] + 1 for s in range(len(x))],   # both end beats included
        "layer_cycles": cycles_layers,
    }
    with open(cfg["results"], "w") as f:
        json.dump(results, f)
