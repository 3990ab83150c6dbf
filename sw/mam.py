"""Multiply-And-Max/min layers for PyTorch.

``MAMLinear`` is a drop-in for ``nn.Linear`` (same parameters, same state
dict) computing ``beta * (x W^T) + (1 - beta) * (max_j W_ij x_j + min_j W_ij x_j) + b``.
``beta`` goes from 1 (MAC) to 0 (MAM) under a vanishing-contribution schedule
(:mod:`mamfpga.sw.schedules`).

The max/min reduction never materialises the whole batch x out x in product
tensor: it works on chunks of output rows sized so a chunk holds at most
``CHUNK_ELEMENTS`` products, so memory grows as B*M + M*N. The backward pass
sends the gradient only through the selected max and min (the first index on
ties, as ``torch.max`` picks). Zero (pruned) weights take part as 0 products,
exactly as the hardware contract of DESIGN.md says.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CHUNK_ELEMENTS", "MAMLinear", "maxmin", "maxmin_indices", "maxmin_indices_torch",
           "maxmin_values", "to_mam", "to_mac",
           "mam_layers", "SelectionCounter"]

#: Products one chunk of the reduction may hold (16 Mi floats = 64 MiB).
CHUNK_ELEMENTS = 1 << 24


def _rows_per_chunk(batch: int, rows: int, cols: int) -> int:
    return max(1, min(rows, CHUNK_ELEMENTS // max(1, batch * cols)))


def _fused_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    from mamfpga.sw import kernel

    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and kernel.available())


def maxmin_values(x: torch.Tensor, weight: torch.Tensor):
    """(max_j, min_j) of W_ij x_j for x [B, N], weight [M, N]; no indices (inference)."""
    if _fused_ok(x, weight):
        from mamfpga.sw.kernel import maxmin_fused

        vmax, _, vmin, _ = maxmin_fused(x, weight, with_indices=False)
        return vmax, vmin
    vmax, _, vmin, _ = maxmin_indices_torch(x, weight)
    return vmax, vmin


def maxmin_indices(x: torch.Tensor, weight: torch.Tensor):
    """max_j and min_j of W_ij x_j, with their indices (first on ties).

    x: [B, N], weight: [M, N]. Returns (vmax, imax, vmin, imin), each [B, M].
    Uses the fused C kernel for float32 on the CPU, else chunked PyTorch.
    """
    if _fused_ok(x, weight):
        from mamfpga.sw.kernel import maxmin_fused

        return maxmin_fused(x, weight, with_indices=True)
    return maxmin_indices_torch(x, weight)


def maxmin_indices_torch(x: torch.Tensor, weight: torch.Tensor):
    """:func:`maxmin_indices` in chunked PyTorch (any dtype and device)."""
    batch, cols = x.shape
    rows = weight.shape[0]
    step = _rows_per_chunk(batch, rows, cols)
    vmax = x.new_empty(batch, rows)
    vmin = x.new_empty(batch, rows)
    imax = torch.empty(batch, rows, dtype=torch.long, device=x.device)
    imin = torch.empty(batch, rows, dtype=torch.long, device=x.device)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        prod = x[:, None, :] * weight[None, r0:r1, :]          # [B, m, N]
        torch.max(prod, dim=2, out=(vmax[:, r0:r1], imax[:, r0:r1]))
        torch.min(prod, dim=2, out=(vmin[:, r0:r1], imin[:, r0:r1]))
    return vmax, imax, vmin, imin


class _MaxPlusMin(torch.autograd.Function):
    """z = max_j (W_ij x_j) + min_j (W_ij x_j); gradients only to the two selected products."""

    @staticmethod
    def forward(ctx, x, weight):
        vmax, imax, vmin, imin = maxmin_indices(x, weight)
        ctx.save_for_backward(x, weight, imax, imin)
        return vmax + vmin

    @staticmethod
    def backward(ctx, grad):
        x, weight, imax, imin = ctx.saved_tensors
        batch, cols = x.shape
        rows = weight.shape[0]
        gx = gw = None
        row_ids = torch.arange(rows, device=x.device).expand(batch, rows)
        batch_ids = torch.arange(batch, device=x.device)[:, None].expand(batch, rows)
        if ctx.needs_input_grad[1]:
            gw = torch.zeros(rows * cols, dtype=weight.dtype, device=weight.device)
            for idx in (imax, imin):
                gw.index_add_(0, (row_ids * cols + idx).reshape(-1),
                              (grad * x.gather(1, idx)).reshape(-1))
            gw = gw.view(rows, cols)
        if ctx.needs_input_grad[0]:
            gx = torch.zeros(batch * cols, dtype=x.dtype, device=x.device)
            for idx in (imax, imin):
                w_sel = weight[row_ids, idx]                     # W[i, idx[b, i]]
                gx.index_add_(0, (batch_ids * cols + idx).reshape(-1), (grad * w_sel).reshape(-1))
            gx = gx.view(batch, cols)
        return gx, gw


def maxmin(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """max_j (W_ij x_j) + min_j (W_ij x_j) for x of shape [..., N]; differentiable."""
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[-1] == 0:
        raise ValueError("a MAM layer needs at least one input")
    if not (flat.requires_grad or weight.requires_grad) or not torch.is_grad_enabled():
        vmax, vmin = maxmin_values(flat, weight)
        out = vmax + vmin
    else:
        out = _MaxPlusMin.apply(flat, weight)
    return out.reshape(*lead, weight.shape[0])


class MAMLinear(nn.Linear):
    """``nn.Linear`` whose reduction blends sum (beta) and max+min (1 - beta).

    ``beta`` is a plain attribute, not state: a saved MAMLinear loads into an
    ``nn.Linear`` and back. With ``beta == 0`` it is a pure MAM layer and the
    matrix product is skipped.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None, beta: float = 0.0):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.beta = float(beta)
        self.counter: SelectionCounter | None = None

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"MAMLinear expects inputs with {self.in_features} features, "
                             f"got shape {tuple(x.shape)}")
        weight = self.weight
        if self.counter is not None:
            self.counter.observe(x.detach(), weight.detach())
        beta = self.beta
        if beta >= 1.0:
            return F.linear(x, weight, self.bias)
        out = maxmin(x, weight)
        if beta > 0.0:
            out = (1.0 - beta) * out + beta * F.linear(x, weight)
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", beta={self.beta:g}"


class SelectionCounter:
    """How often each weight is selected as the max or the min, over the samples seen.

    Both selections count (a weight that is both max and min for one sample
    counts twice); repeated indices within a batch accumulate correctly.
    """

    def __init__(self, weight_shape):
        self.counts = torch.zeros(weight_shape, dtype=torch.float64)
        self.samples = 0

    @torch.no_grad()
    def observe(self, x: torch.Tensor, weight: torch.Tensor):
        flat = x.reshape(-1, x.shape[-1])
        _, imax, _, imin = maxmin_indices(flat, weight)
        rows, cols = weight.shape
        row_ids = torch.arange(rows).expand_as(imax)
        view = self.counts.view(-1)
        for idx in (imax, imin):
            view.index_add_(0, (row_ids * cols + idx).reshape(-1).cpu(),
                            torch.ones(idx.numel(), dtype=torch.float64))
        self.samples += flat.shape[0]

    def probability(self) -> torch.Tensor:
        """P(selected as max or min) per weight: counts / samples."""
        if self.samples == 0:
            raise ValueError("no samples were observed; run the pruning set through the model first")
        return (self.counts / self.samples).float()


def mam_layers(model: nn.Module) -> list[tuple[str, MAMLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MAMLinear)]


def _swap(module: nn.Linear, cls, beta=None) -> nn.Linear:
    """A copy of ``module`` as ``cls``, keeping weights and any torch.nn.utils.prune mask."""
    from torch.nn.utils import prune

    new = cls(module.in_features, module.out_features, module.bias is not None,
              device=module.weight.device, dtype=module.weight.dtype)
    if beta is not None:
        new.beta = beta
    with torch.no_grad():
        if prune.is_pruned(module) and hasattr(module, "weight_orig"):
            new.weight.copy_(module.weight_orig)
            if module.bias is not None:
                new.bias.copy_(module.bias)
            prune.custom_from_mask(new, "weight", module.weight_mask.clone())
        else:
            new.weight.copy_(module.weight)
            if module.bias is not None:
                new.bias.copy_(module.bias)
    new.train(module.training)
    return new


def _replace(model: nn.Module, name: str, new: nn.Module):
    parent = model
    *path, last = name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def to_mam(model: nn.Module, layers=None, *, beta: float = 0.0) -> nn.Module:
    """Turn the chosen ``nn.Linear`` layers (names; default all but the last) into MAMLinear, in place."""
    linears = [(n, m) for n, m in model.named_modules()
               if type(m) is nn.Linear or isinstance(m, MAMLinear)]
    if layers is None:
        layers = [n for n, _ in linears[:-1]]
    known = {n for n, _ in linears}
    unknown = [n for n in layers if n not in known]
    if unknown:
        raise ValueError(f"no Linear layer named {unknown[0]!r}; the model has {sorted(known)}")
    for name, module in linears:
        if name in layers and not isinstance(module, MAMLinear):
            _replace(model, name, _swap(module, MAMLinear, beta=beta))
    return model


def to_mac(model: nn.Module) -> nn.Module:
    """Turn every MAMLinear back into ``nn.Linear``, in place, keeping weights and masks (MAM -> MAC)."""
    for name, module in mam_layers(model):
        _replace(model, name, _swap(module, nn.Linear))
    return model
