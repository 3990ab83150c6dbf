"""quantize / golden / compile through the CLI."""

import argparse
import json

import numpy as np
import pytest

from mamfpga import cli
from mamfpga.sw import data


@pytest.fixture(scope="module")
def net_npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("flow")
    model = d / "m.pt"
    assert cli.main(["train", "--mode", "mam", "--hidden", "64,64", "--epochs", "15", "--vc-epochs", "4", "-q",
                     "-o", str(model)]) == 0
    pruned = d / "p.pt"
    assert cli.main(["prune", str(model), "--method", "gmp", "--sparsity", "0.95", "-q", "-o", str(pruned)]) == 0
    net = d / "net.npz"
    assert cli.main(["quantize", str(pruned), "--calib", "digits", "-o", str(net)]) == 0
    return net


def test_quantize_reports_float_and_quantized_accuracy(net_npz, tmp_path, capsys):
    out = tmp_path / "again.npz"
    model = net_npz.parent / "p.pt"
    assert cli.main(["quantize", str(model), "--calib", "digits", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "accuracy on 540 test samples: float" in text and "quantized" in text


def test_golden_float_and_int_inputs(net_npz, tmp_path):
    ds = data.load()
    xf = tmp_path / "xf.npy"
    np.save(xf, ds.x_test[:30])
    yf = tmp_path / "yf.npy"
    assert cli.main(["golden", str(net_npz), "--inputs", str(xf), "--outputs", str(yf)]) == 0
    y = np.load(yf)
    assert y.dtype == np.int8 and y.shape == (30, 10)


def test_compile_writes_build(net_npz, tmp_path, capsys):
    build = tmp_path / "build"
    assert cli.main(["compile", str(net_npz), "--pes", "2", "--lanes", "1", "--board", "icebreaker",
                     "-o", str(build)]) == 0
    m = json.loads((build / "manifest.json").read_text())
    assert m["config"]["pes"] == 2 and m["config"]["lanes"] == 1
    assert m["memory"]["bram"] <= 30
    assert m["cycles_model"] >= m["cycles_bound"]
    assert all({"nnz", "cycles_model", "cycles_bound", "pe_words"} <= set(l) for l in m["layers"])
    report = json.loads((build / "report.json").read_text())
    assert report["format"] == "mamfpga.report/1" and report["board"] == "icebreaker"
    assert report["compile"]["cycles_model"] == m["cycles_model"] and report["sim"] is None
    assert (build / "pe1_weights.hex").read_text().strip()
    assert (build / "net.npz").exists()
    # a second compile into the same BUILD is fine: mamfpga wrote it
    assert cli.main(["compile", str(net_npz), "--pes", "4", "-o", str(build)]) == 0
    assert (build / "pe3_weights.hex").read_text().strip()


@pytest.mark.parametrize("key,value,words", [
    ("layer0.mult", np.array(0), "layer0.mult: must be an integer"),
    ("format", np.array("x/2"), "format: unknown format 'x/2'"),
])
def test_malformed_net_exit_2_one_line_no_output(net_npz, tmp_path, capsys, key, value, words):
    z = dict(np.load(net_npz))
    z[key] = value
    bad = tmp_path / "bad.npz"
    np.savez(bad, **z)
    build = tmp_path / "b"
    assert cli.main(["compile", str(bad), "-o", str(build)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not build.exists()
    assert cli.main(["golden", str(bad), "--inputs", str(bad), "--outputs", str(tmp_path / "y.npy")]) == 2
    assert not (tmp_path / "y.npy").exists()


def test_truncated_net(net_npz, tmp_path, capsys):
    bad = tmp_path / "t.npz"
    bad.write_bytes(net_npz.read_bytes()[:100])
    assert cli.main(["compile", str(bad), "-o", str(tmp_path / "b")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_compile_capacity_refusal(net_npz, tmp_path, capsys):
    assert cli.main(["compile", str(net_npz), "--pes", "16", "--lanes", "4", "--board", "icebreaker",
                     "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "icebreaker: the program needs" in err and "the iCE40UP5K has 30" in err


def test_report_before_and_after_nothing_simulated(net_npz, tmp_path, capsys):
    build = tmp_path / "b"
    assert cli.main(["compile", str(net_npz), "--pes", "2", "--lanes", "1", "-o", str(build)]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(build)]) == 0
    out = capsys.readouterr().out
    assert "co-simulation: not run" in out and "P=2 PEs x L=1 lanes" in out
    assert cli.main(["report", str(build), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["compile"]["pes"] == 2 and data["sim"] is None and data["synth"] is None
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a build folder" in capsys.readouterr().err


def test_compile_is_reproducible_byte_for_byte(net_npz, tmp_path):
    """The same network and options give byte-identical outputs (accelerator.v, memory images,
    manifest.json, report.json, net.npz), in two processes with different hash seeds (set and
    dict orders), for a dense network and for a conv network with per-channel scales and layers
    of three weight widths (the extension memory)."""
    import os
    import subprocess
    import sys

    from mamfpga.sw.qnet import save_qnet
    from tests.sim.test_accelerator_cosim import _mixed_widths
    from tests.support import random_conv_network

    rng = np.random.default_rng(5)
    conv = tmp_path / "conv.npz"
    save_qnet(_mixed_widths(random_conv_network(rng), rng, [4, 8, 2]), conv)
    for net, opts in ((net_npz, ["--pes", "4", "--lanes", "2"]), (conv, ["--pes", "2", "--lanes", "2"])):
        builds = []
        for seed in ("1", "2"):
            build = tmp_path / f"{net.stem}-{seed}"
            env = {**os.environ, "PYTHONHASHSEED": seed}
            subprocess.run([sys.executable, "-m", "mamfpga", "compile", str(net), *opts, "-o", str(build), "-q"],
                           check=True, env=env, capture_output=True)
            builds.append(build)
        names = sorted(p.name for p in builds[0].iterdir())
        assert names == sorted(p.name for p in builds[1].iterdir()) and "accelerator.v" in names
        for name in names:
            assert (builds[0] / name).read_bytes() == (builds[1] / name).read_bytes(), name


def test_ctrl_c_in_compile_leaves_no_partial_build(net_npz, tmp_path, monkeypatch, capsys):
    """Ctrl-C (or any error) while the build folder is written: a new folder never appears, an
    existing one keeps its files as they were, and no staging folder is left behind."""
    import mamfpga.hw.emit as hw_emit

    real = hw_emit.write_verilog

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    build = tmp_path / "build"
    monkeypatch.setattr(hw_emit, "write_verilog", interrupted)      # after the memory images are written
    assert cli.main(["compile", str(net_npz), "--pes", "2", "--lanes", "1", "-q", "-o", str(build)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not build.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(hw_emit, "write_verilog", real)
    assert cli.main(["compile", str(net_npz), "--pes", "2", "--lanes", "1", "-q", "-o", str(build)]) == 0
    before = {p.name: p.read_bytes() for p in build.iterdir() if p.is_file()}
    monkeypatch.setattr(hw_emit, "write_verilog", interrupted)
    assert cli.main(["compile", str(net_npz), "--pes", "4", "--lanes", "2", "-q", "-o", str(build)]) == 130
    assert {p.name: p.read_bytes() for p in build.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["build"]
    # a finished recompile replaces the memory images, stale ones (pe1 of P = 2 at P = 1) removed
    monkeypatch.setattr(hw_emit, "write_verilog", real)
    assert cli.main(["compile", str(net_npz), "--pes", "1", "--lanes", "1", "-q", "-o", str(build)]) == 0
    assert (build / "pe0_weights.hex").exists() and not (build / "pe1_weights.hex").exists()


@pytest.mark.parametrize("verb", ["demo", "sweep-hw"])
def test_ctrl_c_in_a_long_run_leaves_no_partial_output_folder(verb, net_npz, tmp_path, monkeypatch, capsys):
    """demo and sweep-hw (and sweep, through the same run_dir) write into their folder as they go;
    Ctrl-C removes a folder the run created and puts back one an earlier run wrote."""
    import mamfpga.demo as demo_mod
    from mamfpga import sweep_hw

    out = tmp_path / "out"
    target = (demo_mod, "run_demo") if verb == "demo" else (sweep_hw, "sweep")
    argv = (["demo", "--out", str(out), "-q"] if verb == "demo" else
            ["sweep-hw", str(net_npz), "--boards", "icebreaker", "--pes", "1", "--lanes", "1", "--no-synth",
             "--samples", "2", "-o", str(out)])

    def interrupted(folder, *a, **k):
        folder = folder if verb == "demo" else a[2]
        (folder / "half.txt").write_text("written before the interrupt")
        raise KeyboardInterrupt

    monkeypatch.setattr(*target, interrupted)
    assert cli.main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []                       # no folder, no hidden staging
    # an earlier run's folder, Ctrl-C in the next run: the earlier one back as it was
    out.mkdir()
    (out / ".mamfpga").write_text("written by mamfpga\n")
    (out / "report.json").write_text("{}")
    assert cli.main(argv) == 130
    assert sorted(p.name for p in out.iterdir()) == [".mamfpga", "report.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_ctrl_c_in_synth_puts_the_earlier_board_folder_back(net_npz, tmp_path, monkeypatch, capsys):
    """synth writes its board folder anew: interrupted, the earlier one (and the bitstream the
    report names) is back as it was, and no half-written folder or hidden sibling stays."""
    from mamfpga.boards import flow

    build = tmp_path / "build"
    assert cli.main(["compile", str(net_npz), "--pes", "1", "--lanes", "1", "-q", "-o", str(build)]) == 0
    earlier = build / "board-icebreaker"
    earlier.mkdir()
    (earlier / "mamfpga_board.bin").write_bytes(b"the earlier bitstream")
    report = (build / "report.json").read_text()

    def interrupted(build_dir, board, **kw):
        out = flow.board_dir(build_dir, board)
        out.mkdir()
        (out / "synth.log").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(flow, "synth_board", interrupted)
    assert cli.main(["synth", str(build), "--board", "icebreaker", "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in earlier.iterdir()) == ["mamfpga_board.bin"]
    assert (build / "report.json").read_text() == report
    assert not [p for p in build.iterdir() if p.name.startswith(".board-")]


def test_every_verb_prints_its_help(capsys):
    """``mamfpga VERB --help`` for every verb exits 0 with its options: a help string with a bare
    '%' (argparse formats help strings) made ``synth --help`` a traceback."""
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 10
    for name in sub.choices:
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0, name
        assert f"mamfpga {name}" in capsys.readouterr().out, name
