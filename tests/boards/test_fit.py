"""The fit check (mamfpga.boards.fit): iCE40 packing rule, messages with numbers, the fast lower
bound, the choice of the fastest configuration that fits, the check before nextpnr, and the
estimate against nextpnr's placed count."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mamfpga.compile as compiler
from mamfpga import cli
from mamfpga.boards import fit, flow
from mamfpga.boards.targets import board
from mamfpga.compile.arch import ArchConfig
from mamfpga.compile.device import DEVICES, Device
from mamfpga.report import SynthFigures
from mamfpga.sw.qnet import QuantLayer, QuantNetwork, save_qnet
from tests.support import random_network


def _cell(type_, **conns):
    dirs = {p: ("output" if p in ("O", "Q", "CO") else "input") for p in conns}
    return {"type": type_, "port_directions": dirs, "connections": {p: list(v) for p, v in conns.items()}}


def _netlist(cells):
    return {"modules": {"top": {"cells": cells}}}


def test_ice40_packing_rule():
    cells = {
        # LUT a drives only FF fa: one cell
        "a": _cell("SB_LUT4", I0=[1], I1=[2], I2=[3], I3=[4], O=[10]),
        "fa": _cell("SB_DFF", C=[99], D=[10], Q=[11]),
        # LUT b drives FF fb and something else: the FF takes a cell of its own
        "b": _cell("SB_LUT4", I0=[11], I1=[2], I2=[3], I3=["0"], O=[20]),
        "fb": _cell("SB_DFFE", C=[99], E=[1], D=[20], Q=[21]),
        "c": _cell("SB_LUT4", I0=[20], I1=[5], I2=[6], I3=[30], O=[22]),
        # carry with c's I1/I2 as I0/I1: shares c's cell; a second carry on other nets does not
        "k1": _cell("SB_CARRY", I0=[5], I1=[6], CI=[7], CO=[30]),
        "k2": _cell("SB_CARRY", I0=[8], I1=[9], CI=[30], CO=[31]),
        # an FF fed straight from another FF: a cell of its own
        "fc": _cell("SB_DFFSR", C=[99], R=[1], D=[21], Q=[32]),
        "ram": _cell("SB_RAM40_4K"), "dsp": _cell("SB_MAC16"), "io": _cell("SB_IO"),
        "pll": _cell("SB_PLL40_PAD"),
    }
    lc, lone_ff, lone_carry = fit._ice40_logic_cells(cells)
    assert (lone_ff, lone_carry) == (2, 1)
    # k1's chain is entered from logic (net 7 is no carry's output): one feed-in cell; k2 follows k1
    assert lc == 3 + 2 + 1 + 1
    n = fit.needs_from_netlist(_netlist(cells), "top", "ice40")
    assert (n.lut, n.ff, n.carry, n.bram, n.dsp, n.io, n.pll) == (3, 3, 2, 1, 1, 1, 1)
    assert n.lc == int(np.ceil(7 * (1 + fit.PACKING_ALLOWANCE)))


def test_fit_problems_name_resource_need_and_count():
    dev = DEVICES["iCE40UP5K"]
    ok = fit.Needs("ice40", lc=3000, lut=2500, ff=2000, carry=300, bram=30, dsp=8, io=5, pll=1)
    assert fit.fit_problems(ok, dev) == []
    bad = fit.Needs("ice40", lc=5500, lut=3397, ff=3949, carry=400, bram=31, dsp=9, io=5, pll=2)
    text = "; ".join(fit.fit_problems(bad, dev))
    assert "5500 logic cells" in text and "4752 allowed" in text and "5280" in text
    assert "31 block RAMs, the iCE40UP5K has 30" in text and "9 DSPs" in text and "2 PLLs" in text
    ecp5 = fit.Needs("ecp5", lc=80000, lut=80000, ff=1000, carry=0, bram=1, dsp=1, io=5, pll=1)
    assert "LUT4s" in fit.fit_problems(ecp5, DEVICES["LFE5U-85F"])[0]


def _dense_net(n=2048):
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (n, n), dtype=np.int8)
    w[w == 0] = 1
    return QuantNetwork([QuantLayer(w, np.zeros(n, np.int32), "mam", 1 << 14, 24, True),
                         QuantLayer(np.ones((10, n), np.int8), np.zeros(10, np.int32), "mac", 1 << 14, 24, False)])


def test_lower_bound_refuses_before_compiling(tmp_path, capsys):
    net = tmp_path / "big.npz"
    save_qnet(_dense_net(), net)
    build = tmp_path / "b"
    assert cli.main(["compile", str(net), "--board", "icebreaker", "-o", str(build)]) == 2
    err = capsys.readouterr().err
    assert "4214784 nonzero weights" in err and "122,880 bits of block RAM" in err and "iCE40UP5K" in err
    assert len(err.strip().splitlines()) == 1 and not build.exists()
    # the same with P and L given: refused by the bound too, nothing written
    assert cli.main(["compile", str(net), "--board", "icebreaker", "--pes", "4", "--lanes", "2",
                     "-o", str(build)]) == 2
    assert not build.exists()


def test_lower_bound_is_a_bound():
    # a network the bound lets through may still not fit, but one it refuses can never fit:
    # 13,653 weights x 9 bits is just under the UP5K's 122,880 bits
    dev = DEVICES["iCE40UP5K"]
    w = np.zeros((1, 13653), np.int8)
    w[0] = 1
    net = QuantNetwork([QuantLayer(w, np.zeros(1, np.int32), "mac", 1, 0, False)])
    assert fit.lower_bound_problem(net, dev) is None
    w2 = np.ones((1, 13654), np.int8)
    assert "13654 nonzero weights" in fit.lower_bound_problem(
        QuantNetwork([QuantLayer(w2, np.zeros(1, np.int32), "mac", 1, 0, False)]), dev)
    # dead rows (no nonzero weight) cost nothing
    assert fit.lower_bound_problem(QuantNetwork([QuantLayer(np.zeros((5000, 100), np.int8),
                                                            np.zeros(5000, np.int32), "mac", 1, 0, False)]),
                                   dev) is None


def test_candidates_order_and_limits():
    c = fit.candidates()
    assert (1, 1, "never", False, False) in c and (1, 1, "auto", False, False) not in c
    # one lane: nothing to copy, no half of the lanes to share
    assert (1, 1, "never", True, False) not in c and (1, 1, "never", False, True) not in c
    assert all(p * l <= 32 for p, l, _, _, _ in c) and (16, 2, "auto", False, False) in c \
        and (16, 2, "auto", True, False) in c
    assert not any(k for *_, k in c)                           # shared words only when asked for
    assert not any(k for *_, k in fit.candidates(family="ice40"))     # ... or on an ECP5, unasked
    assert (2, 2, "never", True, True) in fit.candidates(family="ecp5") \
        and (2, 2, "never", True, False) in fit.candidates(family="ecp5")
    assert not any(k for *_, k in fit.candidates(packs=[False], family="ecp5"))
    assert (16, 2, "auto", True, True) in fit.candidates(packs=[False, True])
    assert (1, 1, "never", False, False) in fit.candidates(packs=[True])     # one lane: nothing to share
    assert fit.candidates([2], [4], None, None, [False]) == [
        (2, 4, "auto", False, False), (2, 4, "auto", True, False), (2, 4, "never", False, False),
        (2, 4, "never", True, False)]
    assert fit.candidates([2], None, ["never"], [False], [False]) == [(2, l, "never", False, False)
                                                                      for l in (1, 2, 4, 8)]


def test_banked_is_not_skipped_for_a_copied_candidate_that_overflowed():
    """A copied candidate that did not fit (by its synthesized block RAM, say) does not rule out
    the banked one of the same P and L, which needs less memory; the converse holds."""
    copies, banked = fit.Candidate(2, 2, "never", copies=True), fit.Candidate(2, 2, "never")
    assert not fit._dominates(banked, copies)
    assert fit._dominates(copies, banked) and fit._dominates(fit.Candidate(4, 2, "never"), banked)
    assert copies.label == "P=2 L=2 no split lane copies"
    shared = fit.Candidate(2, 2, "never", pack=True)
    assert fit._dominates(shared, banked) and not fit._dominates(banked, shared)
    assert shared.label == "P=2 L=2 no split shared words"


def test_split_option_is_recorded_and_reproduced(tmp_path):
    """compile --split never, then load_build (what synth, sim and report do) gives the same program."""
    rng = np.random.default_rng(7)
    net = random_network(rng, [40, 30, 3], 0.3, ["mam", "mac"])
    path = tmp_path / "net.npz"
    save_qnet(net, path)
    for split in ("never", "always", "auto"):
        build = tmp_path / f"b-{split}"
        assert cli.main(["compile", str(path), "--pes", "2", "--lanes", "1", "--split", split, "-o", str(build)]) == 0
        m = json.loads((build / "manifest.json").read_text())
        assert m["config"]["split"] == split
        prog = compiler.load_build(build)
        assert prog.split == split
        assert [l.manifest()["kind"] for l in prog.layers] == [l["kind"] for l in m["layers"]]
    kinds = json.loads((tmp_path / "b-always" / "manifest.json").read_text())["layers"]
    assert any(l["kind"] == "column-split" for l in kinds)


BRAM_CASES = [
    # (seed, shapes, density, P, L, split, family): column-split, row-parallel, mixed; tiny memories
    (0, [50, 70, 9], 0.2, 2, 1, "always", "ice40"),
    (1, [50, 70, 9], 0.2, 4, 2, "never", "ice40"),
    (4, [200, 300, 10], 0.05, 2, 2, "auto", "ice40"),
    (3, [6, 4], 0.5, 1, 1, "auto", "ice40"),
    (2, [50, 70, 9], 0.2, 4, 1, "auto", "ecp5"),
    # the activations banked (P >= L, P < L) and copied per lane
    (5, [200, 300, 10], 0.05, 1, 4, "never", "ice40"),
    (6, [200, 300, 10], 0.05, 2, 2, "never", "ice40-copies"),
    # the default suite's time (about 15 minutes): with -m slow
    pytest.param((7, [50, 70, 9], 0.2, 2, 4, "never", "ecp5-copies"), marks=pytest.mark.slow),
]


@pytest.mark.synth
@pytest.mark.parametrize("case", BRAM_CASES, ids=lambda c: f"{c[6]}-P{c[3]}L{c[4]}-{c[5]}")
def test_block_ram_estimate_equals_yosys(case):
    """The compiler's block-RAM count (memory_use) is what yosys builds from the accelerator's
    Verilog, for row-parallel and column-split layers: every memory is marked block RAM or logic
    as the compiler decided, ROMs as wide as their varying bits."""
    from mamfpga.boards.resources import synth_resources
    from mamfpga.hw.accelerator import Accelerator
    from mamfpga.hw.verilog import to_verilog

    seed, shapes, density, P, L, split, family = case
    family, copies = family.split("-")[0], family.endswith("-copies")
    net = random_network(np.random.default_rng(seed), shapes, density, ["mam", "mac"])
    prog = compiler.compile_network(net, ArchConfig(P, L, lane_copies=copies), split=split)
    if split != "auto":
        assert all(l.split == (split == "always") for l in prog.layers)
    use = compiler.memory_use(prog, family)
    res = synth_resources(to_verilog(Accelerator(prog, family), "mamfpga_accel"), "mamfpga_accel", family)
    assert use["bram"] == res.bram, use["memories"]


def test_eval_into_a_closed_pipe_is_quiet(tmp_path):
    model = tmp_path / "m.pt"
    assert cli.main(["train", "--mode", "mac", "--hidden", "16", "--epochs", "1", "-q", "-o", str(model)]) == 0
    exe = Path(sys.executable).parent / "mamfpga"
    res = subprocess.run(f"'{exe}' eval '{model}' --json | head -c 10", shell=True, capture_output=True,
                         text=True, timeout=300)
    assert res.stdout == '{"accuracy'[:10]
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr


@pytest.mark.synth
def test_compile_chooses_what_fits_and_synth_builds_it(tmp_path, capsys, monkeypatch):
    """compile --board with no P/L picks the fastest configuration that fits (synthesizing
    candidates), the build records it, synth finds its synthesis cached, checks the fit before
    nextpnr, and the placed logic stays under the estimate."""
    monkeypatch.setenv("MAMFPGA_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(11)
    net = random_network(rng, [24, 40, 6], 0.15, ["mam", "mac"])
    path = tmp_path / "net.npz"
    save_qnet(net, path)
    build = tmp_path / "b"
    assert cli.main(["compile", str(path), "--board", "icebreaker", "--lanes", "1", "-o", str(build)]) == 0
    out = capsys.readouterr().out
    m = json.loads((build / "manifest.json").read_text())
    choice = m["choice"]
    assert choice["by"] == "fastest configuration that fits" and f"chose {choice['chosen']}" in out
    assert m["config"]["lanes"] == 1 and choice["needs"]["lc"] <= 0.9 * 5280
    # every faster candidate was refused for a stated reason
    assert all(t["verdict"] != "fits" for t in choice["tried"][:-1]) and choice["tried"][-1]["verdict"] == "fits"
    assert [t["cycles"] for t in choice["tried"]] == sorted(t["cycles"] for t in choice["tried"])

    assert cli.main(["synth", str(build), "--board", "icebreaker", "--bitstream", "--clock", "24"]) == 0
    report = json.loads((build / "report.json").read_text())
    est, placed = report["synth"]["estimate"]["lc"], report["synth"]["resources"]["lut"]
    assert placed <= est <= placed * 1.03, (placed, est)

    # the same build on a device with a tenth of the logic: refused before nextpnr, naming logic cells
    small = Device("iCE40UP5K", "ice40", 528, 528, 30, 4096, 8, spram=4, io=39, pll=1)
    monkeypatch.setitem(DEVICES, "iCE40UP5K", small)
    with pytest.raises(flow.CapacityError, match=r"logic cells .*, over the 475 allowed"):
        flow.synth_board(build, board("icebreaker"), clock_hz=24e6, log=lambda _m: None)
    assert not (build / "board-icebreaker" / "nextpnr.json").exists()


def _fake_needs(program, board, **_kw):
    """A stand-in for synthesis: logic grows with P x L (what the real designs do)."""
    cfg = program.config
    lc = 1000 * cfg.pes * cfg.lanes
    return fit.Needs("ice40", lc=lc, lut=lc, ff=lc // 2, carry=0, bram=4, dsp=2, io=5, pll=1)


def test_choose_fastest_that_fits_and_fall_back(tmp_path, monkeypatch):
    """fit.choose orders by cycles and skips what a refused candidate dominates; build_for_board
    falls back to the next configuration when a board build gives no bitstream, a bounded
    number of times. Synthesis and place and route are stood in for (the synth test runs them)."""
    monkeypatch.setattr(flow, "estimate", _fake_needs)
    rng = np.random.default_rng(5)
    net = random_network(rng, [30, 60, 5], 0.3, ["mam", "mac"])
    brd = board("icebreaker")
    ch = fit.choose(net, brd, log=lambda _m: None)
    assert ch.chosen.pes * ch.chosen.lanes <= 4                 # 4000 of the 4752 allowed
    assert ch.chosen.verdict == "fits" and ch.tried[-1] is ch.chosen
    cycles = [t.cycles for t in ch.tried]
    assert cycles == sorted(cycles)
    assert all(t.verdict.startswith(("block RAM", "needs", "skipped")) for t in ch.tried[:-1])
    assert "chose " + ch.chosen.label in ch.explain() and "do not fit" in ch.explain(brief=True)

    calls = []

    def synth(build, board, *, bitstream, log, retries):
        prog = compiler.load_build(build)
        calls.append(prog.config.pes * prog.config.lanes)
        clock, link = {"mhz": 32.0}, {"baud": 115200}
        if len(calls) == 1:                                     # the first choice misses timing
            return SynthFigures("icebreaker", "iCE40UP5K", clock, link, fmax_mhz=30.0, attempts=[{}] * 4,
                                timing_met=False)
        return SynthFigures("icebreaker", "iCE40UP5K", clock, link, bitstream=str(build / "x.bin"), timing_met=True)

    monkeypatch.setattr(flow, "synth_board", synth)
    logs = []
    r = flow.build_for_board(net, brd, tmp_path / "b", log=logs.append)
    assert r.fallbacks == 1 and len(calls) == 2 and r.synth.bitstream and r.ok
    assert any("falling back to" in m for m in logs)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["choice"]["chosen"] == r.choice.chosen.label
    assert r.choice.chosen.label != ch.chosen.label

    # nothing ever gives a bitstream: the number of tries is bounded, and the result says why
    calls.clear()
    monkeypatch.setattr(flow, "synth_board", lambda *a, **k: (_ for _ in ()).throw(flow.CapacityError("too big")))
    r = flow.build_for_board(net, brd, tmp_path / "c", log=lambda _m: None)
    assert r.fallbacks == flow.MAX_FALLBACKS and "too big" in r.error and not r.ok


def test_a_tool_run_that_crashes_in_its_runtime_runs_once_more(tmp_path):
    """synth.sh/pnr.sh killed by SIGBUS (YoWASP's cache file rewritten under it) runs a second
    time, noted in the log; a second crash, or an ordinary failure, is reported as it is."""
    from mamfpga.boards.flow import _run_script

    crash_once = ("if [ ! -f crashed ]; then touch crashed; sh -c 'kill -BUS $$'; exit $?; fi\n"
                  "echo built > result\n")
    (tmp_path / "once.sh").write_text(crash_once)
    log = tmp_path / "build.log"
    assert _run_script("once.sh", tmp_path, log, "building", None, "yosys") == 0
    assert (tmp_path / "result").read_text() == "built\n"
    assert "died by signal 7 (Bus error)" in log.read_text()

    (tmp_path / "always.sh").write_text("sh -c 'kill -BUS $$'\n")
    assert _run_script("always.sh", tmp_path, log, "building", None, "yosys") == 128 + 7
    assert log.read_text().count("died by signal 7") == 1

    (tmp_path / "fails.sh").write_text("echo no >&2; exit 1\n")
    assert _run_script("fails.sh", tmp_path, log, "building", None, "yosys") == 1
    assert "died by signal" not in log.read_text()


def test_a_near_miss_is_placed_again_with_other_seeds_before_the_clock_is_lowered(monkeypatch):
    """The retry policy of synth_board, on a stand-in for one place and route whose Fmax depends
    on the seed: a miss within NEAR_MISS tries the next seeds at the same clock, a wide miss (or
    the seeds spent) lowers the clock under the best Fmax reached, a pinned clock is never lowered,
    and the report keeps every attempt."""
    seen = []

    def fake(fmax_of):
        def once(build, board, *, bitstream, target, baud, seed, log, again):
            # the same design placed again at the same clock (its synthesis not announced again)
            assert again == any(a["clock_mhz"] == target / 1e6 for a in seen)
            seen.append({"clock_mhz": target / 1e6})
            clk = target / 1e6
            fmax = fmax_of(clk, seed)
            return SynthFigures("icebreaker", "iCE40UP5K", {"mhz": clk}, {}, fmax_mhz=fmax,
                                timing_met=fmax >= clk)
        return once

    logged = []

    def tries(fmax_of, **kw):
        seen.clear()
        logged.clear()
        monkeypatch.setattr(flow, "_synth_once", fake(fmax_of))
        syn = flow.synth_board(Path("b"), board("icebreaker"), log=logged.append, **kw)
        return [(a["clock_mhz"], a["seed"]) for a in syn.attempts], syn

    # seed 3 meets 48 MHz: found at the target, the clock never lowered
    att, syn = tries(lambda clk, seed: 49.0 if seed == 3 else 45.0)
    assert att == [(48, 1), (48, 2), (48, 3)] and syn.timing_met and syn.clock["mhz"] == 48
    # no seed meets it: after SEEDS_PER_CLOCK seeds the clock goes under the best Fmax (46.5)
    att, syn = tries(lambda clk, seed: 46.5 if seed == 2 else 44.0)
    assert [s for _c, s in att[:3]] == [1, 2, 3] and all(c == 48 for c, _s in att[:3])
    assert att[3][0] == pytest.approx(46.5 * flow.RETRY_MARGIN) and att[3][1] == 4 and syn.timing_met
    assert syn.target_mhz == 48                     # the report keeps the clock asked for
    # a placement far under what others reached is that seed's luck: the lowered clock gets its
    # seeds too, and is lowered again under the best of all (not under the unlucky one)
    att, syn = tries(lambda clk, seed: {4: 39.1}.get(seed, 47.4 if seed <= 3 else 47.0))
    assert att[3] == (pytest.approx(47.4 * flow.RETRY_MARGIN), 4) and att[4] == (att[3][0], 5) and syn.timing_met
    # ... and the log names both: this placement's Fmax and the best that made it a near miss
    assert any("Fmax 39.1 MHz" in m and "best placement so far 47.4 MHz" in m for m in logged), logged
    # the first seed 12.5 % under (42.0 of 48) and the next meeting it, as a robustness network
    # placed: the next seed is tried at 48, not the clock lowered to 40.5
    att, syn = tries(lambda clk, seed: 42.0 if seed == 1 else 49.0)
    assert att == [(48, 1), (48, 2)] and syn.timing_met and syn.clock["mhz"] == 48
    # a wide miss (30 of 48 MHz) is no seed's luck: lowered at once
    att, syn = tries(lambda clk, seed: 30.0)
    assert att[0] == (48, 1) and att[1] == (pytest.approx(30.0 * flow.RETRY_MARGIN), 2) and syn.timing_met
    # a pinned clock tries the seeds, then stops with timing not met; seeds=1 places once
    att, syn = tries(lambda clk, seed: 45.0, clock_hz=48e6)
    assert att == [(48, 1), (48, 2), (48, 3)] and not syn.timing_met
    att, syn = tries(lambda clk, seed: 45.0, clock_hz=48e6, seed=7, seeds=1)
    assert att == [(48, 7)] and not syn.timing_met
    # never met: the number of placements is bounded by seeds x (retries + 1)
    att, syn = tries(lambda clk, seed: clk * 0.95, retries=2)
    assert len(att) == flow.SEEDS_PER_CLOCK * 3 and not syn.timing_met
