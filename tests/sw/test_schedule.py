"""The layer schedule (mamfpga.compile.schedule): what it reads of the compiled words, and its rules."""

import numpy as np
import pytest

import mamfpga.compile as compiler
from mamfpga.compile import schedule
from mamfpga.compile.arch import ArchConfig, lane_column, unpack, weight_word_fields
from tests.sw.test_golden import random_qnet


def _reads_word_by_word(plan, p, cfg):
    """The reads as the program simulator decodes words: one word, one lane at a time."""
    L = cfg.lanes
    fields, out, q, start = weight_word_fields(cfg), [], [0] * L, True
    origin = plan.col_ranges[p] if plan.split else 0
    for i, w in enumerate(plan.words[p]):
        f = unpack(fields, w)
        if start:
            q = [0] * L
        for k in range(L):
            q[k] += f[f"delta{k}"]
            if f[f"weight{k}"] != 0:
                out.append((i, origin + lane_column(0, k, q[k], L, cfg.lane_copies)))
        start = bool(f["eor"])
    return sorted(out)


@pytest.mark.parametrize("seed", range(12))
def test_reads_decoded_at_once_equal_word_by_word(seed):
    """The vectorised decode (words wider than 64 bits at 16 lanes included) reads what the
    word-by-word decode reads."""
    rng = np.random.default_rng(seed)
    net = random_qnet(rng, max_size=40)
    cfg = ArchConfig(pes=int(rng.choice([1, 2, 4])), lanes=int(rng.choice([1, 2, 4, 8, 16])),
                     lane_copies=bool(seed % 2))
    program = compiler.compile_network(net, cfg)
    for plan in program.layers:
        for p in range(program.config.pes):
            j, a = schedule.read_addresses(plan, p, program.config)
            assert sorted(zip(j.tolist(), a.tolist())) == _reads_word_by_word(plan, p, program.config)


@pytest.mark.parametrize("seed", range(12))
def test_each_layer_starts_after_its_fetch_and_no_later_than_alone(seed):
    rng = np.random.default_rng(50 + seed)
    net = random_qnet(rng, max_size=40)
    program = compiler.compile_network(net, ArchConfig(pes=int(rng.choice([1, 2, 4])),
                                                       lanes=int(rng.choice([1, 2, 4]))))
    cfg = program.config
    for k, plan in enumerate(program.layers):
        alone = schedule.alone_cycles(plan, cfg)
        assert plan.cycles_model + plan.overlap == alone
        if k + 1 < len(program.layers):
            assert plan.cycles_model >= max(len(w) for w in plan.words) * plan.positions + 1
        else:       # output r goes out at cycles_model + r: after its write, one of them right after
            addr, when, _ = schedule.write_times(plan, cfg)
            written = dict(zip(addr.tolist(), when.tolist()))
            slack = [plan.cycles_model + r - (written[int(a)] + 1) for r, a in enumerate(program.output_address)]
            assert min(slack) == 0


@pytest.mark.parametrize("lanes", [1, 4, 16])
def test_unpack_words_inverts_pack(lanes):
    """Many words unpacked at once (signed fields sign-extended, words over 64 bits at 16 lanes)
    give back what was packed."""
    from mamfpga.compile.arch import pack, unpack_words

    cfg = ArchConfig(pes=2, lanes=lanes)
    fields = weight_word_fields(cfg)
    rng = np.random.default_rng(lanes)
    values = {name: (rng.integers(-(1 << (w - 1)), 1 << (w - 1), 300) if signed else rng.integers(0, 1 << w, 300))
              for name, _, w, signed in fields}
    back = unpack_words(fields, pack(fields, values))
    for name in values:
        assert np.array_equal(back[name], values[name]), name
