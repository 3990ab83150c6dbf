import math

import pytest
from torch import nn

from mamfpga.sw.mam import MAMLinear
from mamfpga.sw.schedules import BetaScheduler, beta_at


def test_linear_and_parabolic():
    assert [beta_at("linear", q, 4) for q in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert [beta_at("parabolic", q, 4) for q in range(5)] == [1.0, 0.5625, 0.25, 0.0625, 0.0]
    for q in range(5):   # (q/Q)^2 - 2q/Q + 1
        t = q / 4
        assert math.isclose(beta_at("parabolic", q, 4), t * t - 2 * t + 1)


def test_exponential_multiplies_and_snaps_to_zero():
    eps, steps = 1e-2, 4
    betas = [beta_at("exponential", q, steps, eps) for q in range(steps + 2)]
    factor = math.exp(math.log(eps) / steps)
    for a, b in zip(betas[:steps - 1], betas[1:steps]):
        assert math.isclose(b, a * factor)
    assert betas[steps] == 0.0 and betas[steps + 1] == 0.0


def test_scheduler_drives_every_mam_layer():
    model = nn.Sequential(MAMLinear(3, 3, beta=1.0), nn.ReLU(), MAMLinear(3, 2, beta=1.0), nn.Linear(2, 2))
    s = BetaScheduler(model, "linear", 2)
    assert model[0].beta == model[2].beta == 1.0
    s.step()
    assert model[0].beta == model[2].beta == 0.5
    s.step()
    s.step()
    assert model[0].beta == model[2].beta == 0.0


def test_bad_schedule_named():
    with pytest.raises(ValueError, match="unknown beta schedule 'cosine'"):
        beta_at("cosine", 0, 3)
