"""cocotb testbench for the generated accelerator (top ``mamfpga_accel``).

Config (MAMFPGA_TB_CONFIG): inputs (.npy int8 [B, N_0], the program's input
columns), n_out, results (.json to write), gap_prob, stall_prob, seed,
max_cycles (watchdog), progress (a file to write the samples done into, now
and then), capture (record every write into the activation
buffers while a layer runs, for :func:`mamfpga.sim.cosim.rtl_layer_outputs`). It streams every sample in and every output out
(random input gaps and output back-pressure when asked), and records the
outputs, the cycles of each inference (first input beat to last output beat)
and, from the ``phase``/``layer`` status outputs, the cycles of each layer of
the first inference. Python does no work on cycles where nothing happens.
Comparison with the golden model is the caller's (mamfpga.sim.cosim).
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.triggers import Edge, FallingEdge, First, ReadOnly
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


async def _capture_writes(dut, writes: list, addr_bits: int, pes: int):
    """(layer, addr, data, mask) of every activation-buffer write while a layer runs, read in
    the middle of the cycle that commits it. The ``aw`` port is one vector: en (bit 0), then
    addr, data (8 bits per PE) and mask, low bits first (mamfpga.hw.pe.act_write_layout)."""
    while True:
        await FallingEdge(dut.clk)
        await ReadOnly()
        aw = dut.aw.value
        if not aw.is_resolvable or not dut.phase.value.is_resolvable:
            continue
        aw = int(aw)
        if aw & 1 and int(dut.phase.value) in (1, 2):      # the last layer writes while outputs go out
            aw >>= 1
            addr, aw = aw & ((1 << addr_bits) - 1), aw >> addr_bits
            data, mask = aw & ((1 << 8 * pes) - 1), aw >> 8 * pes
            writes.append((int(dut.aw_layer.value), addr, data, mask))


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
    progress = cfg.get("progress")
    shown = [time.monotonic()]

    def on_item(k):
        if k % n_out == n_out - 1:
            ends[k // n_out] = _cycle()
            if progress and time.monotonic() - shown[0] > 0.25:      # samples done, for a progress bar
                shown[0] = time.monotonic()
                with open(progress + ".tmp", "w") as f:
                    f.write(str(k // n_out + 1))
                os.replace(progress + ".tmp", progress)

    sink.on_item = on_item
    cocotb.start_soon(_watch_layers(dut, events))
    writes: list = []
    if cfg.get("capture"):
        cocotb.start_soon(_capture_writes(dut, writes, cfg["aw_addr_bits"], cfg["pes"]))
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
        "writes": writes,
    }
    with open(cfg["results"], "w") as f:
        json.dump(results, f)
