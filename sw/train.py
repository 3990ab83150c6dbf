"""Training with vanishing contributions, evaluation, and fine-tuning with patience."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mamfpga.sw import data as data_mod
from mamfpga.sw.mam import MAMLinear, mam_layers
from mamfpga.sw.schedules import BetaScheduler

__all__ = ["build_mlp", "TrainConfig", "fit", "accuracy", "finetune", "DEFAULT_HIDDEN"]

#: Hidden layer sizes of the default digits network.
DEFAULT_HIDDEN = (1024, 1024)


def build_mlp(inputs: int, classes: int, hidden=DEFAULT_HIDDEN, mode: str = "mam",
              seed: int = 0) -> nn.Sequential:
    """inputs -> hidden (ReLU) ... -> classes. With mode "mam" the hidden layers are MAMLinear
    (beta = 1 to start: the vanishing-contribution schedule takes it to 0); the classifier is MAC."""
    if mode not in ("mac", "mam"):
        raise ValueError(f"mode must be mac or mam, not {mode!r}")
    if not hidden or any(h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be >= 1, got {list(hidden)}")
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    n = inputs
    for h in hidden:
        mods += [MAMLinear(n, h, beta=1.0) if mode == "mam" else nn.Linear(n, h), nn.ReLU()]
        n = h
    mods.append(nn.Linear(n, classes))
    return nn.Sequential(*mods)


@dataclass
class TrainConfig:
    epochs: int = 60
    vc_epochs: int = 20            # Q: epochs over which beta goes 1 -> 0
    schedule: str = "linear"
    per: str = "epoch"             # beta stepped per "epoch" or per optimizer "step"
    lr: float = 2e-3
    batch: int = 64
    weight_decay: float = 1e-4      # L2: unselected MAM weights decay to 0, so magnitude pruning works
    seed: int = 0


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    was = model.training
    model.eval()
    correct = 0
    for xb, yb in data_mod.loader(x, y, batch, shuffle=False):
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was)
    return correct / len(y)


def _epoch(model, opt, ds, cfg: TrainConfig, epoch: int, on_step: Callable[[], None] | None):
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total = 0.0
    for xb, yb in data_mod.loader(ds.x_train, ds.y_train, cfg.batch, shuffle=True, seed=cfg.seed * 1000 + epoch):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(yb)
        if on_step is not None:
            on_step()
    return total / len(ds.y_train)


def fit(model: nn.Module, ds: data_mod.Dataset, cfg: TrainConfig, *, progress: bool = True,
        prune_at: int | None = None, prune_fn: Callable[[nn.Module], None] | None = None) -> list[dict]:
    """Train ``model`` for cfg.epochs; MAM layers follow the beta schedule over cfg.vc_epochs
    (per epoch or per step), then train on with beta = 0.

    ``prune_at``/``prune_fn``: pruning before convergence, ``prune_fn(model)`` is
    called after epoch ``prune_at`` and training continues on the pruned model.
    """
    from tqdm.auto import tqdm

    has_mam = bool(mam_layers(model))
    steps_per_epoch = -(-len(ds.y_train) // cfg.batch)
    sched = None
    if has_mam:
        steps = cfg.vc_epochs * (steps_per_epoch if cfg.per == "step" else 1)
        sched = BetaScheduler(model, cfg.schedule, steps)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = []
    bar = tqdm(range(cfg.epochs), desc="train", disable=not progress, leave=False)
    on_step = sched.step if sched is not None and cfg.per == "step" else None
    for epoch in bar:
        loss = _epoch(model, opt, ds, cfg, epoch, on_step)
        if sched is not None and cfg.per == "epoch":
            sched.step()
        beta = sched.beta if sched is not None else 1.0
        if prune_at is not None and epoch + 1 == prune_at and prune_fn is not None:
            prune_fn(model)
            # the optimizer's moments refer to the dense weights: start it afresh
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        history.append({"epoch": epoch + 1, "loss": loss, "beta": beta})
        bar.set_postfix(loss=f"{loss:.3f}", beta=f"{beta:.2f}")
    return history


def finetune(model: nn.Module, ds: data_mod.Dataset, *, epochs: int, patience: int | None = None,
             lr: float = 1e-3, batch: int = 64, seed: int = 0, progress: bool = True) -> float:
    """Fine-tune (beta untouched) for up to ``epochs``; with ``patience``, stop when the
    training-set accuracy has not improved for that many epochs and keep the best weights.
    Returns the test accuracy reached."""
    from tqdm.auto import tqdm

    if epochs <= 0:
        return accuracy(model, ds.x_test, ds.y_test)
    cfg = TrainConfig(epochs=epochs, vc_epochs=0, lr=lr, batch=batch, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state, waited = -1.0, None, 0
    for epoch in tqdm(range(epochs), desc="finetune", disable=not progress, leave=False):
        _epoch(model, opt, ds, cfg, epoch, None)
        if patience is None:
            continue
        acc = accuracy(model, ds.x_train, ds.y_train)
        if acc > best:
            best, best_state, waited = acc, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return accuracy(model, ds.x_test, ds.y_test)
