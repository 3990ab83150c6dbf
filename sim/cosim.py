"""Co-simulation of a compiled build: the generated Verilog under cocotb, against the golden model.

:func:`cosimulate` runs a build's ``accelerator.v`` on Verilator (or Icarus),
streams every input through it, and compares each output with the golden
model. The first mismatch is named by sample and output neuron; the golden
model's and the program's per-layer activations then name the first layer
where the compiled program departs from the contract (the RTL's own layers
are not observable from its ports).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mamfpga.sim.runner import SimResult, run_cocotb

__all__ = ["CosimResult", "cosimulate", "HostLinkResult", "cosimulate_hostlink"]


@dataclass
class CosimResult:
    simulator: str
    outputs: np.ndarray            # int8 [B, M]
    expected: np.ndarray           # the golden model's
    cycles: list[int]              # per sample, first input beat to last output beat
    layer_cycles: list[int]        # first sample, per layer
    sim: SimResult
    mismatches: int = 0
    first_mismatch: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


def cosimulate(program, build: Path, x_net: np.ndarray, *, simulator: str = "verilator",
               waves: bool = False, gap_prob: float = 0.0, stall_prob: float = 0.0, seed: int = 0,
               work: Path | None = None) -> CosimResult:
    """Run ``x_net`` (inputs of the source QuantNetwork: int8, or float through input_scale)
    through ``build/accelerator.v``; compare with the golden model."""
    from mamfpga.sw import golden

    build = Path(build).resolve()          # cocotb runs the testbench from the build folder
    xq = golden.prepare_inputs(program.source, x_net)
    expected = golden.run(program.source, xq)
    work = Path(work).resolve() if work is not None else build / f"sim_{simulator}"
    work.mkdir(parents=True, exist_ok=True)
    inputs = work / "inputs.npy"
    np.save(inputs, np.ascontiguousarray(xq[:, program.columns]))
    results = work / "results.json"
    if results.exists():
        results.unlink()
    n = len(xq)
    res = run_cocotb(
        verilog_sources=[build / "accelerator.v"], toplevel="mamfpga_accel",
        test_module="mamfpga.sim.tb_accelerator", build_dir=work, simulator=simulator, waves=waves,
        config={"inputs": str(inputs), "results": str(results), "n_out": program.net.output_size,
                "gap_prob": gap_prob, "stall_prob": stall_prob, "seed": seed,
                "max_cycles": n * (4 * program.cycles_per_inference + 1000) + 10_000})
    if not res.ok or not results.exists():
        raise RuntimeError(f"{simulator} co-simulation failed: {'; '.join(res.failures) or 'no results'} "
                           f"(log: {work / 'test.log'})")
    data = json.loads(results.read_text())
    outputs = np.array(data["outputs"], dtype=np.int8).reshape(n, program.net.output_size)
    out = CosimResult(simulator, outputs, expected, data["cycles"], data["layer_cycles"], res)
    bad = np.argwhere(outputs != expected)
    out.mismatches = int((outputs != expected).any(axis=1).sum())
    if len(bad):
        s, j = (int(v) for v in bad[0])
        out.first_mismatch = {"sample": s, "layer": len(program.layers) - 1, "neuron": j,
                              "got": int(outputs[s, j]), "expected": int(expected[s, j]),
                              "program_layer": _first_program_layer(program, xq[s:s + 1])}
    return out


def _first_program_layer(program, xq) -> int | None:
    """The first layer where the compiled program's activations (its memory images, run by
    :mod:`mamfpga.sw.progsim`) differ from the golden model's on the network the program
    computes (None: the program is right, so the RTL departs from it)."""
    from mamfpga.sw import golden
    from mamfpga.sw.progsim import run_program_layers

    x = xq[:, program.columns]
    got = run_program_layers(program, x)
    want = golden.run_layers(program.net, x)
    for k, (g, w) in enumerate(zip(got, want)):
        if not np.array_equal(g, w):
            return k
    return None


@dataclass
class HostLinkResult:
    info: bytes                    # the board's answer to '?'
    outputs: np.ndarray            # int8 [B, M], as received over the UART
    expected: np.ndarray           # the golden model's
    cycles: list[int]              # as the board counted them
    stray_answer: bytes            # what stray bytes while idle got back (nothing, if right)
    cut_answer: bytes              # what a frame cut short got back (nothing, if right)
    leds: int
    sim: SimResult

    @property
    def mismatches(self) -> int:
        return int((self.outputs != self.expected).any(axis=1).sum())


def cosimulate_hostlink(program, x_net: np.ndarray, work: Path, *, divisor: int = 8, ident: int = 0x5EED,
                        frame_timeout: int = 2000, simulator: str = "verilator") -> HostLinkResult:
    """The whole board top but the PLL (UART, command FSM, buffers, cycle counter, accelerator)
    under cocotb, driven bit by bit by a UART model speaking the host protocol."""
    from mamfpga.boards.top import BOARD_TOP_NAME, HostLinkTop
    from mamfpga.hw.verilog import write_verilog
    from mamfpga.sw import golden

    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    xq = golden.prepare_inputs(program.source, x_net)
    expected = golden.run(program.source, xq)
    top = HostLinkTop(program, divisor=divisor, ident=ident, frame_timeout=frame_timeout, stretch=64,
                      heartbeat_bit=6)
    verilog = write_verilog(top, BOARD_TOP_NAME, work / f"{BOARD_TOP_NAME}.v")
    inputs = work / "inputs.npy"
    np.save(inputs, np.ascontiguousarray(xq[:, program.columns]))
    results = work / "results.json"
    if results.exists():
        results.unlink()
    res = run_cocotb(verilog_sources=[verilog], toplevel=BOARD_TOP_NAME, test_module="mamfpga.sim.tb_hostlink",
                     build_dir=work / f"sim_{simulator}", simulator=simulator,
                     config={"inputs": str(inputs), "results": str(results), "n_out": program.net.output_size,
                             "divisor": divisor, "frame_timeout": top.frame_timeout})
    if not res.ok or not results.exists():
        raise RuntimeError(f"host link co-simulation failed: {'; '.join(res.failures) or 'no results'}")
    data = json.loads(results.read_text())
    outputs = np.array(data["outputs"], dtype=np.int8).reshape(len(xq), program.net.output_size)
    return HostLinkResult(bytes.fromhex(data["info"]), outputs, expected, data["cycles"],
                          bytes.fromhex(data["stray_answer"]), bytes.fromhex(data["cut_answer"]),
                          data["leds"], res)
