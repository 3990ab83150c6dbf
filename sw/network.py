"""The float network IR: a chain of layers, dense, conv2d (each MAC or MAM) or maxpool2d.

Every front end (torch modules here, ONNX in :mod:`~mamfpga.sw.onnx_io`) produces a
:class:`Network`; simplification, quantization and the compiler work on it. A
dense or conv2d layer computes ``act(b + reduce(W * x))`` with reduce = sum
(mac) or max + min (mam) over a row or a window, act = ReLU or identity; the
geometry is that of contract version 2 (DESIGN.md): a conv2d weight is
[M, C, KH, KW] with a stride and zero padding (top, left, bottom, right), a
Conv1d is a conv2d of height 1, a dense layer after a feature map reads it
flattened in C, H, W order. ``input_index`` (optional) says which columns of
the original input feed a dense layer 0, after dead-input elimination.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mamfpga.errors import MamfpgaError
from mamfpga.sw.mam import MAMConv1d, MAMConv2d, MAMLinear, conv_maxmin, is_mam
from mamfpga.sw.qnet import QNetError, out_shape

__all__ = ["Layer", "Network", "from_torch", "to_torch", "ModelFormatError"]

MODES = ("mac", "mam")


class ModelFormatError(MamfpgaError, ValueError):
    """The model is not something mamfpga can take (named op, position, shapes)."""

    exit_code = 2


@dataclass
class Layer:
    weight: np.ndarray | None     # float [M, N] dense, [M, C, KH, KW] conv2d, None maxpool2d
    bias: np.ndarray | None       # float [M]
    mode: str = "mac"             # "mac" | "mam"
    relu: bool = False
    name: str = ""
    kind: str = "dense"           # "dense" | "conv2d" | "maxpool2d"
    stride: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)  # top, left, bottom, right
    kernel: tuple = (1, 1)        # maxpool2d

    def __post_init__(self):
        if self.kind == "maxpool2d":
            self.mode = "mac"
            return
        self.weight = np.asarray(self.weight, dtype=np.float64)
        self.bias = np.asarray(self.bias, dtype=np.float64)
        if self.mode not in MODES:
            raise ModelFormatError(f"layer {self.name or '?'}: mode must be mac or mam, not {self.mode!r}")
        want = 2 if self.kind == "dense" else 4
        if self.weight.ndim != want or self.bias.shape != (self.weight.shape[0],):
            raise ModelFormatError(f"layer {self.name or '?'}: weight {self.weight.shape} and bias "
                                   f"{self.bias.shape} do not fit")

    @property
    def rows(self) -> int:
        return self.weight.shape[0]

    @property
    def cols(self) -> int:
        return int(np.prod(self.weight.shape[1:]))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float reference forward (float64) of a batch: x [B, N] or [B, C, H, W]."""
        if self.kind == "maxpool2d":
            return F.max_pool2d(torch.from_numpy(np.ascontiguousarray(x)), self.kernel, self.stride).numpy()
        if self.kind == "conv2d":
            top, left, bottom, right = self.padding
            xp = F.pad(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)), (left, right, top, bottom))
            w = torch.from_numpy(self.weight)
            z = (F.conv2d(xp, w, stride=self.stride) if self.mode == "mac"
                 else conv_maxmin(xp, w, self.stride)).numpy()
            z = z + self.bias[None, :, None, None]
            return np.maximum(z, 0.0) if self.relu else z
        x = x.reshape(len(x), -1)
        if self.mode == "mac":
            z = x @ self.weight.T
        else:
            # in float64, through mamfpga.sw.mam's chunked max/min: memory of the order of the
            # output, never a B x M x N product (9.8 GiB for digits through a 1024 x 1024 layer)
            from mamfpga.sw.mam import maxmin_values

            vmax, vmin = maxmin_values(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)),
                                       torch.from_numpy(np.ascontiguousarray(self.weight, dtype=np.float64)))
            z = (vmax + vmin).numpy()
        z = z + self.bias
        return np.maximum(z, 0.0) if self.relu else z


@dataclass
class Network:
    layers: list[Layer]
    input_size: int
    input_index: np.ndarray | None = None      # columns of the original input that layer 0 reads
    meta: dict = field(default_factory=dict)
    input_shape: tuple | None = None           # (C, H, W) of a feature-map input; (N,) otherwise

    def __post_init__(self):
        n = len(self.input_index) if self.input_index is not None else self.input_size
        if self.input_shape is None or self.input_index is not None:
            self.input_shape = (n,)
        self.input_shape = tuple(int(v) for v in self.input_shape)
        if int(np.prod(self.input_shape)) != n:
            raise ModelFormatError(f"input shape {list(self.input_shape)} does not hold {n} inputs")
        self.shapes                                  # the shape rules of contract version 2

    @property
    def shapes(self) -> list[tuple]:
        """The activation shapes: the input's, then each layer's output."""
        shapes = [self.input_shape]
        try:
            for k, layer in enumerate(self.layers):
                shapes.append(out_shape(layer, shapes[-1], f"layer{k}"))
        except QNetError as exc:
            raise ModelFormatError(str(exc)) from None
        return shapes

    @property
    def output_size(self) -> int:
        return int(np.prod(self.shapes[-1]))

    @property
    def weighted(self) -> list[Layer]:
        return [l for l in self.layers if l.kind != "maxpool2d"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The float outputs [B, values] of x given as [B, input_size] or [B, *input_shape]."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != self.input_size:
            raise ValueError(f"network expects {self.input_size} inputs, got {x.shape[1]}")
        if self.input_index is not None:
            x = x[:, self.input_index]
        x = x.reshape((len(x),) + self.input_shape)
        for layer in self.layers:
            x = layer.forward(x)
        return x.reshape(len(x), -1)

    def nnz(self) -> list[int]:
        return [int(np.count_nonzero(layer.weight)) for layer in self.weighted]


class InputSelect(nn.Module):
    """Keeps the input columns a simplified network still reads."""

    def __init__(self, index, in_features: int):
        super().__init__()
        self.in_features = in_features
        self.register_buffer("index", torch.as_tensor(np.asarray(index), dtype=torch.long))

    def forward(self, x):
        return x.index_select(-1, self.index)


def _fold_bn(layer: Layer, bn: nn.Module, name: str) -> None:
    """BatchNorm (eval statistics) folded into the preceding conv or dense layer. Exact for MAM
    too: max(s p) + min(s p) = s (max p + min p) for any sign of s."""
    if not bn.track_running_stats or bn.running_mean is None:
        raise ModelFormatError(f"{name}: BatchNorm without running statistics cannot be folded")
    scale = bn.weight.detach().double().numpy() if bn.affine else np.ones(bn.num_features)
    shift = bn.bias.detach().double().numpy() if bn.affine else np.zeros(bn.num_features)
    s = scale / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
    if len(s) != layer.rows:
        raise ModelFormatError(f"{name}: {len(s)} features, but the layer before it has {layer.rows} outputs")
    layer.weight = layer.weight * s.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
    layer.bias = (layer.bias - bn.running_mean.detach().double().numpy()) * s + shift


def _padding4(m: nn.Module, name: str) -> tuple:
    pad = m._reversed_padding_repeated_twice           # (left, right[, top, bottom])
    if isinstance(m, nn.Conv1d):
        return (0, int(pad[0]), 0, int(pad[1]))
    return (int(pad[2]), int(pad[0]), int(pad[3]), int(pad[1]))


def from_torch(model: nn.Module, input_size: int | None = None, input_shape: tuple | None = None) -> Network:
    """The IR of a Sequential: Linear/MAMLinear, Conv1d/Conv2d and their MAM kinds, MaxPool1d/2d,
    BatchNorm1d/2d (folded into the layer before), ReLU, Flatten, ZeroPad2d (into the next conv),
    Dropout, InputSelect and Unflatten at the front. ``input_shape`` ((C, H, W), or (C, L) for
    Conv1d) is needed when the first weighted layer is a convolution.

    A MAM layer with 0 < beta < 1 is refused: the hardware has MAC or MAM, not a blend.
    """
    modules = list(model) if isinstance(model, nn.Sequential) else [model]
    layers: list[Layer] = []
    input_index = None
    pending_pad = None
    if input_shape is not None and len(input_shape) == 2:
        input_shape = (input_shape[0], 1, input_shape[1])         # Conv1d: a feature map of height 1
    for pos, m in enumerate(modules):
        name = f"{type(m).__name__} at position {pos}"
        if isinstance(m, nn.Flatten):
            continue                       # a dense layer reads a feature map flattened anyway
        if isinstance(m, nn.Unflatten) and not layers:
            if m.dim != 1:
                raise ModelFormatError(f"{name}: only Unflatten(1, shape) of the input is supported")
            input_shape = tuple(int(v) for v in m.unflattened_size)
            if len(input_shape) == 2:
                input_shape = (input_shape[0], 1, input_shape[1])
            continue
        if isinstance(m, InputSelect):
            if layers:
                raise ModelFormatError(f"{name}: input selection is only supported before the first layer")
            input_index = m.index.cpu().numpy()
            input_size = m.in_features
        elif isinstance(m, nn.ZeroPad2d):
            pending_pad = tuple(int(v) for v in m.padding)          # left, right, top, bottom
        elif isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if is_mam(m) and 0.0 < m.beta < 1.0:
                raise ModelFormatError(f"{name}: beta={m.beta:g} is a MAC/MAM blend; finish the "
                                       "vanishing-contribution schedule (beta=0) first")
            mode = "mam" if is_mam(m) and m.beta == 0.0 else "mac"
            w = m.weight.detach().cpu().double().numpy()
            rows = w.shape[0]
            b = m.bias.detach().cpu().double().numpy() if m.bias is not None else np.zeros(rows)
            if isinstance(m, nn.Linear):
                if pending_pad is not None:
                    raise ModelFormatError(f"{name}: ZeroPad2d must be followed by a convolution")
                layers.append(Layer(w, b, mode, False, name=f"layer{len(layers)}"))
                continue
            if m.groups != 1 or any(d != 1 for d in m.dilation) or m.padding_mode != "zeros":
                raise ModelFormatError(f"{name}: only groups=1, dilation=1 and zero padding are supported "
                                       f"(groups={m.groups}, dilation={tuple(m.dilation)}, "
                                       f"padding_mode={m.padding_mode!r})")
            pad = _padding4(m, name)
            if pending_pad is not None:
                l_, r_, t_, b_ = pending_pad
                pad = (pad[0] + t_, pad[1] + l_, pad[2] + b_, pad[3] + r_)
                pending_pad = None
            if isinstance(m, nn.Conv1d):
                w = w[:, :, None, :]
                stride = (1, int(m.stride[0]))
            else:
                stride = tuple(int(v) for v in m.stride)
            layers.append(Layer(w, b, mode, False, name=f"layer{len(layers)}", kind="conv2d",
                                stride=stride, padding=pad))
        elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            one_d = isinstance(m, nn.MaxPool1d)
            pair = (lambda v: (1, int(v if isinstance(v, int) else v[0]))) if one_d else \
                (lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(e) for e in v))
            if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices:
                raise ModelFormatError(f"{name}: only max pooling without padding, dilation or ceil_mode is "
                                       "supported")
            layers.append(Layer(None, None, kind="maxpool2d", name=f"layer{len(layers)}",
                                kernel=pair(m.kernel_size), stride=pair(m.stride if m.stride else m.kernel_size)))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not layers or layers[-1].kind == "maxpool2d" or layers[-1].relu:
                raise ModelFormatError(f"{name}: BatchNorm must directly follow a convolution or linear layer "
                                       "(it is folded into it)")
            _fold_bn(layers[-1], m, name)
        elif isinstance(m, nn.ReLU):
            target = layers[-1] if layers else None
            if target is not None and target.kind == "maxpool2d" and len(layers) > 1:
                # ReLU after a max pool = max pool after ReLU (max is monotone): onto the layer before
                target = layers[-2] if layers[-2].kind != "maxpool2d" else None
            if target is None or target.kind == "maxpool2d" or target.relu:
                raise ModelFormatError(f"{name}: ReLU must follow a linear or convolution layer")
            target.relu = True
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            continue
        else:
            raise ModelFormatError(f"{name}: unsupported module; mamfpga takes Linear, Conv1d, Conv2d (and "
                                   "their MAM kinds), MaxPool, BatchNorm, ReLU, Flatten and Dropout")
    if not any(l.kind != "maxpool2d" for l in layers):
        raise ModelFormatError("the model has no Linear, Conv or MAM layer")
    first = layers[0]
    if first.kind == "dense":
        if input_size is None:
            input_size = first.cols
        input_shape = None
    else:
        if input_shape is None:
            raise ModelFormatError("the model starts with a convolution or pooling: give its input shape "
                                   "(C, H, W), or (C, L) for Conv1d")
        input_size = int(np.prod(input_shape))
    return Network(layers, input_size, input_index, input_shape=input_shape)


def to_torch(net: Network, *, masks: bool = True) -> nn.Sequential:
    """A Sequential computing ``net`` in float32 (MAM layers as MAMLinear/MAMConv2d, beta = 0).

    With ``masks``, a layer with zero weights gets a torch.nn.utils.prune mask on
    them, so that fine-tuning keeps them pruned. A feature-map input is taken flat, [B, C*H*W],
    and unflattened first; asymmetric padding becomes a ZeroPad2d before its convolution."""
    from torch.nn.utils import prune as torch_prune

    modules: list[nn.Module] = []
    if net.input_index is not None:
        modules.append(InputSelect(net.input_index, net.input_size))
    elif len(net.input_shape) == 3:
        modules.append(nn.Unflatten(1, net.input_shape))      # flat inputs, as mamfpga's data sets give
    shapes = net.shapes
    for k, layer in enumerate(net.layers):
        if layer.kind == "maxpool2d":
            modules.append(nn.MaxPool2d(layer.kernel, layer.stride))
            continue
        if layer.kind == "conv2d":
            top, left, bottom, right = layer.padding
            m, c, kh, kw = layer.weight.shape
            if (top, left) != (bottom, right):
                modules.append(nn.ZeroPad2d((left, right, top, bottom)))
                padding = (0, 0)
            else:
                padding = (top, left)
            cls = MAMConv2d if layer.mode == "mam" else nn.Conv2d
            mod = cls(c, m, (kh, kw), stride=layer.stride, padding=padding)
        else:
            if len(shapes[k]) == 3:
                modules.append(nn.Flatten())
            cls = MAMLinear if layer.mode == "mam" else nn.Linear
            mod = cls(layer.cols, layer.rows)
        with torch.no_grad():
            mod.weight.copy_(torch.as_tensor(layer.weight))
            mod.bias.copy_(torch.as_tensor(layer.bias))
        if masks and (layer.weight == 0).any():
            torch_prune.custom_from_mask(mod, "weight", torch.as_tensor(layer.weight != 0, dtype=torch.float32))
        modules.append(mod)
        if layer.relu:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)
