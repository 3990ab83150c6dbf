"""The whole accelerator in Amaranth's simulator: random networks against the golden model."""

import numpy as np
import pytest

from tests.support import simulate_accelerator as simulate
from mamfpga.compile.arch import ArchConfig
import mamfpga.compile as compiler
from mamfpga.sw import golden
from tests.sw.test_golden import random_qnet


@pytest.mark.parametrize("seed", range(16))
def test_random_networks_equal_golden(seed):
    """Odd seeds with the lane trees' compares registered (two stages a level, an option of the generator);
    seeds 4k + 2, 4k + 3 with rows sharing words."""
    rng = np.random.default_rng(500 + seed)
    net = random_qnet(rng, max_size=20)
    cfg = ArchConfig(pes=int(rng.choice([1, 2, 4])), lanes=int(rng.choice([1, 2, 4])), lane_copies=seed % 3 == 1,
                     tree_stages=1 + seed % 2, pack_rows=seed % 4 >= 2)
    program = compiler.compile_network(net, cfg, split=str(rng.choice(["auto", "never", "always"])))
    x = rng.integers(-128, 128, size=(3, net.input_size)).astype(np.int8)
    x[0] = 0
    got, cycles = simulate(program, x[:, program.columns])
    want = golden.run(net, x)
    assert np.array_equal(got, want), f"first mismatch at {np.argwhere(got != want)[0]}"
    assert cycles == program.cycles_model


def test_gaps_and_backpressure():
    rng = np.random.default_rng(9)
    net = random_qnet(rng, max_size=16)
    program = compiler.compile_network(net, ArchConfig(pes=2, lanes=2))
    x = rng.integers(-128, 128, size=(3, net.input_size)).astype(np.int8)
    got, _ = simulate(program, x[:, program.columns], gap_prob=0.4, stall_prob=0.5, seed=3)
    assert np.array_equal(got, golden.run(net, x))


def _random_case(seed):
    rng = np.random.default_rng(500 + seed)
    net = random_qnet(rng, max_size=20)
    cfg = ArchConfig(pes=int(rng.choice([1, 2, 4])), lanes=int(rng.choice([1, 2, 4])), lane_copies=seed % 3 == 1)
    split = str(rng.choice(["auto", "never", "always"]))
    x = rng.integers(-128, 128, size=(3, net.input_size)).astype(np.int8)
    return net, cfg, split, x


def test_a_layer_started_a_cycle_early_reads_a_stale_activation(monkeypatch):
    """The schedule (mamfpga.compile.schedule) starts each layer at the first cycle its reads
    allow, not later with a margin: one cycle earlier, a read meets the write of its value in the
    same cycle, gets the old one, and the outputs go wrong (this network's binding read is a
    real one: the tests above would see an off-by-one)."""
    from mamfpga.compile import schedule
    net, cfg, split, x = _random_case(1)
    right = compiler.compile_network(net, cfg, split=split)
    assert any(p.overlap > 0 for p in right.layers)
    monkeypatch.setattr(schedule, "FETCH_TO_READ", schedule.FETCH_TO_READ + 1)
    early = compiler.compile_network(net, cfg, split=split)
    assert early.cycles_model < right.cycles_model
    got, cycles = simulate(early, x[:, early.columns])
    assert cycles == early.cycles_model
    assert not np.array_equal(got, golden.run(net, x))


def test_registered_tree_compares_cost_a_stage_a_level_and_no_device_sets_them():
    """Lane trees of two stages a level (their compares registered) take a cycle more a tree
    level in every layer alone, which the cycle model counts; a program compiled for a device of
    either family keeps the configuration's one stage (the compares are one carry chain,
    mamfpga.hw.compare, and the ECP5 places one stage as fast)."""
    from mamfpga.compile.device import DEVICES
    from mamfpga.compile.schedule import alone_cycles

    net = random_qnet(np.random.default_rng(3), max_size=20)
    plain = compiler.compile_network(net, ArchConfig(pes=2, lanes=4))
    staged = compiler.compile_network(net, ArchConfig(pes=2, lanes=4, tree_stages=2))
    assert [alone_cycles(b, staged.config) - alone_cycles(a, plain.config) for a, b in zip(plain.layers, staged.layers)] \
        == [2] * len(plain.layers)
    for family in ("ice40", "ecp5"):
        dev = next(d for d in DEVICES.values() if d.family == family)
        prog = compiler.compile_network(net, ArchConfig(pes=2, lanes=4), device=dev)
        assert prog.config.tree_stages == 1 and prog.cycles_model == plain.cycles_model
