"""Multiply-And-Max/min layers for PyTorch.

``MAMLinear`` is a drop-in for ``nn.Linear`` (same parameters, same state
dict) computing ``beta * (x W^T) + (1 - beta) * (max_j W_ij x_j + min_j W_ij x_j) + b``.
``MAMConv2d`` and ``MAMConv1d`` are the same for ``nn.Conv2d``/``nn.Conv1d``
(groups 1, zero padding): the max and min run over every product of a
window, the padding zeros included.
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

__all__ = ["CHUNK_ELEMENTS", "MAMLinear", "MAMConv1d", "MAMConv2d", "MAM_TYPES", "is_mam", "maxmin", "maxmin_indices", "maxmin_indices_torch",
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
    counts twice); repeated indices within a batch accumulate correctly. For a
    convolution every window is a sample: the probability is over windows.
    """

    def __init__(self, weight_shape):
        self.shape = tuple(weight_shape)
        rows = self.shape[0]
        self.counts = torch.zeros(rows, int(torch.tensor(self.shape[1:]).prod()) if len(self.shape) > 1 else 1,
                                  dtype=torch.float64)
        self.samples = 0

    @torch.no_grad()
    def observe(self, x: torch.Tensor, weight: torch.Tensor):
        """x [..., N] against weight [M, N] (a convolution passes its windows as rows)."""
        flat = x.reshape(-1, x.shape[-1])
        w2 = weight.reshape(weight.shape[0], -1)
        _, imax, _, imin = maxmin_indices(flat, w2)
        rows, cols = w2.shape
        row_ids = torch.arange(rows).expand_as(imax)
        view = self.counts.view(-1)
        for idx in (imax, imin):
            view.index_add_(0, (row_ids * cols + idx).reshape(-1).cpu(),
                            torch.ones(idx.numel(), dtype=torch.float64))
        self.samples += flat.shape[0]

    def probability(self) -> torch.Tensor:
        """P(selected as max or min) per weight: counts / samples, in the weight's shape."""
        if self.samples == 0:
            raise ValueError("no samples were observed; run the pruning set through the model first")
        return (self.counts / self.samples).float().view(self.shape)


def _windows(xp: torch.Tensor, kernel, stride) -> torch.Tensor:
    """The windows of a padded [B, C, H, W] input as rows [B * OH * OW, C * KH * KW]."""
    cols = F.unfold(xp, kernel, stride=stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _samples_per_chunk(xp: torch.Tensor, kernel, stride) -> int:
    oh = (xp.shape[2] - kernel[0]) // stride[0] + 1
    ow = (xp.shape[3] - kernel[1]) // stride[1] + 1
    per_sample = oh * ow * xp.shape[1] * kernel[0] * kernel[1]
    return max(1, CHUNK_ELEMENTS // max(1, per_sample))


class _ConvMaxPlusMin(torch.autograd.Function):
    """z[b, i, oy, ox] = max + min over the window's products W[i] * xp[b, window]; gradients
    only to the two selected products. The windows are unfolded a batch chunk at a time and
    unfolded again in the backward pass: what is kept is the input and the selected
    indices, of the order of the output, never the unfolded input or the products."""

    @staticmethod
    def forward(ctx, xp, weight, kernel, stride):
        batch, m = xp.shape[0], weight.shape[0]
        oh = (xp.shape[2] - kernel[0]) // stride[0] + 1
        ow = (xp.shape[3] - kernel[1]) // stride[1] + 1
        w2 = weight.reshape(m, -1)
        out = xp.new_empty(batch, oh * ow, m)
        imax = torch.empty(batch, oh * ow, m, dtype=torch.long)
        imin = torch.empty(batch, oh * ow, m, dtype=torch.long)
        step = _samples_per_chunk(xp, kernel, stride)
        for s in range(0, batch, step):
            vmax, ia, vmin, ii = maxmin_indices(_windows(xp[s:s + step], kernel, stride), w2)
            n = min(step, batch - s)
            out[s:s + n] = (vmax + vmin).view(n, oh * ow, m)
            imax[s:s + n], imin[s:s + n] = ia.view(n, oh * ow, m), ii.view(n, oh * ow, m)
        ctx.save_for_backward(xp, weight, imax, imin)
        ctx.geometry = (kernel, stride, oh, ow)
        return out.transpose(1, 2).reshape(batch, m, oh, ow)

    @staticmethod
    def backward(ctx, grad):
        xp, weight, imax, imin = ctx.saved_tensors
        kernel, stride, oh, ow = ctx.geometry
        batch, m = xp.shape[0], weight.shape[0]
        w2 = weight.reshape(m, -1)
        cols = w2.shape[1]
        g = grad.reshape(batch, m, oh * ow).transpose(1, 2)          # [B, P, M]
        gw = torch.zeros(m * cols, dtype=weight.dtype) if ctx.needs_input_grad[1] else None
        gx = torch.zeros_like(xp) if ctx.needs_input_grad[0] else None
        step = _samples_per_chunk(xp, kernel, stride)
        for s in range(0, batch, step):
            n = min(step, batch - s)
            rows = _windows(xp[s:s + n], kernel, stride)            # [n * P, cols]
            gc = g[s:s + n].reshape(-1, m)
            row_ids = torch.arange(m).expand(gc.shape[0], m)
            grows = torch.zeros(rows.numel(), dtype=xp.dtype) if gx is not None else None
            win_ids = torch.arange(gc.shape[0])[:, None].expand(gc.shape[0], m)
            for idx in (imax[s:s + n].reshape(-1, m), imin[s:s + n].reshape(-1, m)):
                if gw is not None:
                    gw.index_add_(0, (row_ids * cols + idx).reshape(-1), (gc * rows.gather(1, idx)).reshape(-1))
                if grows is not None:
                    grows.index_add_(0, (win_ids * cols + idx).reshape(-1), (gc * w2[row_ids, idx]).reshape(-1))
            if gx is not None:
                gx[s:s + n] = F.fold(grows.view(n, oh * ow, cols).transpose(1, 2), xp.shape[2:], kernel,
                                     stride=stride)
        return gx, (gw.view_as(weight) if gw is not None else None), None, None


def conv_maxmin(xp: torch.Tensor, weight: torch.Tensor, stride) -> torch.Tensor:
    """max + min over each window's products, for a zero-padded input xp [B, C, H, W] and
    weight [M, C, KH, KW]: [B, M, OH, OW]; differentiable (selected products only)."""
    kernel = tuple(weight.shape[2:])
    stride = tuple(stride)
    if not (xp.requires_grad or weight.requires_grad) or not torch.is_grad_enabled():
        m = weight.shape[0]
        oh = (xp.shape[2] - kernel[0]) // stride[0] + 1
        ow = (xp.shape[3] - kernel[1]) // stride[1] + 1
        w2 = weight.reshape(m, -1)
        outs = []
        step = _samples_per_chunk(xp, kernel, stride)
        for s in range(0, xp.shape[0], step):
            vmax, vmin = maxmin_values(_windows(xp[s:s + step], kernel, stride), w2)
            outs.append((vmax + vmin).view(-1, oh * ow, m).transpose(1, 2).reshape(-1, m, oh, ow))
        return torch.cat(outs) if outs else xp.new_zeros(0, m, oh, ow)
    return _ConvMaxPlusMin.apply(xp, weight, kernel, stride)


class _MAMConv:
    """What MAMConv1d and MAMConv2d share: ``beta``, the checks, the forward pass (a Conv1d is
    a Conv2d of height 1). Mixed in before the torch class, whose parameters it keeps."""

    def __init__(self, *args, beta: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_mam()
        self.beta = float(beta)
        self.counter: SelectionCounter | None = None

    def forward(self, x):
        return self._mam_forward(x, self._conv_forward)

    def _check_mam(self):
        if self.groups != 1:
            raise ValueError(f"{type(self).__name__}: groups must be 1, not {self.groups}")
        if self.padding_mode != "zeros":
            raise ValueError(f"{type(self).__name__}: padding_mode must be 'zeros', not {self.padding_mode!r}")
        if any(d != 1 for d in self.dilation):
            raise ValueError(f"{type(self).__name__}: dilation must be 1, not {self.dilation}")

    def _mam_forward(self, x, conv_forward):
        weight = self.weight
        beta = self.beta
        if beta >= 1.0 and self.counter is None:
            return conv_forward(x, weight, self.bias)
        one_d = x.dim() == 3 or (x.dim() == 2 and isinstance(self, nn.Conv1d))
        pad = self._reversed_padding_repeated_twice            # (left, right[, top, bottom])
        x4 = x.unsqueeze(-2) if one_d else x
        w4 = weight.unsqueeze(-2) if one_d else weight
        pad4 = (pad[0], pad[1], 0, 0) if one_d else tuple(pad)
        stride = (1, self.stride[0]) if one_d else self.stride
        xp = F.pad(x4, pad4)
        if self.counter is not None:
            self.counter.observe(_windows(xp.detach(), tuple(w4.shape[2:]), stride), w4.detach())
        if beta >= 1.0:
            return conv_forward(x, weight, self.bias)
        out = conv_maxmin(xp, w4, stride)
        if one_d:
            out = out.squeeze(-2)
        if beta > 0.0:
            out = (1.0 - beta) * out + beta * conv_forward(x, weight, None)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, *([1] * (out.dim() - 2)))
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", beta={self.beta:g}"


class MAMConv2d(_MAMConv, nn.Conv2d):
    """``nn.Conv2d`` whose reduction blends sum (beta) and max+min over the window (1 - beta).

    Same parameters and state dict as ``nn.Conv2d``; groups 1, dilation 1, zero padding.
    """


class MAMConv1d(_MAMConv, nn.Conv1d):
    """``nn.Conv1d`` as MAM: :class:`MAMConv2d` on a feature map of height 1."""


#: the MAM layer types; a weighted layer is MAM when it is one of these
MAM_TYPES = (MAMLinear, MAMConv1d, MAMConv2d)
#: the layer types that carry weights mamfpga prunes, quantizes and compiles
WEIGHTED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def is_mam(module: nn.Module) -> bool:
    return isinstance(module, MAM_TYPES)


def mam_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MAM_TYPES)]


_MAM_OF = {nn.Linear: MAMLinear, nn.Conv1d: MAMConv1d, nn.Conv2d: MAMConv2d}
_MAC_OF = {v: k for k, v in _MAM_OF.items()}


def _swap(module: nn.Module, cls, beta=None) -> nn.Module:
    """A copy of ``module`` as ``cls``, keeping weights and any torch.nn.utils.prune mask."""
    from torch.nn.utils import prune

    if issubclass(cls, nn.Linear):
        new = cls(module.in_features, module.out_features, module.bias is not None,
                  device=module.weight.device, dtype=module.weight.dtype)
    else:
        new = cls(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                  padding=module.padding, dilation=module.dilation, groups=module.groups,
                  bias=module.bias is not None, padding_mode=module.padding_mode,
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


def _base(module: nn.Module):
    """The plain torch type a weighted layer is (nn.Linear, nn.Conv1d, nn.Conv2d), else None."""
    for t in (MAMLinear, MAMConv1d, MAMConv2d, nn.Linear, nn.Conv1d, nn.Conv2d):
        if type(module) is t:
            return _MAC_OF.get(t, t)
    return None


def to_mam(model: nn.Module, layers=None, *, beta: float = 0.0) -> nn.Module:
    """Turn the chosen Linear/Conv1d/Conv2d layers (names; default all but the last) into their
    MAM kind, in place."""
    weighted = [(n, m) for n, m in model.named_modules() if _base(m) is not None]
    if layers is None:
        layers = [n for n, _ in weighted[:-1]]
    known = {n for n, _ in weighted}
    unknown = [n for n in layers if n not in known]
    if unknown:
        raise ValueError(f"no Linear or Conv layer named {unknown[0]!r}; the model has {sorted(known)}")
    for name, module in weighted:
        if name in layers and not is_mam(module):
            _replace(model, name, _swap(module, _MAM_OF[_base(module)], beta=beta))
    return model


def to_mac(model: nn.Module) -> nn.Module:
    """Turn every MAM layer back into its plain torch kind, in place, keeping weights and masks
    (MAM -> MAC)."""
    for name, module in mam_layers(model):
        _replace(model, name, _swap(module, _base(module)))
    return model
