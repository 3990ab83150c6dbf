"""Conv networks through the compiler: the memory images, run by the program simulator, equal
the golden model; the feature-map layout keeps every border at zero; the cycle model."""

import numpy as np
import pytest

import mamfpga.compile as compiler
from mamfpga.compile.arch import ArchConfig, layer_overhead
from mamfpga.compile.ir import CompileError
from mamfpga.compile.maps import MapLayout, place
from mamfpga.compile.progsim import first_differing_layer, run_program_layers, golden_layers
from mamfpga.sw.qnet import QuantLayer, QuantNetwork
from tests.support import conv_inputs, random_requant, random_conv_network, random_network


def test_program_equals_golden_on_150_random_conv_networks():
    rng = np.random.default_rng(1401)
    seen = {"pad": 0, "pool": 0, "mam": 0, "scales": 0, "dense": 0, "stride": 0}
    for n in range(150):
        net = random_conv_network(rng)
        P, L = int(rng.choice([1, 2, 4, 8])), int(rng.choice([1, 2, 4]))
        program = compiler.compile_network(net, ArchConfig(pes=P, lanes=L, lane_copies=n % 4 == 3,
                                                           pack_rows=n % 2 == 1))
        x = conv_inputs(rng, net.input_shape, 4).reshape(4, -1)[:, program.columns]
        got, want = run_program_layers(program, x), golden_layers(program, x)
        for k, (g, w) in enumerate(zip(got, want)):
            assert np.array_equal(g, w), f"network {n} (P={P}, L={L}): layer {k} differs"
        convs = [l for l in net.layers if l.kind == "conv2d"]
        seen["pad"] += any(any(l.padding) for l in convs)
        seen["pool"] += any(l.kind == "maxpool2d" for l in net.layers)
        seen["mam"] += any(l.mode == "mam" for l in convs)
        seen["scales"] += program.scales
        seen["dense"] += net.layers[-1].kind == "dense"
        seen["stride"] += any(max(l.stride) > 1 for l in convs)
    assert min(seen.values()) >= 30, seen


def test_program_equals_golden_with_output_clamps_and_unsigned_bytes():
    """act_max 2**n - 1 per layer, 255 among them (unsigned bytes the next layer reads as 0..255):
    conv, pooled, dense, row-parallel and column-split layers, the program simulator = golden."""
    rng = np.random.default_rng(1511)
    seen = {"unsigned": 0, "split": 0, "pool after unsigned": 0}
    for n in range(80):
        net = random_conv_network(rng) if n % 2 else random_network(rng, [int(rng.integers(4, 40)), 24, 16, 5],
                                                                     float(rng.choice([0.1, 0.5])), ["mam", "mac"])
        net = random_requant(rng, net)
        P, L = int(rng.choice([1, 2, 4])), int(rng.choice([1, 2, 4]))
        program = compiler.compile_network(net, ArchConfig(pes=P, lanes=L))
        x = conv_inputs(rng, net.input_shape, 4).reshape(4, -1)[:, program.columns]
        for k, (g, w) in enumerate(zip(run_program_layers(program, x), golden_layers(program, x))):
            assert np.array_equal(g, w), f"network {n} (P={P}, L={L}): layer {k} differs"
        seen["unsigned"] += any(p.in_unsigned for p in program.layers)
        seen["split"] += any(p.split and p.in_unsigned for p in program.layers)
        seen["pool after unsigned"] += any(p.act_max == 255 and p.out is not None and p.out.window > 1
                                           for p in program.layers)
    assert min(seen.values()) >= 3, seen


def _write_addresses(program):
    """Every byte address each write of an inference reaches, per side: the input, then each
    layer's words (all P bytes of a row-parallel word) or split rows."""
    P = program.config.pes
    writes = [[np.asarray(program.input_address)], []]
    for k, plan in enumerate(program.layers):
        side = (k + 1) % 2
        if plan.split:
            writes[side].append(np.asarray(plan.out_address))
        else:
            words = plan.out.words()
            writes[side].append((words[:, None] * P + np.arange(P)[None, :]).ravel())
    return [np.concatenate(w) if w else np.zeros(0, np.int64) for w in writes]


def test_no_write_reaches_a_border_a_conv_reads():
    rng = np.random.default_rng(1402)
    checked = 0
    for n in range(120):
        net = random_conv_network(rng)
        P = int(rng.choice([1, 2, 4]))
        program = compiler.compile_network(net, ArchConfig(pes=P, lanes=1))
        writes = _write_addresses(program)
        for k, plan in enumerate(program.layers):
            if plan.geom is None or not any(plan.geom.src.pad):
                continue
            src = plan.geom.src
            full = MapLayout(src.base, src.cs, src.chan, src.hp, src.wp)      # the whole padded grid
            border = np.setdiff1d(full.addresses(), src.addresses())
            assert not np.isin(border, writes[k % 2]).any(), f"network {n}: a write reaches layer {k}'s border"
            assert src.extent <= program.side_bytes
            checked += 1
    assert checked >= 40


def test_place_gives_bordered_maps_their_own_region():
    bases, need = place([(0, 10, True), (1, 7, False), (0, 5, False), (1, 6, True), (0, 3, True)], pes=4)
    assert bases == [0, 8, 16, 0, 12]        # exclusive first, on word boundaries, then the shared rest
    assert need == [24, 16]


def _mnist_like_cnn():
    rng = np.random.default_rng(3)
    w1 = (rng.integers(-60, 60, (8, 1, 3, 3)) * (rng.random((8, 1, 3, 3)) < 0.6)).astype(np.int8)
    w2 = (rng.integers(-60, 60, (16, 8, 3, 3)) * (rng.random((16, 8, 3, 3)) < 0.3)).astype(np.int8)
    w3 = (rng.integers(-60, 60, (10, 16 * 5 * 5)) * (rng.random((10, 400)) < 0.2)).astype(np.int8)
    return QuantNetwork([
        QuantLayer(w1, np.zeros(8, np.int32), "mac", np.arange(1, 9) * 100, np.full(8, 12), True, kind="conv2d"),
        QuantLayer(None, None, kind="maxpool2d", kernel=(2, 2), stride=(2, 2)),
        QuantLayer(w2, np.zeros(16, np.int32), "mam", 300, 10, True, kind="conv2d"),
        QuantLayer(None, None, kind="maxpool2d", kernel=(2, 2), stride=(2, 2)),
        QuantLayer(w3, np.zeros(10, np.int32), "mac", 100, 12, False)], input_shape=(1, 28, 28))


@pytest.mark.parametrize("P,L", [(1, 1), (2, 1), (4, 2)])
def test_conv_cycle_model_and_bound(P, L):
    """A conv layer takes positions x words per position + the pipeline; its bound is
    max(positions x nnz / (P L), outputs / P); the per-position words are the PEs' most."""
    program = compiler.compile_network(_mnist_like_cnn(), ArchConfig(pes=P, lanes=L))
    cfg = program.config
    for plan in program.layers[:2]:
        assert plan.kind == "conv2d" and plan.geom.pool == (2, 2)
        words = {len(w) for w in plan.words}
        assert len(words) == 1                      # every PE reads as many words per position
        # alone; the next layer starts ``overlap`` cycles before its last write (compile/schedule.py)
        assert plan.cycles_model + plan.overlap == plan.geom.positions * words.pop() + layer_overhead(cfg)
        assert 0 <= plan.overlap < layer_overhead(cfg)
        outs = plan.geom.out_h * plan.geom.out_w * plan.rows
        assert plan.cycles_bound == max(-(-plan.geom.positions * plan.nnz // (P * L)), -(-outs // P))
    assert [p.geom.positions for p in program.layers[:2]] == [26 * 26, 10 * 10]   # 11 x 11 pooled floors to 10
    x = conv_inputs(np.random.default_rng(0), (1, 28, 28), 3).reshape(3, -1)
    assert first_differing_layer(program, x) is None


def test_a_pool_that_is_not_fused_is_refused_by_name():
    net = QuantNetwork([QuantLayer(None, None, kind="maxpool2d", kernel=(2, 2), stride=(2, 2)),
                        QuantLayer(np.ones((2, 4), np.int8), np.zeros(2, np.int32))], input_shape=(1, 4, 4))
    with pytest.raises(CompileError, match="layer0 is a max pool after the input layer; the accelerator fuses"):
        compiler.compile_network(net, ArchConfig(pes=1, lanes=1))


def test_input_pitch_spreads_a_one_channel_filter_over_the_lanes():
    """A dense 3 x 3 filter on a one-channel 28-wide input: with the even pitch 28 its columns
    kx = 0 and 2 share lane 0 of two (6 words a position); the compiler pitches the input map
    odd (5 words, the fewest), the unused column never written nor read, and the memory images
    still compute the golden outputs."""
    from mamfpga.compile.passes import input_pitch_extra
    rng = np.random.default_rng(7)
    w = rng.integers(1, 60, size=(1, 1, 3, 3)).astype(np.int8)
    conv = QuantLayer(w, np.zeros(1, np.int32), "mac", 1, 6, True, kind="conv2d", stride=(1, 1),
                      padding=(0, 0, 0, 0), kernel=(3, 3))
    net = QuantNetwork([conv], input_shape=(1, 28, 28))
    cfg = ArchConfig(pes=1, lanes=2)
    assert input_pitch_extra(net, cfg, (0, 0, 0, 0)) % 2 == 1
    program = compiler.compile_network(net, cfg)
    assert program.layers[0].pe_words == [5]
    x = conv_inputs(rng, net.input_shape, 3).reshape(3, -1)[:, program.columns]
    assert first_differing_layer(program, x) is None
    assert input_pitch_extra(net, ArchConfig(pes=1, lanes=1), (0, 0, 0, 0)) == 0
