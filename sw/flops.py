"""FLOPs per inference, as the MAM literature counts them.

A MAC weight costs 2 FLOPs (a multiply and an add), a MAM weight 3 (a multiply and the two
comparisons of the running max and min); a layer still blending the two (``0 < beta``, the
vanishing-contribution phase of training) computes both, 5. Only the weights a layer keeps
count: a pruned weight costs nothing, the saving the literature claims for sparse execution.
A conv layer pays its weights at every output position. Biases, activations and pooling are
left out (a few FLOPs per output, against hundreds per output for the weights), as the seeds
do.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from mamfpga.sw.mam import WEIGHTED_TYPES, is_mam
from mamfpga.sw.prune import effective_weight

__all__ = ["FLOPS_PER_WEIGHT", "flops"]

#: FLOPs a kept weight costs, by how the layer computes
FLOPS_PER_WEIGHT = {"mac": 2, "mam": 3, "blend": 5}


def _kind(m: nn.Module) -> str:
    if not is_mam(m):
        return "mac"
    return "mam" if float(m.beta) == 0.0 else "blend"


def flops(model: nn.Module, sample_shape: tuple) -> dict:
    """FLOPs of one inference of ``model`` on an input of ``sample_shape`` (without the batch;
    mamfpga's models take flat inputs, ``(features,)``):
    ``flops`` with the weights it keeps, ``flops_dense`` had it kept them all (the same layer
    kinds), ``saved`` = 1 - flops / flops_dense, and per weighted layer its kind, output
    positions, kept and total weights and both counts."""
    positions: dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, WEIGHTED_TYPES):
            def hook(_mod, _inp, out, name=name):
                positions[name] = math.prod(out.shape[2:]) if out.dim() > 2 else 1
            hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *sample_shape)))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    layers = []
    for name, m in model.named_modules():
        if not isinstance(m, WEIGHTED_TYPES):
            continue
        kind, w = _kind(m), effective_weight(m)
        nnz, total, pos = int((w != 0).sum()), w.numel(), positions.get(name, 0)   # 0: never run
        cost = FLOPS_PER_WEIGHT[kind]
        layers.append({"name": name, "kind": kind, "positions": pos, "nnz": nnz, "weights": total,
                       "flops": cost * nnz * pos, "flops_dense": cost * total * pos})
    f, fd = sum(l["flops"] for l in layers), sum(l["flops_dense"] for l in layers)
    return {"flops": f, "flops_dense": fd, "saved": 1.0 - f / fd if fd else 0.0, "layers": layers}
