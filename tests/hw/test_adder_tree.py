import random

import pytest

from mamfpga.hw.adder_tree import AdderTree
from tests.support import get_all, put_all, run_sim


@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("width,lanes", [(16, 1), (16, 2), (9, 3), (16, 4), (12, 7), (17, 8)])
def test_sum_with_gaps_and_backpressure(width, lanes, stages):
    dut = AdderTree(width=width, lanes=lanes, stages_per_level=stages)
    rng = random.Random(lanes * 31 + width)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    vectors = [[rng.choice([lo, hi, rng.randint(lo, hi)]) for _ in range(lanes)] for _ in range(100)]
    got = []

    async def producer(ctx):
        await put_all(ctx, dut.i, vectors, gap_prob=0.3, rng=random.Random(3))

    async def consumer(ctx):
        got.extend(await get_all(ctx, dut.o, len(vectors), stall_prob=0.3, rng=random.Random(4)))

    run_sim(dut, producer, consumer)
    assert got == [sum(v) for v in vectors]          # full precision: extremes never overflow
    assert dut.out_width == width + (lanes - 1).bit_length()    # one bit a level
    assert dut.latency == (lanes - 1).bit_length() * stages


def test_bad_lanes_named():
    with pytest.raises(ValueError, match="lanes must be between 1 and 4096, not 0"):
        AdderTree(lanes=0)
