"""The loaders under mutation (tests/fuzz.py): every mutated .npz QuantNetwork, ONNX model, .pt
model file and build folder gives the original's result or exit 2 with one line, no traceback,
nothing written; none crashes or hangs, none allocates more than a few hundred MB.
``scripts/fuzz_loaders.py`` runs many more and prints the counts."""

from __future__ import annotations

import random
import resource

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import KINDS, fuzz_one, make_originals


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    return make_originals(tmp_path_factory.mktemp("fuzz") / "originals")


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_inputs_are_refused_cleanly_or_load_the_same(kind, originals, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"fuzz-{kind}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss        # KiB on Linux
    seen = {}

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.integers(0, 2**32 - 1))
    def check(seed):
        o = fuzz_one(kind, originals, random.Random(seed), work)
        seen[o.result] = seen.get(o.result, 0) + 1
        assert o.ok, f"{o.result} after {o.mutation}: {o.detail}"

    check()
    assert seen.get("rejected", 0) > 0                  # the mutations do reach the checks
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown < 400, f"the process's peak memory grew by {grown:.0f} MB"
