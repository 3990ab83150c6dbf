"""``mamfpga synth`` and ``mamfpga run``: a small network to a placed, routed iCE40 bitstream with
utilisation and Fmax; the capacity check; export for a board with no open flow; and ``run`` over a
pseudo-terminal against a board emulated from the golden model (the RTL side of the protocol is
co-simulated in test_hostlink_cosim.py)."""

import json
import os
import threading

import numpy as np
import pytest

from mamfpga import cli
from mamfpga.boards import hostlink
from mamfpga.boards.targets import board_device
from mamfpga.compile.arch import ArchConfig
import mamfpga.compile as compiler
from mamfpga.hw.emit import emit
from mamfpga.sw import golden
from tests.support import random_network


def _build(tmp_path, shapes=(16, 12, 4), density=0.3, P=2, L=1, seed=3, board=None):
    rng = np.random.default_rng(seed)
    net = random_network(rng, list(shapes), density, ["mam", "mac"])
    device = board_device(board) if board else None
    program = compiler.compile_network(net, ArchConfig(pes=P, lanes=L), device=device)
    build = emit(program, tmp_path / "build", board=board)
    return program, build


@pytest.mark.synth
def test_synth_icebreaker_bitstream(tmp_path, capsys):
    program, build = _build(tmp_path, board="icebreaker")
    rc = cli.main(["synth", str(build), "--board", "icebreaker", "--bitstream", "--clock", "24"])
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0, out + captured.err
    report = json.loads((build / "report.json").read_text())["synth"]
    res = report["resources"]
    assert 100 < res["lut"] <= res["lut_avail"] == 5280
    assert res["ff"] > 50 and 0 < res["bram"] <= 30 and res["dsp"] <= 8
    assert report["fmax_mhz"] >= 24 and report["timing_met"]
    assert report["clock"]["mhz"] == 24 and report["clock"]["pll"]["DIVF"] >= 0
    assert report["latency_us"] == pytest.approx(program.cycles_model / 24)
    bitstream = build / "board-icebreaker" / "mamfpga_board.bin"
    assert report["bitstream"] == str(bitstream) and bitstream.stat().st_size > 100_000
    assert "Fmax" in out and "LUT" in out and "bitstream:" in out

    # the bitstream's own design (nextpnr's routed netlist) behind its UART, as the host speaks to it
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=(3, program.net.input_size)).astype(np.int8)
    x[0] = 0
    x[1] = 127                                        # zero and saturating inputs
    np.save(tmp_path / "x.npy", x)
    rc = cli.main(["sim", str(build), "--board", "icebreaker", "--placed", "--inputs", str(tmp_path / "x.npy"),
                   "--outputs", str(tmp_path / "y.npy")])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    assert np.array_equal(np.load(tmp_path / "y.npy"), golden.run(program.source, x))
    placed = json.loads((build / "report.json").read_text())["placed_sim"]
    assert placed["mismatches"] == 0 and placed["samples"] == 3 and placed["protocol_problems"] == []
    assert placed["cycles_placed"] == [program.cycles_model] and placed["build_id"] == report["host_link"]["build_id"]
    assert placed["cells"]["ICESTORM_LC"] == res["lut"] and "routed netlist" in placed["netlist"]
    assert "placed and routed icebreaker design" in captured.out


@pytest.mark.synth
def test_synth_names_what_does_not_fit(tmp_path, capsys):
    # a dense 64 -> 512 -> 10 MAC network: its weights need far more block RAM than the UP5K has
    program, build = _build(tmp_path, shapes=(64, 512, 10), density=1.0, P=2, L=1)
    rc = cli.main(["synth", str(build), "--board", "icebreaker"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "block RAMs" in err and "iCE40UP5K" in err and "has 30" in err
    assert not (build / "board-icebreaker").exists()


def test_synth_exports_for_a_board_without_open_flow(tmp_path):
    _, build = _build(tmp_path)
    assert cli.main(["synth", str(build), "--board", "arty-a7-35"]) == 0
    out = build / "board-arty-a7-35"
    assert (out / "mamfpga_board.v").is_file() and (out / "mamfpga_board.xdc").is_file()
    assert json.loads((build / "report.json").read_text())["synth"]["export_only"] == str(out)


def test_synth_refuses_bad_input(tmp_path, capsys):
    _, build = _build(tmp_path)
    assert cli.main(["synth", str(build), "--board", "de10"]) == 2
    assert "unknown board 'de10'" in capsys.readouterr().err
    assert cli.main(["synth", str(tmp_path), "--board", "icebreaker"]) == 2
    assert "not a build folder" in capsys.readouterr().err
    # 10 Mbaud from a 24 MHz clock: fewer than 4 cycles per bit
    assert cli.main(["synth", str(build), "--board", "icebreaker", "--clock", "24", "--baud", "10000000"]) == 2
    assert "10000000 baud needs at least 4 clock cycles per bit" in capsys.readouterr().err
    assert cli.main(["synth", str(build), "--board", "icebreaker", "--seeds", "0"]) == 2
    assert "--seeds must be at least 1, not 0" in capsys.readouterr().err


class FakeBoard(threading.Thread):
    """A board emulated on a pseudo-terminal from the golden model, speaking the host protocol."""

    def __init__(self, program, ident, corrupt_sample=None, garble_answers=0, version=hostlink.VERSION):
        super().__init__(daemon=True)
        self.program, self.build_ident, self.corrupt = program, ident, corrupt_sample
        self.garble = garble_answers          # the first this many answers get a byte flipped on the wire
        self.version = version
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        self.slave = slave
        self.served = 0

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = os.read(self.master, n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def run(self):
        p = self.program
        n_in, n_out = p.net.input_size, p.net.output_size
        try:
            while True:
                cmd = self._read(1)[0]
                if cmd == hostlink.CMD_INFO:
                    info = bytearray(hostlink.info_bytes(n_in, n_out, p.config.pes, p.config.lanes, self.build_ident))
                    info[2] = self.version
                    os.write(self.master, bytes(info))
                elif cmd == hostlink.CMD_INFER:
                    body = self._read(n_in + 2)
                    if hostlink.crc16(bytes([cmd]) + body) != 0:
                        os.write(self.master, hostlink.error_bytes())
                        continue
                    x_cols = np.frombuffer(body[:n_in], dtype=np.int8)
                    x = np.zeros((1, p.source.input_size), dtype=np.int8)
                    x[0, p.columns] = x_cols          # unread (eliminated) inputs stay 0
                    y = golden.run(p.source, x)[0].astype(np.int8)
                    if self.served == self.corrupt:
                        y[0] ^= 1
                    self.served += 1
                    answer = bytearray(hostlink.reply_bytes(y, p.cycles_model))
                    if self.garble:
                        self.garble -= 1
                        answer[1] ^= 0x10                  # noise on the wire: the CRC no longer holds
                    os.write(self.master, bytes(answer))
        except (EOFError, OSError):
            return


@pytest.mark.parametrize("corrupt", [None, 2])
def test_run_checks_every_answer(tmp_path, capsys, corrupt):
    program, build = _build(tmp_path)
    board = FakeBoard(program, hostlink.build_id(build), corrupt_sample=corrupt)
    board.start()
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(6, program.source.input_size)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    labels = golden.classify(golden.run(program.source, x))
    np.save(tmp_path / "y.npy", labels)
    rc = cli.main(["run", str(build), "--port", board.path, "--inputs", str(tmp_path / "x.npy"),
                   "--labels", str(tmp_path / "y.npy"), "--outputs", str(tmp_path / "out.npy"), "--timeout", "5"])
    cap = capsys.readouterr()
    run = json.loads((build / "report.json").read_text())["board_run"]
    assert run["samples"] == 6 and run["cycles_board"] == [program.cycles_model]
    if corrupt is None:
        assert rc == 0, cap.err
        assert run["mismatches"] == 0 and run["accuracy"] == 1.0
        assert (np.load(tmp_path / "out.npy") == golden.run(program.source, x)).all()
    else:
        assert rc == 1 and run["mismatches"] == 1
        assert "first at sample 2, output 0" in cap.err


def test_run_retries_a_damaged_answer_and_refuses_another_protocol(tmp_path, capsys):
    """Two answers damaged on the wire: each fails its CRC, the host asks again and gets the
    right one (the report counts the retries). A board speaking protocol version 1: refused,
    naming both versions."""
    program, build = _build(tmp_path)
    board = FakeBoard(program, hostlink.build_id(build), garble_answers=2)
    board.start()
    x = np.random.default_rng(1).integers(-128, 128, size=(3, program.source.input_size)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    rc = cli.main(["run", str(build), "--port", board.path, "--inputs", str(tmp_path / "x.npy"),
                   "--outputs", str(tmp_path / "out.npy"), "--timeout", "5"])
    assert rc == 0, capsys.readouterr().err
    assert (np.load(tmp_path / "out.npy") == golden.run(program.source, x)).all()
    assert json.loads((build / "report.json").read_text())["board_run"]["retries"] == 2
    old = FakeBoard(program, hostlink.build_id(build), version=1)
    old.start()
    rc = cli.main(["run", str(build), "--port", old.path, "--inputs", str(tmp_path / "x.npy"), "--timeout", "5"])
    assert rc == 1
    assert "protocol version 1, this mamfpga version 2" in capsys.readouterr().err


def test_run_refuses_a_board_with_another_build(tmp_path, capsys):
    program, build = _build(tmp_path)
    board = FakeBoard(program, hostlink.build_id(build) ^ 1)
    board.start()
    np.save(tmp_path / "x.npy", np.zeros((2, program.source.input_size), np.int8))
    rc = cli.main(["run", str(build), "--port", board.path, "--inputs", str(tmp_path / "x.npy")])
    assert rc == 1
    assert "carries another build" in capsys.readouterr().err


def test_adding_a_board_is_one_registration(tmp_path):
    from mamfpga.boards.clocking import pll_plan
    from mamfpga.boards.targets import BOARDS, Board, register
    from mamfpga.boards.top import BoardTop

    brd = Board("icesugar-test", "iCE40UP5K", "amaranth_boards.icesugar:ICESugarPlatform", clock_hz=48e6)
    register(brd)
    try:
        program, build = _build(tmp_path, board="icesugar-test")     # the compiler knows its capacity
        platform = brd.make_platform()
        top = BoardTop(program, f_clk=48e6, baud=115200, ident=hostlink.build_id(build),
                       pll=pll_plan("ice40", platform.default_clk_frequency, 48e6))
        plan = platform.prepare(top, name="mamfpga_board")
        pcf = plan.files["mamfpga_board.pcf"]
        pcf = pcf if isinstance(pcf, str) else pcf.decode()
        assert "uart_0__rx__io 4" in pcf and "uart_0__tx__io 6" in pcf      # the iCESugar's UART pins
        assert "led_0__io 40" in pcf
    finally:
        del BOARDS["icesugar-test"]
