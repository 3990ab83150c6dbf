"""The comparator tree as Verilog, under cocotb on Verilator and on Icarus."""

import pytest
from amaranth import Module
from amaranth.lib import wiring

from mamfpga.hw.maxmin_tree import MaxMinTree
from mamfpga.hw.verilog import lint, write_verilog
from mamfpga.sim.runner import run_cocotb


def _run(build_dir, simulator, width, lanes, **cfg):
    src = write_verilog(MaxMinTree(width=width, lanes=lanes), "maxmin_tree", build_dir / "maxmin_tree.v")
    return run_cocotb(
        verilog_sources=[src], toplevel="maxmin_tree", test_module="mamfpga.sim.tb_maxmin_tree",
        build_dir=build_dir / simulator, simulator=simulator,
        config={"width": width, "lanes": lanes, "vectors": 400, "seed": width + lanes, **cfg},
    )


@pytest.mark.sim
@pytest.mark.parametrize("width,lanes", [(8, 1), (8, 4), (12, 7), (16, 16)])
def test_verilator(build_dir, width, lanes):
    res = _run(build_dir, "verilator", width, lanes)
    assert res.tests == 1 and res.failed == 0, res.failures


@pytest.mark.sim
@pytest.mark.needs_tool("iverilog")
@pytest.mark.parametrize("width,lanes", [(8, 4), (10, 5)])
def test_icarus(build_dir, width, lanes):
    res = _run(build_dir, "icarus", width, lanes)
    assert res.tests == 1 and res.failed == 0, res.failures


class LastLaneStuckAtZero(wiring.Component):
    """A deliberately wrong tree: lane L-1 is read as 0."""

    def __init__(self, width, lanes):
        self.tree = MaxMinTree(width=width, lanes=lanes)
        super().__init__(dict(self.tree.signature.members.items()))

    def elaborate(self, platform):
        m = Module()
        m.submodules.tree = self.tree
        wiring.connect(m, wiring.flipped(self.o), self.tree.o)
        m.d.comb += [self.tree.i.valid.eq(self.i.valid), self.i.ready.eq(self.tree.i.ready)]
        for k in range(self.tree.lanes - 1):
            m.d.comb += self.tree.i.payload[k].eq(self.i.payload[k])
        return m


@pytest.mark.sim
def test_wrong_design_is_caught(build_dir):
    """The testbench can fail: a tree that ignores one lane mismatches the reference."""
    src = write_verilog(LastLaneStuckAtZero(8, 4), "maxmin_tree", build_dir / "maxmin_tree.v")
    res = run_cocotb(verilog_sources=[src], toplevel="maxmin_tree",
                     test_module="mamfpga.sim.tb_maxmin_tree", build_dir=build_dir / "v",
                     config={"width": 8, "lanes": 4, "vectors": 50, "seed": 3})
    assert res.tests == 1 and res.failed == 1
    assert "expected" in res.failures[0]


@pytest.mark.sim
def test_verilator_lint_clean(build_dir):
    for lanes in (1, 2, 5, 8):
        src = write_verilog(MaxMinTree(width=8, lanes=lanes), "maxmin_tree", build_dir / f"t{lanes}.v")
        assert lint(src) == []


@pytest.mark.sim
def test_lint_reports_real_problems(build_dir):
    bad = build_dir / "bad.v"
    bad.write_text("module bad(input [7:0] a, output [3:0] y);\nendmodule\n")   # y is never driven
    issues = lint(bad)
    assert any("UNDRIVEN" in i for i in issues), issues
