"""The prunability claims of the MAM method on digits, as regression tests.

The fast test uses a narrower network so the default suite stays quick, with the
default seed: at 256 wide the one-shot result depends on the seed (seed 1 loses 5
points), which the 1024-wide network of the README does not (seeds 0-3: <= 0.2
points). The `slow` test checks the README's figures on that network.
"""

import copy

import pytest

from mamfpga.sw import data, prune
from mamfpga.sw.mam import to_mac
from mamfpga.sw.train import TrainConfig, accuracy, build_mlp, finetune, fit


def _trained(mode, hidden, epochs, vc):
    ds = data.load()
    model = build_mlp(64, 10, hidden, mode=mode)
    fit(model, ds, TrainConfig(epochs=epochs, vc_epochs=vc), progress=False)
    return ds, model


def _one_shot(model, ds, kept):
    pruned = copy.deepcopy(model)
    prune.prune_model(pruned, "gmp", 1.0 - kept)
    return pruned, accuracy(pruned, ds.x_test, ds.y_test)


def test_mam_prunes_far_better_than_mac():
    ds, mam = _trained("mam", (256, 256), 60, 20)
    _, mac = _trained("mac", (256, 256), 60, 20)
    mam_dense, mac_dense = (accuracy(m, ds.x_test, ds.y_test) for m in (mam, mac))
    _, mam_1 = _one_shot(mam, ds, 0.01)
    _, mac_1 = _one_shot(mac, ds, 0.01)
    assert mam_dense > 0.95 and mac_dense > 0.95
    assert mam_dense - mam_1 <= 0.02, (mam_dense, mam_1)
    assert mac_dense - mac_1 > 0.10, (mac_dense, mac_1)


@pytest.mark.slow
def test_readme_figures_default_network():
    ds, mam = _trained("mam", (1024, 1024), 60, 20)
    _, mac = _trained("mac", (1024, 1024), 60, 20)
    mam_dense, mac_dense = (accuracy(m, ds.x_test, ds.y_test) for m in (mam, mac))
    _, mam_1 = _one_shot(mam, ds, 0.01)
    _, mac_1 = _one_shot(mac, ds, 0.01)
    assert mam_dense - mam_1 <= 0.015
    assert mac_dense - mac_1 > 0.10
    pruned, _ = _one_shot(mam, ds, 0.001)
    to_mac(pruned)
    assert finetune(pruned, ds, epochs=30, progress=False) >= 0.96
