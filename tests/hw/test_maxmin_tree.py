import random

import pytest

from mamfpga.hw.maxmin_tree import MaxMinTree
from tests.support import get_all, put_all, run_sim, stream_get, stream_put


def _vectors(rng, width, lanes, count):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    out = []
    for k in range(count):
        if k % 3 == 0:
            out.append([rng.choice([lo, hi, 0, -1]) for _ in range(lanes)])
        else:
            out.append([rng.randint(lo, hi) for _ in range(lanes)])
    return out


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("width,lanes", [(8, 1), (8, 2), (8, 3), (8, 4), (5, 5), (12, 8), (16, 16), (9, 13)])
def test_matches_reference_with_gaps_and_backpressure(width, lanes, registered):
    dut = MaxMinTree(width=width, lanes=lanes, registered_compare=registered)
    rng = random.Random(width * 100 + lanes)
    vectors = _vectors(rng, width, lanes, 120)
    got = []

    async def producer(ctx):
        await put_all(ctx, dut.i, vectors, gap_prob=0.3, rng=random.Random(1))

    async def consumer(ctx):
        got.extend(await get_all(ctx, dut.o, len(vectors), stall_prob=0.4, rng=random.Random(2)))

    run_sim(dut, producer, consumer)
    assert [(p.max, p.min) for p in got] == [(max(v), min(v)) for v in vectors]


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("lanes,levels", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4)])
def test_latency_is_ceil_log2_lanes(lanes, levels, registered):
    """One cycle a level; two with the comparisons registered before the selects."""
    latency = levels * (2 if registered else 1)
    dut = MaxMinTree(width=8, lanes=lanes, registered_compare=registered)
    assert dut.latency == latency
    seen = {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, list(range(lanes)))
        ctx.set(dut.i.valid, 1)
        for cycle in range(latency + 3):
            if ctx.get(dut.o.valid) and "cycle" not in seen:
                seen["cycle"] = cycle
                seen["max"] = ctx.get(dut.o.payload.max)
            await ctx.tick()
            ctx.set(dut.i.valid, 0)

    run_sim(dut, tb)
    assert seen == {"cycle": latency, "max": lanes - 1}


def test_full_throughput_one_vector_per_cycle():
    dut = MaxMinTree(width=8, lanes=4)
    vectors = _vectors(random.Random(7), 8, 4, 50)
    timeline = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for v in vectors + [None] * dut.latency:
            if v is not None:
                ctx.set(dut.i.payload, v)
                ctx.set(dut.i.valid, 1)
            else:
                ctx.set(dut.i.valid, 0)
            assert ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                timeline.append((ctx.get(dut.o.payload.max), ctx.get(dut.o.payload.min)))
            await ctx.tick()

    run_sim(dut, tb)
    assert timeline == [(max(v), min(v)) for v in vectors]


def test_output_held_under_backpressure():
    dut = MaxMinTree(width=8, lanes=2)   # one pipeline stage: holds one vector

    async def tb(ctx):
        await stream_put(ctx, dut.i, [3, -7])
        ctx.set(dut.i.payload, [1, 2])
        ctx.set(dut.i.valid, 1)
        for _ in range(5):               # nobody reads: the stage is full and stalls
            await ctx.tick()
            assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
            assert (ctx.get(dut.o.payload.max), ctx.get(dut.o.payload.min)) == (3, -7)
        first = await stream_get(ctx, dut.o)   # reading frees the stage: [1, 2] goes in
        ctx.set(dut.i.valid, 0)
        second = await stream_get(ctx, dut.o)
        assert (first.max, first.min, second.max, second.min) == (3, -7, 2, 1)

    run_sim(dut, tb)


@pytest.mark.parametrize("kwargs,exc,words", [
    ({"width": 1}, ValueError, "width must be between 2 and 64, not 1"),
    ({"lanes": 0}, ValueError, "lanes must be between 1 and 4096, not 0"),
    ({"lanes": 2.0}, TypeError, "lanes must be an integer"),
    ({"width": True}, TypeError, "width must be an integer"),
])
def test_bad_parameters_are_named(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        MaxMinTree(**kwargs)


def test_parameters_read_only():
    dut = MaxMinTree(width=6, lanes=3)
    assert (dut.width, dut.lanes) == (6, 3)
    with pytest.raises(AttributeError):
        dut.lanes = 4


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("lanes", [2, 3, 4, 8])
def test_invalid_lanes_take_no_part(lanes, registered):
    """A lane whose lane_valid bit is 0 (a MAM lane with a zero weight) never wins; ``any`` says
    whether a lane was valid (all invalid, all valid and extremes included); with the comparisons
    registered before the selects (the PE's tree) too."""
    dut = MaxMinTree(width=8, lanes=lanes, registered_compare=registered)
    rng = random.Random(lanes)
    vectors = _vectors(rng, 8, lanes, 80)
    masks = [0, (1 << lanes) - 1, 1, 1 << (lanes - 1)] + [rng.randrange(1 << lanes) for _ in vectors[4:]]
    got = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for v, msk in list(zip(vectors, masks)) + [(None, 0)] * dut.latency:
            ctx.set(dut.i.valid, v is not None)
            if v is not None:
                ctx.set(dut.i.payload, v)
                ctx.set(dut.lane_valid, msk)
            if ctx.get(dut.o.valid):
                p = ctx.get(dut.o.payload)
                got.append((p.max, p.min) if p.any else None)
            await ctx.tick()

    run_sim(dut, tb)
    want = []
    for v, msk in zip(vectors, masks):
        sel = [x for k, x in enumerate(v) if msk >> k & 1]
        want.append((max(sel), min(sel)) if sel else None)
    assert got == want
