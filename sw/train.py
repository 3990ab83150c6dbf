"""Training with vanishing contributions, evaluation, and fine-tuning with patience."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mamfpga.errors import MamfpgaError
from mamfpga.sw import data as data_mod
from mamfpga.sw.mam import WEIGHTED_TYPES, MAMConv1d, MAMConv2d, MAMLinear, mam_layers
from mamfpga.sw.prune import sparsity as sparsity_of
from mamfpga.sw.schedules import BetaScheduler

__all__ = ["build_mlp", "build_model", "parse_arch", "ArchError", "TrainConfig", "fit", "accuracy", "finetune",
           "DEFAULT_HIDDEN", "fake_quant", "quantized_weights", "snap_weights", "ActQuant", "act_quant_of",
           "EPOCH_FIELDS"]

#: the columns of a per-epoch log (``train`` and ``prune --finetune`` write one beside the model)
EPOCH_FIELDS = ("phase", "epoch", "loss", "train_acc", "val_acc", "beta", "sparsity")

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


class ArchError(MamfpgaError, ValueError):
    """An --arch that does not parse or does not fit the data (names the item and the numbers)."""

    exit_code = 2


_ARCH_ITEM = re.compile(r"^(?:conv(?P<c>\d+)k(?P<k>\d+)(?:s(?P<cs>\d+))?(?:p(?P<p>\d+))?"
                        r"|pool(?P<pk>\d+)(?:s(?P<ps>\d+))?|fc(?P<m>\d+))$")


def parse_arch(spec: str) -> list[tuple]:
    """``"conv8k3,pool2,conv16k3,pool2"`` -> [("conv", 8, 3, 1, 0), ("pool", 2, 2), ...]: conv<C>k<K>[s<S>][p<P>]
    (stride 1, padding 0 unless given), pool<K>[s<S>] (stride K unless given), fc<M>."""
    items = []
    for pos, raw in enumerate(spec.split(",")):
        item = raw.strip()
        mt = _ARCH_ITEM.match(item)
        if mt is None:
            raise ArchError(f"--arch item {pos + 1} {item!r} is not conv<C>k<K>[s<S>][p<P>], pool<K>[s<S>] or fc<M>")
        g = {k: (int(v) if v is not None else None) for k, v in mt.groupdict().items()}
        def given(v, default):
            return default if v is None else v
        if g["c"] is not None:
            stride = given(g["cs"], 1)
            item_t, sizes = ("conv", g["c"], g["k"], stride, given(g["p"], 0)), (g["c"], g["k"], stride)
        elif g["pk"] is not None:
            item_t = ("pool", g["pk"], given(g["ps"], g["pk"]))
            sizes = item_t[1:]
        else:
            item_t, sizes = ("fc", g["m"]), (g["m"],)
        if min(sizes) < 1:                     # (the padding may be 0)
            raise ArchError(f"--arch item {pos + 1} {item!r}: sizes, kernels and strides must be at least 1")
        items.append(item_t)
    seen_fc = False
    for pos, it in enumerate(items):
        if it[0] == "fc":
            seen_fc = True
        elif seen_fc:
            raise ArchError(f"--arch item {pos + 1} {spec.split(',')[pos].strip()!r}: convolutions and pooling "
                            "come before the fully connected layers")
    return items


def build_model(arch: str, sample_shape: tuple, classes: int, mode: str = "mam", seed: int = 0) -> nn.Sequential:
    """The network ``arch`` describes (:func:`parse_arch`) for samples of ``sample_shape``, the
    classifier (fc to ``classes``, MAC) appended; ReLU after every conv and fc. It takes flat
    inputs [B, features] and unflattens them: Conv2d for [C, H, W] samples, Conv1d for vectors.
    With mode "mam" the conv and hidden fc layers are MAM (beta = 1 to start)."""
    if mode not in ("mac", "mam"):
        raise ValueError(f"mode must be mac or mam, not {mode!r}")
    items = parse_arch(arch)
    torch.manual_seed(seed)
    one_d = len(sample_shape) == 1
    shape = (1, sample_shape[0]) if one_d else tuple(sample_shape)     # (C, L) or (C, H, W)
    mods: list[nn.Module] = [nn.Unflatten(1, shape)] if any(it[0] != "fc" for it in items) else []
    mam = mode == "mam"
    flat = not mods
    for pos, it in enumerate(items):
        where = f"--arch item {pos + 1} ({it[0]}{it[1]})"
        if it[0] == "conv":
            _, c, k, st, p = it
            cls = (MAMConv1d if one_d else MAMConv2d) if mam else (nn.Conv1d if one_d else nn.Conv2d)
            extra = {"beta": 1.0} if mam else {}
            mods += [cls(shape[0], c, k, stride=st, padding=p, **extra), nn.ReLU()]
            spatial = [(n + 2 * p - k) // st + 1 for n in shape[1:]]
        elif it[0] == "pool":
            _, k, st = it
            mods.append(nn.MaxPool1d(k, st) if one_d else nn.MaxPool2d(k, st))
            c = shape[0]
            spatial = [(n - k) // st + 1 for n in shape[1:]]
        else:
            if not flat:
                mods.append(nn.Flatten())
                flat = True
            n = int(np.prod(shape))
            mods += [MAMLinear(n, it[1], beta=1.0) if mam else nn.Linear(n, it[1]), nn.ReLU()]
            shape = (it[1],)
            continue
        if min(spatial) < 1:
            raise ArchError(f"{where} does not fit: the feature map before it is {list(shape)}")
        shape = (c, *spatial)
    if not flat:
        mods.append(nn.Flatten())
    mods.append(nn.Linear(int(np.prod(shape)), classes))
    return nn.Sequential(*mods)


# ---------------------------------------------------------------------------- narrow weights
# Quantization-aware training of b-bit weights: the forward and backward passes see each weight
# on its row's grid, s * k with s = max |w_row| / (2**(b-1) - 1) and |k| <= 2**(b-1) - 1 (one
# scale per output row or channel, symmetric, as mamfpga.sw.quantize then reads it), while the
# optimizer updates the float weights underneath (the straight-through estimator: the gradient
# at the quantized weight is applied to the float one). A pruned layer's scale is taken over its
# surviving weights, and its pruned weights stay 0.

def fake_quant(w: torch.Tensor, bits: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``w`` ([M, ...]) on the symmetric ``bits``-bit grid of each row (``mask``: what survives)."""
    lim = (1 << (bits - 1)) - 1
    live = w if mask is None else w * mask
    scale = live.detach().abs().reshape(w.shape[0], -1).amax(dim=1).clamp_min(1e-12) / lim
    scale = scale.reshape((-1,) + (1,) * (w.dim() - 1))
    return torch.clamp(torch.round(live / scale), -lim, lim) * scale


def _weight_params(model: nn.Module):
    """(float weight parameter, mask or None) of each weighted layer (torch pruning keeps the
    float weights in ``weight_orig``)."""
    for mod in model.modules():
        if isinstance(mod, WEIGHTED_TYPES):
            if hasattr(mod, "weight_orig"):
                yield mod.weight_orig, getattr(mod, "weight_mask", None)
            else:
                yield mod.weight, None


@contextmanager
def quantized_weights(model: nn.Module, bits: int | None):
    """Within the block the weighted layers compute with ``bits``-bit weights; the float weights
    come back afterwards (a no-op for ``bits`` None)."""
    if bits is None:
        yield
        return
    saved = []
    with torch.no_grad():
        for param, mask in _weight_params(model):
            saved.append((param, param.detach().clone()))
            param.copy_(fake_quant(param, bits, mask))
    try:
        yield
    finally:
        with torch.no_grad():
            for param, data in saved:
                param.copy_(data)


@torch.no_grad()
def snap_weights(model: nn.Module, bits: int | None) -> None:
    """Put every weight on its ``bits``-bit grid for good (after quantization-aware training)."""
    if bits is not None:
        for param, mask in _weight_params(model):
            param.copy_(fake_quant(param, bits, mask))


# ---------------------------------------------------------------------------- narrow activations
# Quantization-aware training of b-bit activations: every weighted layer's output but the
# classifier's passes through the clamp and grid the quantizer will give it (mamfpga.sw.quantize
# with ``act_bits``): after a ReLU [0, 2**b - 1] steps (b = 8: unsigned bytes), else
# [-2**(b-1), 2**(b-1) - 1], the step r / (2**b - 1) (or r / (2**(b-1) - 1)) for a range r that
# training tracks (a running mean of the batches' largest activation) and the quantizer then
# uses. Gradients pass straight through inside the clamp and stop outside it. The classifier's
# outputs stay int8 (the network's outputs), calibrated as before.

class ActQuant:
    """Fake-quantized activations on ``model`` (a Sequential), as forward hooks on its weighted
    layers but the last: ``ranges`` given (from a model file) or tracked in training mode.
    ``model.act_quant`` is this object; :meth:`remove` takes the hooks off."""

    MOMENTUM = 0.1

    def __init__(self, model: nn.Module, bits: int, ranges: list[float] | None = None):
        if not 2 <= bits <= 8:
            raise ValueError(f"activation bits must be 2 to 8, not {bits}")
        mods = list(model)
        weighted = [k for k, m in enumerate(mods) if isinstance(m, WEIGHTED_TYPES)][:-1]
        self.bits = bits
        self.relu = [k + 1 < len(mods) and isinstance(mods[k + 1], nn.ReLU) for k in weighted]
        if ranges is not None and len(ranges) != len(weighted):
            raise ValueError(f"{len(ranges)} activation ranges for {len(weighted)} quantized layer outputs")
        self.ranges: list[float | None] = list(ranges) if ranges is not None else [None] * len(weighted)
        if hasattr(model, "act_quant"):
            model.act_quant.remove()
        self._model = model
        self._handles = [mods[k].register_forward_hook(self._hook(i)) for i, k in enumerate(weighted)]
        model.act_quant = self

    def top(self, i: int) -> int:
        """The largest quantized value of output ``i``: the clamp's act_max."""
        return (1 << self.bits) - 1 if self.relu[i] else (1 << (self.bits - 1)) - 1

    def _hook(self, i: int):
        def hook(mod, _inp, out):
            relu = self.relu[i]
            if mod.training:
                seen = float((out.detach().clamp_min(0) if relu else out.detach().abs()).max())
                r = self.ranges[i]
                self.ranges[i] = seen if r is None else (1 - self.MOMENTUM) * r + self.MOMENTUM * seen
            r = self.ranges[i]
            if not r:
                return out
            top = self.top(i)
            s = r / top
            z = torch.clamp(out, 0.0 if relu else -(top + 1) * s, top * s)
            return z + (torch.round(z / s) * s - z).detach()
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        if getattr(self._model, "act_quant", None) is self:
            del self._model.act_quant


def act_quant_of(model: nn.Module) -> "ActQuant | None":
    return getattr(model, "act_quant", None)


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
    weight_bits: int | None = None  # quantization-aware training of weights this narrow (2..8)
    act_bits: int | None = None     # and of activations (2..8): see ActQuant


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
        with quantized_weights(model, cfg.weight_bits):     # forward and backward on the grid
            loss = loss_fn(model(xb), yb)
            loss.backward()
        opt.step()
        total += float(loss.detach()) * len(yb)
        if on_step is not None:
            on_step()
    return total / len(ds.y_train)


def _epoch_row(model, ds, val, phase: str, epoch: int, loss: float, beta: float, weight_bits,
               evaluate: bool) -> dict:
    """One line of the per-epoch log: the loss, the accuracy on the training set and on the
    validation split (``val``, carved from the training set; empty without one) when
    ``evaluate`` (a pass over both, which only a logged run pays), beta, and the sparsity over
    the pruning's target layers."""
    train_acc = val_acc = None
    if evaluate:
        with quantized_weights(model, weight_bits):
            train_acc = accuracy(model, ds.x_train, ds.y_train)
            val_acc = accuracy(model, *val) if val is not None else None
    return {"phase": phase, "epoch": epoch, "loss": loss, "train_acc": train_acc, "val_acc": val_acc,
            "beta": beta, "sparsity": sparsity_of(model)}


def fit(model: nn.Module, ds: data_mod.Dataset, cfg: TrainConfig, *, progress: bool = True,
        prune_at: int | None = None, prune_fn: Callable[[nn.Module], None] | None = None,
        val: tuple[np.ndarray, np.ndarray] | None = None, evaluate: bool = False,
        on_epoch: Callable[[int, nn.Module], None] | None = None) -> list[dict]:
    """Train ``model`` for cfg.epochs; MAM layers follow the beta schedule over cfg.vc_epochs
    (per epoch or per step), then train on with beta = 0. Returns the per-epoch log
    (:data:`EPOCH_FIELDS`; the accuracies only with ``evaluate``, on ``val`` when given).

    ``prune_at``/``prune_fn``: pruning before convergence, ``prune_fn(model)`` is called after
    epoch ``prune_at`` (0: before the first) and training continues on the pruned model.
    ``on_epoch(epoch, model)`` is called after every epoch (1, 2, ...).
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
    if cfg.act_bits is not None and act_quant_of(model) is None:
        ActQuant(model, cfg.act_bits)
    history = []
    bar = tqdm(range(cfg.epochs), desc="train", disable=not progress, leave=False)
    on_step = sched.step if sched is not None and cfg.per == "step" else None
    if prune_at == 0 and prune_fn is not None:
        prune_fn(model)                          # pruning at initialisation
    for epoch in bar:
        loss = _epoch(model, opt, ds, cfg, epoch, on_step)
        if sched is not None and cfg.per == "epoch":
            sched.step()
        beta = sched.beta if sched is not None else 1.0
        if prune_at is not None and epoch + 1 == prune_at and prune_fn is not None:
            prune_fn(model)
            # the optimizer's moments refer to the dense weights: start it afresh
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        history.append(_epoch_row(model, ds, val, "train", epoch + 1, loss, beta if has_mam else 0.0,
                                  cfg.weight_bits, evaluate))
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
        bar.set_postfix(loss=f"{loss:.3f}", beta=f"{beta:.2f}")
    snap_weights(model, cfg.weight_bits)
    return history


def finetune(model: nn.Module, ds: data_mod.Dataset, *, epochs: int, patience: int | None = None,
             lr: float = 1e-3, batch: int = 64, seed: int = 0, progress: bool = True,
             weight_bits: int | None = None, history: list | None = None,
             val: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Fine-tune (beta untouched) for up to ``epochs`` (quantization-aware with ``weight_bits``);
    with ``patience``, stop when the accuracy (on ``val`` when given, else on the training set)
    has not improved for that many epochs and keep the best weights. Returns the test accuracy
    reached; with ``history`` (a list), appends the per-epoch log to it (phase "finetune")."""
    from tqdm.auto import tqdm

    if epochs <= 0:
        snap_weights(model, weight_bits)
        return accuracy(model, ds.x_test, ds.y_test)
    cfg = TrainConfig(epochs=epochs, vc_epochs=0, lr=lr, batch=batch, seed=seed, weight_bits=weight_bits)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state, waited = -1.0, None, 0
    for epoch in tqdm(range(epochs), desc="finetune", disable=not progress, leave=False):
        loss = _epoch(model, opt, ds, cfg, epoch, None)
        if history is not None:
            mams = mam_layers(model)
            history.append(_epoch_row(model, ds, val, "finetune", epoch + 1, loss,
                                      float(mams[0][1].beta) if mams else 0.0, weight_bits, True))
        if patience is None:
            continue
        with quantized_weights(model, weight_bits):
            acc = accuracy(model, *val) if val is not None else accuracy(model, ds.x_train, ds.y_train)
        if acc > best:
            best, best_state, waited = acc, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    snap_weights(model, weight_bits)
    return accuracy(model, ds.x_test, ds.y_test)
