"""The host link protocol, spoken over the board's UART (8N1), and its host side.

Requests (host -> board); the board ignores any other byte while idle:

    '?'                      -> 'M' 'F' version n_in:u16 n_out:u16 pes:u8 lanes:u8 build_id:u32
    'I' x[0] .. x[n_in-1]    -> 'O' y[0] .. y[n_out-1] cycles:u32

x and y are int8 (two's complement bytes), integers little-endian. ``cycles``
counts the accelerator's clock cycles from the first input beat to the last
output beat, both included: the figure ``mamfpga sim`` and the compiler's
cycle model give. The board buffers a whole input vector before it starts, and
takes the outputs at full rate, so the UART's speed does not enter the count.
An 'I' frame whose bytes stop arriving for ``FRAME_TIMEOUT_S`` is dropped
without an answer, so a host that died mid-frame cannot desynchronise the board.
``build_id`` (CRC-32 of the build's accelerator.v) lets the host refuse a board
that carries another build.

The board side is :mod:`mamfpga.boards.top`; both sides use the constants here.
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mamfpga.errors import MamfpgaError, require_extra

__all__ = ["CMD_INFO", "CMD_INFER", "INFO_MAGIC", "INFO_LEN", "REPLY_OUT", "VERSION", "FRAME_TIMEOUT_S",
           "BoardInfo", "HostLink", "HostLinkError", "build_id", "verilog_id", "info_bytes", "encode_infer",
           "decode_info", "decode_outputs", "open_serial"]

VERSION = 1
CMD_INFO = ord("?")
CMD_INFER = ord("I")
INFO_MAGIC = b"MF"
REPLY_OUT = ord("O")
INFO_LEN = 2 + 1 + 2 + 2 + 1 + 1 + 4
FRAME_TIMEOUT_S = 0.05


class HostLinkError(MamfpgaError, RuntimeError):
    pass


def build_id(build: str | Path) -> int:
    """The 32-bit identity of a build folder: CRC-32 of its accelerator.v."""
    return verilog_id((Path(build) / "accelerator.v").read_bytes())


def verilog_id(verilog: bytes) -> int:
    """The identity of a build whose accelerator.v is ``verilog`` (before it is written)."""
    return zlib.crc32(verilog) & 0xFFFFFFFF


@dataclass(frozen=True)
class BoardInfo:
    version: int
    n_in: int
    n_out: int
    pes: int
    lanes: int
    build_id: int


def info_bytes(n_in: int, n_out: int, pes: int, lanes: int, ident: int) -> bytes:
    """The reply to '?' (the board's constant answer)."""
    return INFO_MAGIC + struct.pack("<BHHBBI", VERSION, n_in, n_out, pes, lanes, ident)


def decode_info(data: bytes) -> BoardInfo:
    if len(data) != INFO_LEN or data[:2] != INFO_MAGIC:
        raise HostLinkError(f"the board's answer to '?' is {data[:INFO_LEN].hex(' ') or 'nothing'}, not a "
                            f"mamfpga host link (expected {INFO_LEN} bytes starting 'MF')")
    return BoardInfo(*struct.unpack("<BHHBBI", data[2:]))


def encode_infer(x: np.ndarray) -> bytes:
    x = np.asarray(x)
    if x.ndim != 1 or x.dtype != np.int8:
        raise ValueError(f"one input vector is a 1-D int8 array, not {x.dtype} of shape {x.shape}")
    return bytes([CMD_INFER]) + x.tobytes()


def decode_outputs(data: bytes, n_out: int) -> tuple[np.ndarray, int]:
    if len(data) != 1 + n_out + 4 or data[0] != REPLY_OUT:
        raise HostLinkError(f"expected 'O', {n_out} outputs and a cycle count ({n_out + 5} bytes), got "
                            f"{len(data)} bytes: {data[:16].hex(' ')}{' ...' if len(data) > 16 else ''}")
    y = np.frombuffer(data[1:1 + n_out], dtype=np.int8).copy()
    (cycles,) = struct.unpack("<I", data[1 + n_out:])
    return y, cycles


def open_serial(port: str, baud: int, timeout: float = 2.0):
    """A pyserial port: a device (/dev/ttyUSB1, COM3) or any pyserial URL (socket://host:port)."""
    serial = require_extra("serial", "board", "talking to a board over its serial port")
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=timeout)
    except (serial.SerialException, ValueError) as exc:
        raise HostLinkError(f"cannot open serial port {port!r} at {baud} baud: {exc}") from None


class HostLink:
    """The host side over any byte transport with ``write(bytes)`` and ``read(n)``
    (a pyserial port; ``read`` returns fewer bytes on timeout)."""

    def __init__(self, port):
        self.port = port

    def _read(self, n: int, what: str) -> bytes:
        data = self.port.read(n)
        if len(data) != n:
            raise HostLinkError(f"the board sent {len(data)} of the {n} bytes of {what} before the timeout "
                                "(wrong port or baud rate, no bitstream loaded, or a board reset?)")
        return data

    def sync(self):
        """Drop a half-sent frame on both sides: wait out the board's frame timeout, flush our input."""
        time.sleep(2 * FRAME_TIMEOUT_S)
        if hasattr(self.port, "reset_input_buffer"):
            self.port.reset_input_buffer()

    def info(self) -> BoardInfo:
        self.port.write(bytes([CMD_INFO]))
        return decode_info(self._read(INFO_LEN, "the '?' reply"))

    def infer(self, x: np.ndarray, n_out: int) -> tuple[np.ndarray, int]:
        self.port.write(encode_infer(x))
        return decode_outputs(self._read(1 + n_out + 4, "an inference's answer"), n_out)
