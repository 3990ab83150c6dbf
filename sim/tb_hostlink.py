"""cocotb testbench for the board top behind its UART (top ``mamfpga_board``: rx, tx, leds).

A UART model drives ``rx`` and decodes ``tx`` bit by bit at the top's divisor;
the bytes are those of the host side (:mod:`mamfpga.boards.hostlink`), so the
protocol is the one ``mamfpga run`` speaks. The sequence: an info request;
stray bytes (ignored while idle); a frame cut short (dropped after the frame
timeout, no answer); then one inference per input row.

Config (MAMFPGA_TB_CONFIG): inputs (.npy int8 [B, N_0] in the accelerator's
column order), n_out, divisor, frame_timeout (cycles), results (.json).
"""

from __future__ import annotations

import json

import cocotb
import numpy as np
from cocotb.triggers import Edge, First, Timer

from mamfpga.boards import hostlink
from mamfpga.sim.runner import env_config
from mamfpga.sim.tb import TB

PERIOD_NS = 10


class UARTModel:
    """The host's end of the wire: 8N1 at ``divisor`` clock cycles per bit."""

    def __init__(self, dut, divisor: int):
        self.dut = dut
        self.bit_ns = divisor * PERIOD_NS

    async def send(self, data: bytes):
        for byte in data:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await Timer(self.bit_ns, unit="ns")

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
                byte |= int(self.dut.tx.value) << i
            await Timer(self.bit_ns, unit="ns")
            assert int(self.dut.tx.value) == 1, f"tx: no stop bit after byte {len(out)} (0x{byte:02x})"
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
    uart = UARTModel(dut, div)
    byte_ns = 10 * div * PERIOD_NS
    results: dict = {}

    await uart.send(bytes([hostlink.CMD_INFO]))
    results["info"] = (await uart.recv(hostlink.INFO_LEN, timeout_ns=20 * byte_ns)).hex()

    await uart.send(b"\x00Z\xff")                       # stray bytes while idle: no answer
    results["stray_answer"] = (await uart.recv(1, timeout_ns=5 * byte_ns)).hex()

    await uart.send(hostlink.encode_infer(x[0])[:3])     # a frame cut short
    results["cut_answer"] = (await uart.recv(1, timeout_ns=cfg["frame_timeout"] * PERIOD_NS + 5 * byte_ns)).hex()

    outputs, cycles = [], []
    for row in x:
        await uart.send(hostlink.encode_infer(row))
        reply = await uart.recv(1 + n_out + 4, timeout_ns=(n_out + 10) * byte_ns + 1_000_000)
        y, c = hostlink.decode_outputs(reply, n_out)
        outputs.append(y.tolist())
        cycles.append(c)
    results["outputs"] = outputs
    results["cycles"] = cycles
    results["leds"] = int(dut.leds.value)
    with open(cfg["results"], "w") as f:
        json.dump(results, f)
