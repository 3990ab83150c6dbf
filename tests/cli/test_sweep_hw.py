"""``mamfpga sweep-hw``: points compiled, co-simulated and synthesized in parallel, on a local
process pool and on a Dask LocalCluster; the CSV, the Pareto front and plot."""

import csv

import numpy as np
import pytest

from mamfpga import cli
from mamfpga.sw.qnet import save_qnet
from mamfpga.sweep_hw import pareto
from tests.support import random_network


def _net(tmp_path):
    rng = np.random.default_rng(7)
    net = random_network(rng, [12, 10, 4], 0.4, ["mam", "mac"])
    save_qnet(net, tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", rng.integers(-128, 128, size=(5, 12)).astype(np.int8))
    return tmp_path / "net.npz", tmp_path / "x.npy"


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.sim
@pytest.mark.synth
def test_sweep_hw_on_a_dask_local_cluster(tmp_path, capsys):
    from dask.distributed import LocalCluster

    net, x = _net(tmp_path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        rc = cli.main(["sweep-hw", str(net), "--boards", "icebreaker", "--pes", "1,2", "--lanes", "1",
                       "--inputs", str(x), "--scheduler", cluster.scheduler_address, "-o", str(tmp_path / "sw")])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = _rows(tmp_path / "sw" / "sweep_hw.csv")
    assert [(r["board"], r["pes"], r["lanes"]) for r in rows] == [("icebreaker", "1", "1"), ("icebreaker", "2", "1")]
    for r in rows:
        assert r["status"] == "ok" and r["mismatches"] == "0" and r["cycles_sim"] == r["cycles_model"]
        assert int(r["lut"]) > 100 and float(r["fmax_mhz"]) > 20 and int(r["samples"]) == 5
    assert (tmp_path / "sw" / "pareto.png").stat().st_size > 1000
    assert "Pareto front" in out and "Dask cluster" in out


@pytest.mark.sim
def test_sweep_hw_local_pool_without_synth(tmp_path, capsys):
    net, x = _net(tmp_path)
    # a baseline: an earlier sweep's CSV with one of these points (cycles only, not synthesized)
    (tmp_path / "base.csv").write_text("board,pes,lanes,act_memory,status,cycles_model,lut\n"
                                       "icebreaker,4,4,banked,ok,999,\n")
    rc = cli.main(["sweep-hw", str(net), "--boards", "icebreaker", "--pes", "4", "--lanes", "1,4",
                   "--act-memory", "banked,copies", "--delta-bits", "auto,6", "--inputs", str(x), "--jobs", "2",
                   "--no-synth", "--baseline", str(tmp_path / "base.csv"), "-o", str(tmp_path / "sw")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"against the baseline {tmp_path / 'base.csv'}:" in out
    assert "  icebreaker P4L4 banked: cycles 999 -> " in out
    rows = _rows(tmp_path / "sw" / "sweep_hw.csv")
    assert [(r["lanes"], r["act_memory"], r["delta_bits"]) for r in rows if r["status"] == "ok"] == [
        ("1", "banked", "3"), ("1", "banked", "6"), ("4", "banked", "2"), ("4", "banked", "6")]
    assert all(r["mismatches"] == "0" and r["cycles_sim"] == r["cycles_model"] for r in rows if r["status"] == "ok")
    # 4 PEs x 4 lanes with a copy of the activations per lane: 16 copies, 2 block RAMs each, more
    # than the UP5K has (banked, the 4 PEs' copies are small enough for logic)
    misfits = [r for r in rows if r["status"] != "ok"]
    assert [(r["status"], r["act_memory"]) for r in misfits] == [("does not fit", "copies")] * 2
    assert "needs 32 block RAMs (activations 32)" in misfits[0]["detail"] and "has 30" in misfits[0]["detail"]
    assert all(r["lut"] == "" for r in rows)            # not synthesized
    assert not (tmp_path / "sw" / "pareto.png").exists()


def test_pareto_front():
    def row(board, lut, cycles):
        return {"board": board, "status": "ok", "lut": lut, "cycles_model": cycles}
    rows = [row("a", 100, 900), row("a", 200, 500), row("a", 250, 600), row("a", 300, 400), row("b", 50, 5000)]
    assert [(r["lut"], r["cycles_model"]) for r in pareto(rows)] == [(100, 900), (200, 500), (300, 400), (50, 5000)]


def test_sweep_hw_refuses_bad_options(tmp_path, capsys):
    net, x = _net(tmp_path)
    assert cli.main(["sweep-hw", str(net), "--pes", "3", "-o", str(tmp_path / "o")]) == 2
    assert "powers of two" in capsys.readouterr().err
    assert cli.main(["sweep-hw", str(net), "--boards", "icebreaker,de10", "-o", str(tmp_path / "o")]) == 2
    assert "unknown board(s) de10" in capsys.readouterr().err
    assert cli.main(["sweep-hw", str(net), "--lanes", "1,x", "-o", str(tmp_path / "o")]) == 2
    assert "'x' is not an integer" in capsys.readouterr().err


def _done(board, pes, lanes, cycles, lut, fmax, act_memory="banked"):
    from mamfpga.sweep_hw import FIELDS

    row = {k: None for k in FIELDS}
    row.update(board=board, pes=pes, lanes=lanes, act_memory=act_memory, status="ok", cycles_model=cycles,
               cycles_sim=cycles, lut=lut, fmax_mhz=fmax, inferences_per_s=round(fmax * 1e6 / cycles), seconds=1.0)
    return row


def test_a_baseline_sweep_reads_back_and_compares(tmp_path):
    from mamfpga.outputs import pyplot
    from mamfpga.sweep_hw import compare, plot_pareto, read_csv, write_csv

    old = [_done("ulx3s-85f", 2, 2, 700, 2600, 110.0), _done("ulx3s-85f", 4, 1, 900, 3000, 100.0),
           {**_done("ulx3s-85f", 8, 2, 1, 1, 1.0), "status": "does not fit", "lut": None, "fmax_mhz": None}]
    write_csv(old, tmp_path / "old.csv")
    back = read_csv(tmp_path / "old.csv")
    assert [(r["pes"], r["lanes"], r["cycles_model"], r["lut"], r["fmax_mhz"]) for r in back] == [
        (2, 2, 700, 2600, 110.0), (4, 1, 900, 3000, 100.0), (8, 2, 1, None, None)]
    new = [_done("ulx3s-85f", 2, 2, 650, 2700, 125.0), _done("ulx3s-85f", 4, 1, 900, 3000, 100.0, "banked"),
           _done("ulx3s-85f", 8, 2, 300, 9000, 90.0)]
    lines = compare(new, back)
    assert lines[0] == ("ulx3s-85f P2L2 banked: cycles 700 -> 650, Fmax 110.0 -> 125.0 MHz, LUT 2600 -> 2700, "
                        "inferences/s 157,143 -> 192,308 (1.22x)")
    assert len(lines) == 2                      # P8 L2 did not fit in the baseline: nothing to compare
    # two widths of one point: each compared with the baseline's row of the same widths
    two = [{**_done("icebreaker", 2, 1, 500, 900, 40.0), "delta_bits": d, "cycles_model": c}
           for d, c in ((4, 500), (6, 520))]
    now = [{**r, "cycles_model": r["cycles_model"] - 10} for r in reversed(two)]
    assert [ln.split(", Fmax")[0] for ln in compare(now, two)] == [
        "icebreaker P2L1 banked: cycles 520 -> 510", "icebreaker P2L1 banked: cycles 500 -> 490"]
    if pyplot() is not None:
        assert plot_pareto(new, tmp_path / "p.png", baseline=back).stat().st_size > 1000


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n", "not a sweep_hw.csv (no column board, cycles_model, lanes, lut, pes, status)"),
    ("board,pes,lanes,status,cycles_model,lut\nicebreaker,two,1,ok,5,6\n", "line 2: pes is 'two', not a number"),
])
def test_sweep_hw_refuses_a_damaged_baseline_before_running(tmp_path, capsys, text, message):
    net, x = _net(tmp_path)
    (tmp_path / "base.csv").write_text(text)
    assert cli.main(["sweep-hw", str(net), "--inputs", str(x), "--baseline", str(tmp_path / "base.csv"),
                     "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert cli.main(["sweep-hw", str(net), "--inputs", str(x), "--baseline", str(tmp_path / "none.csv"),
                     "-o", str(tmp_path / "o")]) == 2
    assert "cannot read it" in capsys.readouterr().err and not (tmp_path / "o").exists()
