import pytest

from mamfpga.boards.resources import synth_resources
from mamfpga.hw.maxmin_tree import MaxMinTree
from mamfpga.hw.verilog import to_verilog


def expected_ffs(width, lanes):
    """Registers of the tree: at each level, a max and a min per node, plus one valid bit."""
    ffs, nodes = 0, lanes
    while nodes > 1:
        nodes = (nodes + 1) // 2
        ffs += nodes * 2 * width + 1
    return ffs


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
@pytest.mark.parametrize("lanes", [2, 4, 8])
def test_tree_synthesizes(family, lanes):
    res = synth_resources(to_verilog(MaxMinTree(width=8, lanes=lanes), "maxmin_tree"), "maxmin_tree", family)
    print(f"\nMaxMinTree W=8 L={lanes} {family}: {res.lut} LUT, {res.ff} FF")
    assert res.ff == expected_ffs(8, lanes)
    # Each comparator is about one LUT per bit plus the muxes: L-1 max and
    # L-1 min reductions of 8-bit values, less sharing at the first level.
    assert 8 * (lanes - 1) <= res.lut <= 40 * (lanes - 1)
    assert res.bram == 0 and res.dsp == 0


@pytest.mark.synth
def test_unknown_family_named():
    with pytest.raises(ValueError, match="unknown FPGA family 'xilinx7'"):
        synth_resources("module m; endmodule\n", "m", "xilinx7")
