"""The board-run stage: a build's inputs through a real board over its host link, checked
against the golden model."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mamfpga.boards.hostlink import HostLink, HostLinkError, build_id, open_serial
from mamfpga.compile.ir import Program
from mamfpga.report import BoardRunFigures
from mamfpga.sw import golden

__all__ = ["BoardRun", "run_on_board"]


@dataclass
class BoardRun:
    figures: BoardRunFigures          # the board_run section of the report
    outputs: np.ndarray               # int8 [B, M], as the board answered
    expected: np.ndarray              # the golden model's

    @property
    def ok(self) -> bool:
        return self.figures.mismatches == 0 and self.figures.cycles_board == [self.figures.cycles_model]


def run_on_board(program: Program, build, port: str, xq: np.ndarray, *, baud: int, timeout: float = 2.0,
                 labels: np.ndarray | None = None, log=print) -> BoardRun:
    """Send ``xq`` (int8 inputs of the source network) to the board on ``port`` one by one; the
    board must carry ``build`` (its '?' answer is checked first). Raises :class:`HostLinkError`."""
    expected = golden.run(program.source, xq)
    n_out = program.net.output_size
    serial = open_serial(port, baud, timeout=timeout)
    try:
        link = HostLink(serial)
        link.sync()
        info = link.info()
        want = (program.net.input_size, n_out, program.config.pes, program.config.lanes, build_id(build))
        got = (info.n_in, info.n_out, info.pes, info.lanes, info.build_id)
        if got != want:
            raise HostLinkError(
                f"the board carries another build: {info.n_in} inputs, {info.n_out} outputs, P={info.pes} "
                f"L={info.lanes}, build {info.build_id:08x}; {build} has {want[0]}, {want[1]}, P={want[2]} "
                f"L={want[3]}, build {want[4]:08x}. Load {build}'s bitstream (mamfpga synth --bitstream)")
        log(f"board on {port} at {baud} baud carries build {info.build_id:08x}; sending {len(xq)} inputs")
        outputs = np.zeros((len(xq), n_out), dtype=np.int8)
        cycles = []
        t0 = time.monotonic()
        for i in range(len(xq)):
            try:
                outputs[i], c = link.infer(np.ascontiguousarray(xq[i].reshape(-1)[program.columns]), n_out)
            except HostLinkError as exc:
                raise HostLinkError(f"sample {i}: {exc}") from None
            cycles.append(c)
        wall = time.monotonic() - t0
    finally:
        serial.close()
    bad = np.flatnonzero((outputs != expected).any(axis=1))
    first = None
    if len(bad):
        s = int(bad[0])
        j = int(np.flatnonzero(outputs[s] != expected[s])[0])
        first = {"sample": s, "output": j, "got": int(outputs[s, j]), "expected": int(expected[s, j])}
    fig = BoardRunFigures(port, baud, int(len(xq)), int(len(bad)), sorted(set(cycles)), program.cycles_model,
                          round(wall, 3), first_mismatch=first, retries=link.retries)
    if labels is not None:
        fig.accuracy = float((golden.classify(outputs) == labels).mean())
        fig.golden_accuracy = float((golden.classify(expected) == labels).mean())
    return BoardRun(fig, outputs, expected)
