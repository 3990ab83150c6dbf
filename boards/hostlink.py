"""The host link protocol, spoken over the board's UART (8N1), and its host side.

Version 2. Every frame in both directions ends in a CRC-16 (CCITT: polynomial 0x1021, initial
value 0xFFFF, no reflection), of the frame's bytes before it, sent high byte first: the CRC of
a whole frame, its CRC included, is then 0, which is how the board checks one.

Requests (host -> board); the board ignores any other byte while idle:

    '?'                          -> 'M' 'F' version n_in:u16 n_out:u16 pes:u8 lanes:u8 build_id:u32 crc
    'I' x[0] .. x[n_in-1] crc    -> 'O' y[0] .. y[n_out-1] cycles:u32 crc
                                 or 'E' code:u8 crc   (code 1: the request's CRC was wrong)

x and y are int8 (two's complement bytes), integers little-endian. ``cycles``
counts the accelerator's clock cycles from the first input beat to the last
output beat, both included: the figure ``mamfpga sim`` and the compiler's
cycle model give. The board buffers a whole input vector and checks its CRC
before it starts, and takes the outputs at full rate, so the UART's speed does
not enter the count. An 'I' frame whose bytes stop arriving for
``FRAME_TIMEOUT_S`` is dropped without an answer, so a host that died mid-frame
cannot desynchronise the board. ``build_id`` (CRC-32 of the build's
accelerator.v) lets the host refuse a board that carries another build, and
``version`` one that speaks another protocol.

The host (:class:`HostLink`) sends a request again when the answer does not come,
is an 'E', or fails its CRC, up to ``RETRIES`` more times, waiting out the frame
timeout first so that both ends start clean; then it fails naming the sample.

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

__all__ = ["CMD_INFO", "CMD_INFER", "INFO_MAGIC", "INFO_LEN", "REPLY_OUT", "REPLY_ERROR", "ERR_CRC", "VERSION",
           "FRAME_TIMEOUT_S", "RETRIES", "BoardInfo", "HostLink", "HostLinkError", "build_id", "verilog_id",
           "info_bytes", "encode_infer", "decode_info", "decode_outputs", "reply_bytes", "error_bytes", "crc16",
           "crc16_step", "open_serial"]

VERSION = 2
CMD_INFO = ord("?")
CMD_INFER = ord("I")
INFO_MAGIC = b"MF"
REPLY_OUT = ord("O")
REPLY_ERROR = ord("E")
ERR_CRC = 1
CRC_LEN = 2
INFO_LEN = 2 + 1 + 2 + 2 + 1 + 1 + 4 + CRC_LEN
FRAME_TIMEOUT_S = 0.05
RETRIES = 3
CRC_POLY, CRC_INIT = 0x1021, 0xFFFF


def crc16_step(crc: int, byte: int) -> int:
    """The CRC after one more byte (the board computes the same, a byte a cycle)."""
    crc ^= byte << 8
    for _ in range(8):
        crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else (crc << 1)
    return crc & 0xFFFF


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    for b in data:
        crc = crc16_step(crc, b)
    return crc


def _sealed(frame: bytes) -> bytes:
    """``frame`` with its CRC appended (high byte first)."""
    return frame + crc16(frame).to_bytes(2, "big")


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
    return _sealed(INFO_MAGIC + struct.pack("<BHHBBI", VERSION, n_in, n_out, pes, lanes, ident))


def decode_info(data: bytes) -> BoardInfo:
    if len(data) < 3 or data[:2] != INFO_MAGIC:
        raise HostLinkError(f"the board's answer to '?' is {data[:INFO_LEN].hex(' ') or 'nothing'}, not a "
                            f"mamfpga host link (expected {INFO_LEN} bytes starting 'MF')")
    if data[2] != VERSION:
        raise HostLinkError(f"the board speaks host link protocol version {data[2]}, this mamfpga version "
                            f"{VERSION}: build and load its bitstream again (mamfpga synth --bitstream)")
    if len(data) != INFO_LEN or crc16(data) != 0:
        raise HostLinkError(f"the board's answer to '?' ({data.hex(' ')}) fails its CRC")
    return BoardInfo(*struct.unpack("<BHHBBI", data[2:-CRC_LEN]))


def encode_infer(x: np.ndarray) -> bytes:
    x = np.asarray(x)
    if x.ndim != 1 or x.dtype != np.int8:
        raise ValueError(f"one input vector is a 1-D int8 array, not {x.dtype} of shape {x.shape}")
    return _sealed(bytes([CMD_INFER]) + x.tobytes())


def reply_bytes(y: np.ndarray, cycles: int) -> bytes:
    """An inference's answer as the board sends it."""
    return _sealed(bytes([REPLY_OUT]) + np.asarray(y, dtype=np.int8).tobytes() + struct.pack("<I", cycles))


def error_bytes(code: int = ERR_CRC) -> bytes:
    """The board's answer to a request whose CRC was wrong."""
    return _sealed(bytes([REPLY_ERROR, code]))


def decode_outputs(data: bytes, n_out: int) -> tuple[np.ndarray, int]:
    """An 'O' answer's outputs and cycle count; HostLinkError if it is not one, or fails its CRC."""
    if len(data) != 1 + n_out + 4 + CRC_LEN or data[0] != REPLY_OUT:
        raise HostLinkError(f"expected 'O', {n_out} outputs, a cycle count and a CRC ({n_out + 7} bytes), got "
                            f"{len(data)} bytes: {data[:16].hex(' ')}{' ...' if len(data) > 16 else ''}")
    if crc16(data) != 0:
        raise HostLinkError(f"an answer failed its CRC: {data[:16].hex(' ')}{' ...' if len(data) > 16 else ''}")
    y = np.frombuffer(data[1:1 + n_out], dtype=np.int8).copy()
    (cycles,) = struct.unpack("<I", data[1 + n_out:1 + n_out + 4])
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
        self.retries = 0                  # requests sent again (a lost, refused or damaged answer)

    def sync(self):
        """Drop a half-sent frame on both sides: wait out the board's frame timeout, flush our input."""
        time.sleep(2 * FRAME_TIMEOUT_S)
        if hasattr(self.port, "reset_input_buffer"):
            self.port.reset_input_buffer()

    def info(self) -> BoardInfo:
        """The board's '?' answer (its version read first, so that another protocol is named)."""
        err = None
        for _ in range(1 + RETRIES):
            self.port.write(bytes([CMD_INFO]))
            head = self.port.read(3)
            if len(head) == 3 and head[:2] == INFO_MAGIC and head[2] != VERSION:
                return decode_info(head)                          # names the other version
            data = head + (self.port.read(INFO_LEN - 3) if len(head) == 3 else b"")
            try:
                return decode_info(data)
            except HostLinkError as exc:
                err = exc
                self.sync()
        raise err

    def infer(self, x: np.ndarray, n_out: int) -> tuple[np.ndarray, int]:
        """One inference: its outputs and cycle count. A lost, refused ('E') or damaged answer
        sends the request again, up to RETRIES more times; :attr:`retries` counts them."""
        frame = encode_infer(x)
        why = ""
        for attempt in range(1 + RETRIES):
            if attempt:
                self.retries += 1
                self.sync()
            self.port.write(frame)
            head = self.port.read(1)
            if head == bytes([REPLY_ERROR]):
                rest = self.port.read(1 + CRC_LEN)
                why = (f"the board found the request's CRC wrong" if crc16(head + rest) == 0
                       else "a damaged error answer")
                continue
            if head != bytes([REPLY_OUT]):
                why = f"no answer ({head.hex() or 'nothing'} before the timeout)"
                continue
            data = head + self.port.read(n_out + 4 + CRC_LEN)
            try:
                return decode_outputs(data, n_out)
            except HostLinkError as exc:
                why = str(exc)
        raise HostLinkError(f"no good answer after {1 + RETRIES} tries: {why}")
