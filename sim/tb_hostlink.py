"""cocotb testbench for the board top behind its UART (top ``mamfpga_board``: rx, tx, leds).

A UART model drives ``rx`` and decodes ``tx`` bit by bit at the top's divisor;
the bytes are those of the host side (:mod:`mamfpga.boards.hostlink`), so the
protocol is the one ``mamfpga run`` speaks. The sequence: an info request;
stray bytes (ignored while idle); a frame cut short (dropped after the frame
timeout, no answer); a frame with a wrong CRC (answered 'E'); then one inference
per input row, the host sending a request again when its answer is lost, an
'E' or fails its CRC (as :class:`~mamfpga.boards.hostlink.HostLink` does).

With ``ber`` > 0 every bit on both wires (start, data and stop bits the host
sends; data and stop bits it samples) flips with that probability, from a seeded
generator: the answers the host accepts must still be the right ones.

The device under test is the board top's RTL or the placed and routed board
design (:mod:`mamfpga.boards.placed`): both have ``clk``, ``rst``, ``rx``, ``tx``
and ``leds``; the placed design's power-on reset counts ``startup_cycles`` after
``rst`` (its PLL's lock) falls, before it listens.

Config (MAMFPGA_TB_CONFIG): inputs (.npy int8 [B, N_0] in the accelerator's
column order), n_out, divisor, frame_timeout (cycles), ber, seed, retries,
startup_cycles, progress (a file the sample count is written to), results (.json).
"""

from __future__ import annotations

import json
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Edge, First, Timer

from mamfpga.boards import hostlink
from mamfpga.sim.runner import env_config
from mamfpga.sim.tb import TB

PERIOD_NS = 10


class UARTModel:
    """The host's end of the wire: 8N1 at ``divisor`` clock cycles per bit, each bit flipped
    with probability ``ber``."""

    def __init__(self, dut, divisor: int, ber: float = 0.0, seed: int = 0):
        self.dut = dut
        self.bit_ns = divisor * PERIOD_NS
        self.ber = ber
        self.rng = random.Random(seed)
        self.flips = {"to_board": 0, "to_host": 0}

    def _noise(self, bit: int, way: str) -> int:
        if self.ber and self.rng.random() < self.ber:
            self.flips[way] += 1
            return bit ^ 1
        return bit

    async def send(self, data: bytes):
        """``data`` on rx; returns in the middle of the last stop bit, where the board takes the
        byte and may start answering (the line then stays high: idle)."""
        for n, byte in enumerate(data):
            for k, bit in enumerate([0] + [(byte >> i) & 1 for i in range(8)] + [1]):
                self.dut.rx.value = self._noise(bit, "to_board")
                last = n == len(data) - 1 and k == 9
                await Timer(self.bit_ns // 2 if last else self.bit_ns, unit="ns")
        self.dut.rx.value = 1

    async def recv(self, n: int, timeout_ns: int) -> bytes:
        out = bytearray()
        for _ in range(n):
            while True:               # wait for a start bit (a falling edge of tx)
                fired = await First(Edge(self.dut.tx), Timer(timeout_ns, unit="ns"))
                if isinstance(fired, Timer):
                    return bytes(out)
                if int(self.dut.tx.value) == 0:
                    break
            await Timer(self.bit_ns // 2, unit="ns")
            assert int(self.dut.tx.value) == 0, "tx: start bit shorter than half a bit"
            byte = 0
            for i in range(8):
                await Timer(self.bit_ns, unit="ns")
                byte |= self._noise(int(self.dut.tx.value), "to_host") << i
            await Timer(self.bit_ns, unit="ns")
            stop = self._noise(int(self.dut.tx.value), "to_host")
            if not self.ber:
                assert stop == 1, f"tx: no stop bit after byte {len(out)} (0x{byte:02x})"
            out.append(byte)
        return bytes(out)


@cocotb.test()
async def host_link(dut):
    cfg = env_config()
    x = np.load(cfg["inputs"])
    n_out, div = cfg["n_out"], cfg["divisor"]
    dut.rx.value = 1
    tb = TB(dut, period_ns=PERIOD_NS)
    await tb.reset()
    await ClockCycles(dut.clk, int(cfg.get("startup_cycles", 0)))
    uart = UARTModel(dut, div)
    byte_ns = 10 * div * PERIOD_NS
    drain_ns = cfg["frame_timeout"] * PERIOD_NS + 5 * byte_ns
    results: dict = {}

    await uart.send(bytes([hostlink.CMD_INFO]))
    results["info"] = (await uart.recv(hostlink.INFO_LEN, timeout_ns=20 * byte_ns)).hex()

    await uart.send(b"\x00Z\xff")                       # stray bytes while idle: no answer
    results["stray_answer"] = (await uart.recv(1, timeout_ns=5 * byte_ns)).hex()

    await uart.send(hostlink.encode_infer(x[0])[:3])     # a frame cut short
    results["cut_answer"] = (await uart.recv(1, timeout_ns=drain_ns)).hex()

    bad = bytearray(hostlink.encode_infer(x[0]))         # a whole frame, its CRC wrong
    bad[-1] ^= 0x01
    await uart.send(bytes(bad))
    results["bad_crc_answer"] = (await uart.recv(4, timeout_ns=drain_ns)).hex()

    # the inferences, over wires that flip bits at ``ber`` (none by default)
    uart.ber, uart.rng = float(cfg.get("ber", 0.0)), random.Random(int(cfg.get("seed", 0)))
    retries_max = int(cfg.get("retries", hostlink.RETRIES))
    answer_ns = (n_out + 10) * byte_ns + 1_000_000
    outputs, cycles, tries = [], [], []
    seen = {"error_answer": 0, "lost": 0, "crc_failed": 0}
    for done, row in enumerate(x):
        if cfg.get("progress"):
            with open(cfg["progress"], "w") as f:
                f.write(str(done))
        frame = hostlink.encode_infer(row)
        got = None
        for attempt in range(1 + retries_max):
            if attempt:                                   # both ends start clean (HostLink.sync)
                await Timer(2 * drain_ns, unit="ns")
            await uart.send(frame)
            head = await uart.recv(1, timeout_ns=answer_ns)
            if head == bytes([hostlink.REPLY_ERROR]):
                await uart.recv(3, timeout_ns=5 * byte_ns)
                seen["error_answer"] += 1
                continue
            if head != bytes([hostlink.REPLY_OUT]):
                seen["lost"] += 1
                continue
            data = head + await uart.recv(n_out + 4 + 2, timeout_ns=5 * byte_ns)
            try:
                got = hostlink.decode_outputs(data, n_out)
                break
            except hostlink.HostLinkError:
                seen["crc_failed"] += 1
        tries.append(attempt + 1)
        outputs.append(got[0].tolist() if got else None)
        cycles.append(got[1] if got else None)
    results.update(outputs=outputs, cycles=cycles, tries=tries, seen=seen, flips=uart.flips)
    uart.ber = 0.0                                        # the board still answers: it never hung
    await Timer(2 * drain_ns, unit="ns")
    await uart.send(bytes([hostlink.CMD_INFO]))
    results["info_after"] = (await uart.recv(hostlink.INFO_LEN, timeout_ns=20 * byte_ns)).hex()
    results["leds"] = int(dut.leds.value)
    with open(cfg["results"], "w") as f:
        json.dump(results, f)
