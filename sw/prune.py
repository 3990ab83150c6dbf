"""Pruning methods of the MAM literature, with masks the torch.nn.utils.prune way.

| method   | score                                        | scope     |
|----------|----------------------------------------------|-----------|
| gmp/lmp  | abs(w)                                       | global / per layer |
| ggp/lgp  | E[abs(w * dL/dw)] over a pruning set         | global / per layer |
| rp       | random                                       | global    |
| gpsp/lpsp| P(w selected as max or min) over a pruning set (MAM layers only) | global / per layer |
| lmp-lpsp | abs(w) * P(selected)                         | per layer |

Structured methods remove whole units -- a dense layer's neurons, a conv layer's output
channels -- from the hidden layers: ``amount`` is then the fraction of units removed.

| method     | unit score                                            | scope |
|------------|-------------------------------------------------------|-------|
| gl1n/ll1n  | L1 norm of the unit's row or filter                   | global / per layer |
| gl2n/ll2n  | L2 norm of the unit's row or filter                   | global / per layer |
| gapoz/lapoz| 1 - APoZ: the share of its outputs (after ReLU) that are not zero, over a pruning set | global / per layer |

A removed unit has its row or filter pruned *and* every weight of the next weighted layer that
reads it (its column; its input channel of a conv; its H*W columns of a dense layer reading the
flattened map), so it is unread and ``simplify`` takes it out of the network exactly, whatever
its bias; fine-tuning keeps both masks. Globally, L1/L2 scores are divided by their layer's mean
first, so that layers of different fan-in compete on equal terms. Structured and unstructured
pruning combine by pruning twice (pruning is cumulative).

Pruning is cumulative: weights already pruned stay pruned, and the sparsity
asked for is the fraction of zero weights over the targeted layers (global)
or in each targeted layer (local). A pruned module carries ``weight_orig``
and ``weight_mask`` (``prune.remove`` makes it permanent) and its pruned
weights stay zero through fine-tuning, because the mask multiplies them in
every forward pass and zeroes their gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mamfpga.sw.mam import WEIGHTED_TYPES, SelectionCounter, is_mam

__all__ = ["METHODS", "STRUCTURED", "effective_weight", "prunable_layers", "prune_model", "compute_scores",
           "sparsity", "layer_sparsity", "iterative_prune", "units_removed"]

METHODS = {
    # name: (score, scope)
    "gmp": ("magnitude", "global"),
    "lmp": ("magnitude", "local"),
    "ggp": ("gradient", "global"),
    "lgp": ("gradient", "local"),
    "rp": ("random", "global"),
    "gpsp": ("selection", "global"),
    "lpsp": ("selection", "local"),
    "lmp-lpsp": ("magnitude*selection", "local"),
}
#: structured methods: name -> (unit score, scope)
STRUCTURED = {
    "gl1n": ("l1", "global"),
    "ll1n": ("l1", "local"),
    "gl2n": ("l2", "global"),
    "ll2n": ("l2", "local"),
    "gapoz": ("apoz", "global"),
    "lapoz": ("apoz", "local"),
}


def effective_weight(module: nn.Linear) -> torch.Tensor:
    """The weight the layer computes with (weight_orig * weight_mask when pruned)."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return module.weight_orig * module.weight_mask
    return module.weight


def _mask(module: nn.Linear) -> torch.Tensor:
    if hasattr(module, "weight_mask"):
        return module.weight_mask
    return torch.ones_like(module.weight)


def prunable_layers(model: nn.Module, layers: Iterable[str] | None = None) -> list[tuple[str, nn.Module]]:
    """The layers pruning targets: the named ones, or by default every MAM layer (linear and
    convolutional; every weighted layer but the last in a model with no MAM layer)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHTED_TYPES)]
    if not linears:
        raise ValueError("the model has no Linear, Conv or MAM layer to prune")
    if layers is None:
        chosen = [(n, m) for n, m in linears if is_mam(m)]
        return chosen or linears[:-1] or linears
    names = list(layers)
    by_name = dict(linears)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"no Linear or Conv layer named {missing[0]!r}; the model has {sorted(by_name)}")
    return [(n, by_name[n]) for n in names]


def layer_sparsity(module: nn.Linear) -> float:
    w = effective_weight(module)
    return float((w == 0).sum()) / w.numel()


def sparsity(model: nn.Module, layers=None) -> float:
    """Fraction of zero weights over the targeted layers."""
    targets = prunable_layers(model, layers)
    zeros = sum(int((effective_weight(m) == 0).sum()) for _, m in targets)
    total = sum(m.weight.numel() if not hasattr(m, "weight_orig") else m.weight_orig.numel()
                for _, m in targets)
    return zeros / total


def _gradient_scores(model, targets, data, loss_fn) -> list[torch.Tensor]:
    """E[|w * dL/dw|] over the batches of ``data`` (per-batch gradients, averaged)."""
    sums = [torch.zeros_like(effective_weight(m)) for _, m in targets]
    batches = 0
    was_training = model.training
    model.eval()
    for x, y in data:
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        for s, (_, m) in zip(sums, targets):
            param = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            if param.grad is not None:
                s += (effective_weight(m).detach() * param.grad.detach()).abs()
        batches += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if batches == 0:
        raise ValueError("gradient pruning needs a non-empty pruning set")
    return [s / batches for s in sums]


def _selection_scores(model, targets, data) -> list[torch.Tensor]:
    for name, m in targets:
        if not is_mam(m) or m.beta != 0.0:
            raise ValueError(f"probability-of-selection pruning needs MAM layers (beta = 0); "
                             f"layer {name!r} is {'MAC' if not is_mam(m) else f'beta={m.beta:g}'}")
        m.counter = SelectionCounter(m.weight.shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in data:
                model(x)
        return [m.counter.probability() for _, m in targets]
    finally:
        for _, m in targets:
            m.counter = None
        model.train(was_training)


def compute_scores(model, method: str, targets, *, data=None, loss_fn=None,
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    score, _ = METHODS[method]
    weights = [effective_weight(m).detach() for _, m in targets]
    if score == "magnitude":
        return [w.abs() for w in weights]
    if score == "random":
        return [torch.rand(w.shape, generator=generator) for w in weights]
    if data is None:
        raise ValueError(f"{method} pruning needs a pruning set (data)")
    if score == "gradient":
        return _gradient_scores(model, targets, data, loss_fn or nn.functional.cross_entropy)
    probs = _selection_scores(model, targets, data)
    if score == "selection":
        return probs
    return [w.abs() * p for w, p in zip(weights, probs)]


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, keep: int) -> torch.Tensor:
    """Mask keeping the ``keep`` highest-scoring alive entries (ties: lowest index first)."""
    flat = torch.where(alive.reshape(-1) > 0, scores.reshape(-1).double(),
                       torch.tensor(float("-inf"), dtype=torch.float64))
    keep = max(0, min(keep, int((alive > 0).sum())))
    mask = torch.zeros(flat.numel(), dtype=alive.dtype)
    if keep:
        # a stable descending sort breaks ties by position: reproducible masks
        order = torch.sort(flat, descending=True, stable=True).indices[:keep]
        mask[order] = 1
    return mask.view_as(alive)


def _set_mask(module: nn.Linear, mask: torch.Tensor):
    if hasattr(module, "weight_mask"):
        with torch.no_grad():
            module.weight_mask.copy_(mask)
            # keep the visible weight in sync until the next forward pass
            module.weight = module.weight_orig * module.weight_mask
    else:
        torch_prune.custom_from_mask(module, "weight", mask.to(module.weight.dtype))
        # prune leaves `weight` a non-leaf tensor until the next forward pass, which
        # copy.deepcopy refuses; recompute it without grad (the forward hook redoes it)
        with torch.no_grad():
            module.weight = module.weight_orig * module.weight_mask


def _reader(model: nn.Module, name: str, m: nn.Module):
    """The weighted layer after ``name`` and how it reads each of ``m``'s units: a function of
    the unit giving the index into that layer's weight of the weights reading it."""
    weighted = [(n, x) for n, x in model.named_modules() if isinstance(x, WEIGHTED_TYPES)]
    names = [n for n, _ in weighted]
    k = names.index(name)
    if k + 1 == len(weighted):
        raise ValueError(f"layer {name!r} is the output layer: structured pruning removes hidden units only")
    nxt_name, nxt = weighted[k + 1]
    units = m.weight.shape[0]
    if isinstance(nxt, nn.Linear):
        if nxt.in_features % units:
            raise ValueError(f"layer {nxt_name!r} reads {nxt.in_features} values, not a whole number of "
                             f"{name!r}'s {units} units")
        per = nxt.in_features // units              # a flattened conv map: channel-major, H*W columns each
        return nxt, lambda u: (slice(None), slice(u * per, (u + 1) * per))
    if nxt.weight.shape[1] != units:
        raise ValueError(f"layer {nxt_name!r} reads {nxt.weight.shape[1]} channels, not {name!r}'s {units}")
    return nxt, lambda u: (slice(None), u)


def _apoz_scores(model, targets, data) -> list[torch.Tensor]:
    """1 - APoZ per unit: the share of a unit's outputs, after ReLU, that are not zero, over
    the batches of ``data`` (every position of a conv channel counts)."""
    sums = [torch.zeros(m.weight.shape[0], dtype=torch.float64) for _, m in targets]
    counts = [0] * len(targets)
    hooks = []
    for i, (_, m) in enumerate(targets):
        def hook(_mod, _inp, out, i=i):
            active = (torch.relu(out) > 0).double()
            dims = [d for d in range(out.dim()) if d != 1]
            sums[i] += active.sum(dim=dims)
            counts[i] += out.numel() // out.shape[1]
        hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in data:
                model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return [s / max(c, 1) for s, c in zip(sums, counts)]


def units_removed(model: nn.Module, layers=None) -> dict[str, tuple[int, int]]:
    """Per targeted layer: (units whose row or filter is all pruned, units)."""
    out = {}
    for name, m in prunable_layers(model, layers):
        mask = _mask(m).reshape(m.weight.shape[0], -1)
        out[name] = (int((mask.sum(dim=1) == 0).sum()), mask.shape[0])
    return out


def _prune_units(model, method: str, amount: float, targets, data) -> None:
    score_kind, scope = STRUCTURED[method]
    readers = [_reader(model, n, m) for n, m in targets]
    alive = [(_mask(m).reshape(m.weight.shape[0], -1).sum(dim=1) > 0).double() for _, m in targets]
    if score_kind == "apoz":
        if data is None:
            raise ValueError(f"{method} pruning needs a pruning set (data)")
        scores = _apoz_scores(model, targets, data)
    else:
        w = [effective_weight(m).detach().reshape(m.weight.shape[0], -1).double() for _, m in targets]
        scores = [x.abs().sum(dim=1) if score_kind == "l1" else x.pow(2).sum(dim=1).sqrt() for x in w]
        if scope == "global":                       # layers of different fan-in on equal terms
            scores = [sc / sc[a > 0].mean() if bool((a > 0).any()) and float(sc[a > 0].mean()) > 0 else sc
                      for sc, a in zip(scores, alive)]
    if scope == "local":
        keep = [_keep_top(sc, a, max(1, round((1.0 - amount) * a.numel()))) for sc, a in zip(scores, alive)]
    else:
        sizes = [a.numel() for a in alive]
        flat = _keep_top(torch.cat(scores), torch.cat(alive), round((1.0 - amount) * sum(sizes)))
        keep = list(torch.split(flat, sizes))
        for k, a in zip(keep, alive):                # every layer keeps one unit at least
            if not bool(k.any()) and bool(a.any()):
                k[int(torch.argmax(a))] = 1
    for (_, m), (nxt, reads), k in zip(targets, readers, keep):
        gone = [int(u) for u in torch.nonzero(k == 0).reshape(-1)]
        mask = _mask(m).detach().clone()
        mask[gone] = 0
        _set_mask(m, mask)
        nmask = _mask(nxt).detach().clone()
        for u in gone:
            nmask[reads(u)] = 0
        _set_mask(nxt, nmask)


def prune_model(model: nn.Module, method: str, amount: float, *, layers=None, data=None,
                loss_fn: Callable | None = None, seed: int = 0) -> dict:
    """Prune ``model`` in place so the targeted layers reach sparsity ``amount`` (0..1), or, for
    a structured method (:data:`STRUCTURED`), so that ``amount`` of their units are removed.

    Returns {"sparsity": achieved, "layers": {name: sparsity}} (and "units": {name: (removed,
    units)} for a structured method).
    """
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"sparsity must be between 0 and 1, got {amount}")
    targets = prunable_layers(model, layers)
    if method in STRUCTURED:
        _prune_units(model, method, amount, targets, data)
        return {"sparsity": sparsity(model, [n for n, _ in targets]),
                "layers": {n: layer_sparsity(m) for n, m in targets},
                "units": units_removed(model, [n for n, _ in targets])}
    gen = torch.Generator().manual_seed(seed)
    scores = compute_scores(model, method, targets, data=data, loss_fn=loss_fn, generator=gen)
    masks = [_mask(m).detach() for _, m in targets]
    _, scope = METHODS[method]
    if scope == "local":
        new = [_keep_top(s, a, round((1.0 - amount) * a.numel())) for s, a in zip(scores, masks)]
    else:
        sizes = [a.numel() for a in masks]
        flat_s = torch.cat([s.reshape(-1).double() for s in scores])
        flat_a = torch.cat([a.reshape(-1) for a in masks])
        keep = round((1.0 - amount) * flat_s.numel())
        flat_new = _keep_top(flat_s, flat_a, keep)
        new = [part.view_as(a) for part, a in zip(torch.split(flat_new, sizes), masks)]
    for (_, m), mask in zip(targets, new):
        _set_mask(m, mask)
    return {"sparsity": sparsity(model, [n for n, _ in targets]),
            "layers": {n: layer_sparsity(m) for n, m in targets}}


def iterative_prune(model, method: str, amount: float, *, rounds: int, finetune: Callable[[int], float],
                    layers=None, data=None, loss_fn=None, seed: int = 0, log=print) -> list[dict]:
    """Prune in ``rounds`` steps towards ``amount``, fine-tuning after each.

    The kept fraction shrinks geometrically, (1 - amount) ** (r / rounds).
    ``finetune(round)`` fine-tunes the model (with its own patience rule) and
    returns the accuracy it reached.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    history = []
    for r in range(1, rounds + 1):
        target = 1.0 - (1.0 - amount) ** (r / rounds)
        info = prune_model(model, method, target, layers=layers, data=data, loss_fn=loss_fn, seed=seed + r)
        acc = finetune(r)
        history.append({"round": r, "sparsity": info["sparsity"], "accuracy": acc})
        log(f"round {r}/{rounds}: sparsity {info['sparsity']:.4f}, accuracy {acc:.4f}")
    return history
