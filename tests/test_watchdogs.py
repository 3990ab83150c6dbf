"""Watchdogs: a tool or a simulation that runs past its limit is stopped, with everything it
started, and the error names the step and how long it ran."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest

from mamfpga import toolchain
from mamfpga.toolchain import ToolTimeout, run_watched, watchdog


def test_run_watched_kills_the_whole_process_group(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMFPGA_TIMEOUT_S", "1")
    pidfile = tmp_path / "child.pid"
    t0 = time.monotonic()
    with pytest.raises(ToolTimeout, match=r"placing \(nextpnr\) ran 1 s, past its limit of 1 s"):
        # a shell that starts a grandchild and waits on it, as a tool script does
        run_watched(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], step="nextpnr", what="placing")
    assert time.monotonic() - t0 < 10
    pid = int(pidfile.read_text())
    time.sleep(0.2)
    status = pathlib.Path(f"/proc/{pid}/status")           # the grandchild is gone too (or a zombie
    if status.exists():                                     # no init has reaped yet)
        state = [line for line in status.read_text().splitlines() if line.startswith("State:")]
        assert state and state[0].split()[1] in ("Z", "X"), state
    assert run_watched(["sh", "-c", "exit 3"], step="yosys", what="x") == 3


def test_watchdog_stops_a_block_and_a_subprocess_in_it(monkeypatch):
    monkeypatch.setenv("MAMFPGA_TIMEOUT_S", "1")
    t0 = time.monotonic()
    with pytest.raises(ToolTimeout, match=r"simulating \(simulation\) ran 1 s"):
        with watchdog("simulation", "simulating"):
            subprocess.run([sys.executable, "-c", "import time; time.sleep(60)"])
    assert time.monotonic() - t0 < 10
    with watchdog("simulation", "quick"):                   # a block within its limit: nothing
        pass


def test_bad_timeout_setting(monkeypatch):
    monkeypatch.setenv("MAMFPGA_TIMEOUT_S", "soon")
    with pytest.raises(toolchain.MamfpgaError, match="MAMFPGA_TIMEOUT_S is 'soon'"):
        toolchain.time_limit("yosys")


@pytest.mark.sim
def test_a_hung_simulator_build_is_stopped_and_named(tmp_path, monkeypatch, capsys):
    """`mamfpga sim` with a limit too short for the Verilator build: exit 1, one line naming the
    step, no traceback."""
    import numpy as np

    from mamfpga import cli
    from mamfpga.sw.qnet import save_qnet
    from tests.support import random_network

    net = tmp_path / "net.npz"
    save_qnet(random_network(np.random.default_rng(3), [16, 12, 4], 0.5, ["mam", "mac"]), net)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 16), np.int8))
    monkeypatch.setenv("MAMFPGA_TIMEOUT_S", "1")
    rc = cli.main(["sim", str(net), "--pes", "2", "--lanes", "1", "--inputs", str(x), "--outputs",
                   str(tmp_path / "y.npy"), "--build", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "(verilator build) ran" in err[0] and "past its limit of 1 s" in err[0]
    assert not (tmp_path / "y.npy").exists()
    time.sleep(0.5)
    assert toolchain.descendants() == []            # no make or compiler left running


def test_watchdog_kills_what_its_block_started_and_what_that_started(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMFPGA_TIMEOUT_S", "1")
    pidfile = tmp_path / "grandchild.pid"
    with pytest.raises(ToolTimeout):
        with watchdog("verilator build", "building"):
            # a make that starts a compiler and waits on it
            subprocess.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"])
    time.sleep(0.3)
    status = pathlib.Path(f"/proc/{int(pidfile.read_text())}/status")   # gone, or a zombie not reaped yet
    if status.exists():
        state = [line for line in status.read_text().splitlines() if line.startswith("State:")]
        assert state and state[0].split()[1] in ("Z", "X"), state
    assert toolchain.descendants() == []
