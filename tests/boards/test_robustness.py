"""The demo's hardware path over the networks training could give (issue: the README's first
command failed on a CPU whose training gave a network that overflowed the iCE40UP5K).

Slow (about 3 minutes a network, 8 networks): ``pytest -m slow tests/boards/test_robustness.py``,
or ``scripts/robustness.py`` for the table alone."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "robustness", Path(__file__).resolve().parents[2] / "scripts" / "robustness.py")
robustness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(robustness)


@pytest.mark.slow
@pytest.mark.synth
@pytest.mark.parametrize("name", list(robustness.NETWORKS))
def test_every_network_ends_with_a_bitstream_whose_timing_is_met(name, tmp_path):
    (row,) = robustness.run([name], "icebreaker", tmp_path)
    assert row["bitstream"] and row["met"], row
    assert row["fmax_mhz"] >= row["clock_mhz"]
    # the fit estimate is never below what nextpnr placed
    assert row["lc_placed"] <= row["lc_estimate"] <= row["lc_avail"] * 0.9, row
