"""Vanishing-contribution schedules for beta (1 = MAC, 0 = MAM).

beta goes from 1 to 0 over Q steps and stays 0 afterwards:

- linear:      beta = 1 - q/Q
- parabolic:   beta = (q/Q)^2 - 2 q/Q + 1 = (1 - q/Q)^2
- exponential: beta = eps^(q/Q) (multiply by exp(log(eps)/Q) each step), snapped
               to 0 once it is at or under eps (the public reference implementation)

A step is an epoch or an optimizer step, as the caller chooses; one scheduler
drives every MAMLinear of a model at once.
"""

from __future__ import annotations

import math

from torch import nn

from mamfpga.sw.mam import mam_layers

__all__ = ["SCHEDULES", "beta_at", "BetaScheduler"]

SCHEDULES = ("linear", "parabolic", "exponential")


def beta_at(kind: str, q: int, steps: int, eps: float = 1e-3) -> float:
    """beta after ``q`` of ``steps`` steps."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    if steps < 0 or q < 0:
        raise ValueError(f"steps and q must be >= 0, got steps={steps}, q={q}")
    if steps == 0 or q >= steps:
        return 0.0
    t = q / steps
    if kind == "linear":
        return 1.0 - t
    if kind == "parabolic":
        return (1.0 - t) ** 2
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    beta = math.exp(math.log(eps) * t)
    return 0.0 if beta <= eps else beta


class BetaScheduler:
    """Sets beta of every MAMLinear in ``model``; call :meth:`step` once per epoch or batch."""

    def __init__(self, model: nn.Module, kind: str = "linear", steps: int = 10, eps: float = 1e-3):
        beta_at(kind, 0, steps, eps)      # validates the arguments
        self.model, self.kind, self.steps, self.eps = model, kind, steps, eps
        self.q = 0
        self._apply()

    @property
    def beta(self) -> float:
        return beta_at(self.kind, self.q, self.steps, self.eps)

    def _apply(self):
        for _, layer in mam_layers(self.model):
            layer.beta = self.beta

    def step(self):
        self.q += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"kind": self.kind, "steps": self.steps, "eps": self.eps, "q": self.q}
