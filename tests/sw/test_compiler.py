import time

import numpy as np
import pytest

from mamfpga.compile.arch import ArchConfig
import mamfpga.compile as compiler
from mamfpga.compile import passes
from mamfpga.sw import golden
from mamfpga.compile.progsim import run_program
from mamfpga.sw.qnet import QuantLayer, QuantNetwork
from tests.support import random_network
from tests.sw.test_golden import random_qnet


def _check(net, cfg, x, **kw):
    prog = compiler.compile_network(net, cfg, **kw)
    want = golden.run(net, x)
    got = run_program(prog, x[:, prog.columns])
    assert np.array_equal(got, want), f"first mismatch at {np.argwhere(got != want)[0]}"
    return prog


@pytest.mark.parametrize("seed", range(60))
def test_program_computes_golden(seed):
    """The memory images, decoded as the hardware will, equal the golden model."""
    rng = np.random.default_rng(seed)
    net = random_qnet(rng)
    cfg = ArchConfig(pes=int(rng.choice([1, 2, 4, 8, 16])), lanes=int(rng.choice([1, 2, 4, 8])),
                     lane_copies=seed % 4 == 1, pack_rows=seed % 3 == 2)
    x = rng.integers(-128, 128, size=(12, net.input_size)).astype(np.int8)
    x[0] = 0
    split = str(rng.choice(["auto", "never", "always"]))
    _check(net, cfg, x, split=split, delta_bits=int(rng.choice([1, 2, 3, 4])) if seed % 3 == 0 else None)


def test_gap_fillers_over_padding_addresses_in_dense_mam_row():
    """A MAM row with no zero weight whose columns sit far apart in address space
    (fillers over padding addresses) must not gain a 0 candidate."""
    rng = np.random.default_rng(3)
    w0 = rng.integers(1, 100, size=(9, 4)).astype(np.int8)        # 9 rows on 4 PEs: 3 padding rows
    w1 = rng.integers(1, 100, size=(2, 9)).astype(np.int8)        # dense MAM rows
    w1[1] *= -1
    net = QuantNetwork([QuantLayer(w0, np.zeros(9, np.int32), "mac", 1, 8, True),
                        QuantLayer(w1, np.array([-5000, 7000], np.int32), "mam", 1, 6, False)])
    x = rng.integers(0, 128, size=(20, 4)).astype(np.int8)
    _check(net, ArchConfig(pes=4, lanes=2), x, delta_bits=1, split="never")


def test_accumulator_proof_refuses_with_numbers():
    w = np.full((2, 300), 127, np.int8)
    net = QuantNetwork([QuantLayer(w, np.zeros(2, np.int32), "mac", 1, 0, False)])
    with pytest.raises(compiler.CompileError, match=r"layer 0 needs a 24-bit accumulator.*has 16"):
        passes.prove_accumulators(net, 16)


def test_dead_elimination_is_integer_exact():
    rng = np.random.default_rng(0)
    w0 = rng.integers(-5, 6, size=(6, 5)).astype(np.int8)
    w0[2] = 0
    w0[4] = 0                                                       # dead neurons with bias
    w0[:, 3] = 0                                                    # unread input
    w1 = rng.integers(-9, 10, size=(3, 6)).astype(np.int8)
    w1[:, 5] = 0                                                    # unread neuron
    net = QuantNetwork([QuantLayer(w0, np.array([1, 2, 300, 4, -50, 6], np.int32), "mac", 3, 2, True),
                        QuantLayer(w1, np.array([10, -10, 0], np.int32), "mac", 5, 4, False)])
    small, index, info = passes.eliminate(net)
    assert info["sizes_after"] == [4, 3, 3]
    x = rng.integers(-128, 128, size=(50, 5)).astype(np.int8)
    assert np.array_equal(golden.run(small, x[:, index]), golden.run(net, x))
    _check(net, ArchConfig(pes=2, lanes=2), x)


def test_balance_is_better_than_round_robin():
    rng = np.random.default_rng(1)
    w = (rng.integers(-50, 50, size=(64, 128)) * (rng.random((64, 128)) < rng.random((64, 1)) * 0.5)).astype(np.int8)
    net = QuantNetwork([QuantLayer(w, np.zeros(64, np.int32), "mac", 1, 10, False)])
    cfg = ArchConfig(pes=4, lanes=1)
    prog = compiler.compile_network(net, cfg, split="never")
    costs = [max(1, int(np.count_nonzero(r))) for r in w]
    rr = max(sum(costs[p::4]) for p in range(4))
    assert max(prog.layers[0].pe_words) < rr
    assert max(prog.layers[0].pe_words) <= np.ceil(sum(costs) / 4) + max(costs)


def test_capacity_refused_with_numbers():
    w = np.ones((1024, 1024), np.int8)
    net = QuantNetwork([QuantLayer(w, np.zeros(1024, np.int32), "mac", 1, 20, False)])
    with pytest.raises(compiler.CompileError, match=r"needs \d+ block RAMs .* the iCE40UP5K has 30"):
        compiler.compile_network(net, ArchConfig(pes=2, lanes=2), device=compiler.device("iCE40UP5K"))


def test_compiles_a_3072x768_layer_at_0_1_percent_in_under_a_second():
    rng = np.random.default_rng(2)
    w = np.zeros((768, 3072), np.int8)
    idx = rng.choice(w.size, size=w.size // 1000, replace=False)
    w.flat[idx] = rng.integers(1, 127, size=len(idx))
    net = QuantNetwork([QuantLayer(w, np.zeros(768, np.int32), "mam", 1, 8, False)])
    t = time.perf_counter()
    compiler.compile_network(net, ArchConfig(pes=8, lanes=2))
    # generous here (shared CI machine); scripts/bench reports the measured time
    assert time.perf_counter() - t < 5.0


@pytest.mark.parametrize("bad_layer", [None, 0, 1, 2])
def test_first_differing_layer_of_a_program_is_named(bad_layer):
    """A fault in one layer's memory image is blamed on that layer, not on the last one."""
    from mamfpga.compile.progsim import first_differing_layer

    rng = np.random.default_rng(12)
    net = random_network(rng, [20, 16, 12, 6], 0.5, ["mam", "mac", "mac"])
    prog = compiler.compile_network(net, ArchConfig(pes=2, lanes=2), split="never")
    x = rng.integers(-128, 128, size=(6, 20)).astype(np.int8)
    if bad_layer is not None:
        cfg = prog.config
        for p in range(cfg.pes):                # a large change to every bias of the layer
            prog.layers[bad_layer].bias[p] = [b ^ (1 << (cfg.acc_bits - 2)) for b in prog.layers[bad_layer].bias[p]]
    assert first_differing_layer(prog, x) == bad_layer


@pytest.mark.parametrize("P,L", [(1, 2), (2, 2), (4, 2), (2, 4), (8, 4)])
def test_lanes_read_their_own_banks(P, L):
    """Decoded lane by lane (lane k reads origin + k + L x its own running sum), the words give
    the golden outputs, so each lane reads only its own bank; and the activations are counted
    once per PE: L banks of max(1, P / L) bytes a row, not a copy per lane."""
    from mamfpga.compile.arch import bank_bytes
    rng = np.random.default_rng(P * 10 + L)
    net = random_qnet(rng)
    prog = _check(net, ArchConfig(pes=P, lanes=L), rng.integers(-128, 128, size=(4, net.input_size)).astype(np.int8))
    act = passes.memory_use(prog, None)["memories"]["activations"]
    assert act["copies"] == P * L and act["width"] == 8 * bank_bytes(prog.config)
    assert act["bits"] == P * 2 * passes.act_side_words(prog.widest, P, L) * P * 8


def test_lanes_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power-of-two number of lanes.*not 3"):
        ArchConfig(pes=2, lanes=3)


def test_lane_copies_row_costs():
    """A row of 5 nonzeros at addresses 0, 2, 4, 6, 8 (all even): banked over 2 lanes they all
    sit in lane 0 (5 words); with lane copies they alternate lanes (3 words)."""
    csr = passes._CSR(np.array([0, 5]), np.array([0, 2, 4, 6, 8]), np.array([1, 2, 3, 4, 5]))
    assert passes._row_costs(csr, ArchConfig(pes=1, lanes=2)).tolist() == [5]
    assert passes._row_costs(csr, ArchConfig(pes=1, lanes=2, lane_copies=True)).tolist() == [3]


def test_balance_lanes_keeps_the_rows_and_never_scores_worse():
    """The slot search only permutes the rows (padding included) and its cycles are no worse
    than the balanced assignment's on the consumer it balances for."""
    rng = np.random.default_rng(5)
    w0 = (rng.random((24, 20)) < 0.3) * rng.integers(1, 50, size=(24, 20))
    w1 = (rng.random((12, 24)) < 0.2) * rng.integers(1, 50, size=(12, 24))
    net = QuantNetwork([QuantLayer(w0.astype(np.int8), np.zeros(24, np.int32), "mac", 1, 8, True),
                        QuantLayer(w1.astype(np.int8), np.zeros(12, np.int32), "mam", 1, 6, False)])
    cfg = ArchConfig(pes=4, lanes=2)
    csr = passes._csr(net.layers[0], np.arange(20))
    costs = passes._row_costs(csr, cfg)
    start = passes.assign_rows(costs.tolist(), 4)
    consumer = passes._consumer_of(net, passes.hw_layers(net), 0, None)
    rows = passes.balance_lanes(start, costs, 1, consumer, cfg)
    assert sorted(sum(rows, [])) == sorted(sum(start, []))
    no_search = passes.balance_lanes(start, costs, 1, consumer, cfg, tries=0)
    assert no_search == start
    x = rng.integers(-128, 128, size=(8, 20)).astype(np.int8)
    prog = _check(net, cfg, x, split="never")
    orig, passes.LANE_BALANCE_TRIES = passes.LANE_BALANCE_TRIES, 0
    try:
        plain = compiler.compile_network(net, cfg, split="never")
    finally:
        passes.LANE_BALANCE_TRIES = orig
    assert prog.cycles_model <= plain.cycles_model


def test_lane_copies_cost_ceil_nnz_over_lanes_and_l_copies_of_memory():
    """With a copy of the activations per lane, any nonzero goes in any lane: a row costs
    ceil(nnz / L) words (plus gap fillers), never more than banked; the activation memory is L
    copies of P bytes a word."""
    rng = np.random.default_rng(11)
    net = random_qnet(rng)
    x = rng.integers(-128, 128, size=(4, net.input_size)).astype(np.int8)
    for P, L in ((2, 2), (1, 4), (4, 2)):
        banked = _check(net, ArchConfig(pes=P, lanes=L), x, split="never", delta_bits=8)
        copies = _check(net, ArchConfig(pes=P, lanes=L, lane_copies=True), x, split="never", delta_bits=8)
        assert copies.cycles_model <= banked.cycles_model
        act = passes.memory_use(copies, None)["memories"]["activations"]
        assert act["copies"] == P * L and act["width"] == 8 * P
        assert act["bits"] == P * L * 8 * P * 2 * passes.act_side_words(copies.widest, P)


def test_rows_ordered_by_readiness_start_layers_earlier(monkeypatch):
    """Each PE runs its rows in the order the layer before writes their inputs: the rows stay
    on their PEs, the layers overlap more than in the balancer's order, and the program still
    computes the network (a 3-layer network at 3 % density, as pruned networks are)."""
    rng = np.random.default_rng(4)
    layers = []
    for m, n in ((128, 96), (128, 128), (10, 128)):
        w = (rng.integers(-127, 128, (m, n)) * (rng.random((m, n)) < 0.03)).astype(np.int8)
        layers.append(QuantLayer(w, np.zeros(m, np.int32), "mac", 1000, 12, True))
    net = QuantNetwork(layers)
    cfg = ArchConfig(pes=4, lanes=2)
    ordered = compiler.compile_network(net, cfg, split="never")
    monkeypatch.setattr(passes, "order_by_readiness", lambda shape, before, cfg: shape.rows)
    plain = compiler.compile_network(net, cfg, split="never")
    # layer 1 reads what layer 0 writes in the same order in both: its rows keep their PEs
    a, b = ordered.layers[1], plain.layers[1]
    assert [sorted(r) for r in a.assignment] == [sorted(r) for r in b.assignment]
    assert a.assignment != b.assignment
    assert sum(p.overlap for p in ordered.layers) > sum(p.overlap for p in plain.layers)
    assert ordered.cycles_model < plain.cycles_model
    x = rng.integers(-128, 128, size=(4, net.input_size)).astype(np.int8)
    assert np.array_equal(run_program(ordered, x[:, ordered.columns]), golden.run(net, x))
