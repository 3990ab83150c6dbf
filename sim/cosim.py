"""Co-simulation of a compiled build: the generated Verilog under cocotb, against the golden model.

:func:`cosimulate` runs a build's ``accelerator.v`` on Verilator (or Icarus),
streams every input through it, and compares each output with the golden
model. The first mismatch is named by sample and output neuron, and by the
first layer that went wrong twice over: in the RTL (the sample run again with
every write into the activation buffers captured, :func:`rtl_layer_outputs`)
and in the compiled program (its memory images run by
:mod:`mamfpga.compile.progsim`), each against the golden model's layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mamfpga import progress
from mamfpga.compile.ir import Program
from mamfpga.compile.progsim import first_difference, first_differing_layer, golden_layers
from mamfpga.hw.emit import TOP_NAME
from mamfpga.hw.pe import act_addr_bits_of
from mamfpga.sim.runner import SimResult, SimulationError, run_cocotb
from mamfpga.sw import golden

__all__ = ["CosimResult", "cosimulate", "rtl_layer_outputs", "HostLinkResult", "cosimulate_hostlink"]


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


def _run(program: Program, build: Path, xq: np.ndarray, work: Path, *, simulator: str, waves: bool = False,
         gap_prob: float = 0.0, stall_prob: float = 0.0, seed: int = 0, capture: bool = False,
         show: bool = False) -> tuple[dict, SimResult]:
    """The testbench on the inputs ``xq`` (int8, the source network's columns): its results."""
    work.mkdir(parents=True, exist_ok=True)
    inputs = work / "inputs.npy"
    np.save(inputs, np.ascontiguousarray(xq.reshape(len(xq), -1)[:, program.columns]))
    results, prog_file = work / "results.json", work / "progress"
    for f in (results, prog_file):
        if f.exists():
            f.unlink()
    n = len(xq)
    config = {"inputs": str(inputs), "results": str(results), "n_out": program.net.output_size,
              "gap_prob": gap_prob, "stall_prob": stall_prob, "seed": seed, "capture": capture,
              "aw_addr_bits": act_addr_bits_of(program), "pes": program.config.pes,
              "max_cycles": n * (4 * program.cycles_model + 1000) + 10_000}

    def poll():
        try:
            return int(prog_file.read_text() or 0), None
        except (OSError, ValueError):
            return None, None

    if show:
        config["progress"] = str(prog_file)
    with progress.waiting(f"co-simulating on {simulator} (building the model first)", poll if show else None,
                          total=n if show else None, unit="sample"):
        res = run_cocotb(verilog_sources=[build / "accelerator.v"], toplevel=TOP_NAME,
                         test_module="mamfpga.sim.tb_accelerator", build_dir=work, simulator=simulator,
                         waves=waves, config=config)
    if not res.ok or not results.exists():
        raise SimulationError(f"{simulator} co-simulation failed: {'; '.join(res.failures) or 'no results'} "
                              f"(log: {work / 'test.log'})")
    return json.loads(results.read_text()), res


def cosimulate(program: Program, build: Path, x_net: np.ndarray, *, simulator: str = "verilator",
               waves: bool = False, gap_prob: float = 0.0, stall_prob: float = 0.0, seed: int = 0,
               work: Path | None = None) -> CosimResult:
    """Run ``x_net`` (inputs of the source QuantNetwork: int8, or float through input_scale)
    through ``build/accelerator.v``; compare with the golden model."""
    build = Path(build).resolve()          # cocotb runs the testbench from the build folder
    xq = golden.prepare_inputs(program.source, x_net)
    expected = golden.run(program.source, xq)
    work = Path(work).resolve() if work is not None else build / f"sim_{simulator}"
    n = len(xq)
    data, res = _run(program, build, xq, work, simulator=simulator, waves=waves, gap_prob=gap_prob,
                     stall_prob=stall_prob, seed=seed, show=n > 1)
    outputs = np.array(data["outputs"], dtype=np.int8).reshape(n, program.net.output_size)
    out = CosimResult(simulator, outputs, expected, data["cycles"], data["layer_cycles"], res)
    bad = np.argwhere(outputs != expected)
    out.mismatches = int((outputs != expected).any(axis=1).sum())
    if len(bad):
        s, j = (int(v) for v in bad[0])
        one = xq[s:s + 1]
        want = golden_layers(program, one.reshape(1, -1)[:, program.columns])
        again, _ = _run(program, build, one, work / "capture", simulator=simulator, capture=True)
        out.first_mismatch = {"sample": s, "neuron": j, "got": int(outputs[s, j]), "expected": int(expected[s, j]),
                              "layer": first_difference(rtl_layer_outputs(program, again["writes"]), want),
                              "program_layer": first_differing_layer(program, one.reshape(1, -1)[:, program.columns])}
    return out


def rtl_layer_outputs(program: Program, writes: list) -> list[np.ndarray]:
    """Each layer's int8 outputs [1, M_k] in the network's row order, from the (layer, addr,
    data, mask) activation-buffer writes the testbench captured for one inference: a write
    puts byte p of ``data`` at activation (addr without its side bit) * P + p where ``mask``
    has bit p (the addresses of :mod:`mamfpga.compile.maps`). A value never written reads -1000."""
    P = program.config.pes
    side_mask = (1 << (act_addr_bits_of(program) - 1)) - 1
    acts = [np.full(program.side_bytes, -1000, dtype=np.int64) for _ in program.layers]
    for k, addr, data, mask in writes:
        if k >= len(acts):
            continue
        base = (addr & side_mask) * P
        for p in range(P):
            if mask >> p & 1 and base + p < len(acts[k]):
                b = data >> (8 * p) & 0xFF
                acts[k][base + p] = b - 256 if b > 127 else b
    return [a[plan.out_address][None, :] for a, plan in zip(acts, program.layers)]


@dataclass
class HostLinkResult:
    info: bytes                    # the board's answer to '?'
    outputs: np.ndarray            # int8 [B, M], as received over the UART
    expected: np.ndarray           # the golden model's
    cycles: list[int]              # as the board counted them
    stray_answer: bytes            # what stray bytes while idle got back (nothing, if right)
    cut_answer: bytes              # what a frame cut short got back (nothing, if right)
    bad_crc_answer: bytes          # what a request with a wrong CRC got back ('E' 1 crc, if right)
    leds: int
    sim: SimResult
    answered: np.ndarray = None    # bool [B]: an answer was accepted (within the retries)
    tries: list[int] = None        # requests sent per sample
    seen: dict = None              # errors the host saw: error answers, lost answers, failed CRCs
    flips: dict = None             # bits flipped on the wire, each way
    info_after: bytes = b""        # the '?' answer after the noisy inferences (the board did not hang)

    @property
    def mismatches(self) -> int:
        """Accepted answers that are wrong (a sample with no accepted answer is not one)."""
        wrong = (self.outputs != self.expected).any(axis=1)
        return int((wrong & self.answered).sum()) if self.answered is not None else int(wrong.sum())


def cosimulate_hostlink(program, x_net: np.ndarray, work: Path, *, divisor: int = 8, ident: int = 0x5EED,
                        frame_timeout: int = 2000, simulator: str = "verilator", ber: float = 0.0, seed: int = 0,
                        retries: int | None = None, placed=None, startup_cycles: int = 0,
                        show: bool = False) -> HostLinkResult:
    """The whole board top but the PLL (UART, command FSM, buffers, cycle counter, accelerator)
    under cocotb, driven bit by bit by a UART model speaking the host protocol; with ``ber``,
    every bit on both wires flips with that probability during the inferences (``seed``), and
    the host sends a request again up to ``retries`` times.

    The device under test is the board top's RTL, generated here with ``divisor``, ``ident``
    and ``frame_timeout``; or, with ``placed`` (a :class:`~mamfpga.boards.placed.PlacedModel`),
    the placed and routed board design, whose ``divisor`` and ``frame_timeout`` the caller
    passes as built, with the ``startup_cycles`` its power-on reset takes."""
    from mamfpga.boards import hostlink
    from mamfpga.boards.top import BOARD_TOP_NAME, HostLinkTop
    from mamfpga.hw.verilog import write_verilog

    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    xq = golden.prepare_inputs(program.source, x_net)
    expected = golden.run(program.source, xq)
    if placed is None:
        top = HostLinkTop(program, divisor=divisor, ident=ident, frame_timeout=frame_timeout, stretch=64,
                          heartbeat_bit=6)
        frame_timeout = top.frame_timeout
        sources, toplevel, includes = [write_verilog(top, BOARD_TOP_NAME, work / f"{BOARD_TOP_NAME}.v")], \
            BOARD_TOP_NAME, []
    else:
        sources, toplevel, includes = placed.sources, placed.top, placed.includes
    inputs = work / "inputs.npy"
    np.save(inputs, np.ascontiguousarray(xq.reshape(len(xq), -1)[:, program.columns]))
    results, prog_file = work / "results.json", work / "progress"
    for f in (results, prog_file):
        if f.exists():
            f.unlink()

    def poll():
        try:
            return int(prog_file.read_text() or 0), None
        except (OSError, ValueError):
            return None, None

    config = {"inputs": str(inputs), "results": str(results), "n_out": program.net.output_size,
              "divisor": divisor, "frame_timeout": frame_timeout, "ber": ber, "seed": seed,
              "retries": hostlink.RETRIES if retries is None else retries, "startup_cycles": startup_cycles}
    if show:
        config["progress"] = str(prog_file)
    what = "the placed and routed design" if placed is not None else "the board top"
    with progress.waiting(f"simulating {what} behind its UART on {simulator} (building the model first)",
                          poll if show else None, total=len(xq) if show else None, unit="sample"):
        res = run_cocotb(verilog_sources=sources, toplevel=toplevel, test_module="mamfpga.sim.tb_hostlink",
                         build_dir=work / f"sim_{simulator}", simulator=simulator, includes=includes, config=config,
                         ports_only=["clk", "rst", "rx", "tx", "leds"] if placed is not None else None)
    if not res.ok or not results.exists():
        raise SimulationError(f"host link co-simulation failed: {'; '.join(res.failures) or 'no results'}")
    data = json.loads(results.read_text())
    n_out = program.net.output_size
    answered = np.array([o is not None for o in data["outputs"]], dtype=bool)
    outputs = np.array([o if o is not None else [0] * n_out for o in data["outputs"]], dtype=np.int8)
    return HostLinkResult(bytes.fromhex(data["info"]), outputs.reshape(len(xq), n_out), expected,
                          [c for c in data["cycles"] if c is not None],
                          bytes.fromhex(data["stray_answer"]), bytes.fromhex(data["cut_answer"]),
                          bytes.fromhex(data["bad_crc_answer"]), data["leds"], res, answered, data["tries"],
                          data["seen"], data["flips"], bytes.fromhex(data["info_after"]))
