"""The float network IR: a chain of fully connected layers, each MAC or MAM.

Every front end (torch modules here, ONNX later) produces a :class:`Network`;
simplification, quantization and the compiler work on it. A layer computes
``act(b + reduce_j(W_ij x_j))`` with reduce = sum (mac) or max + min (mam),
act = ReLU or identity. ``input_index`` (optional) says which columns of the
original input feed layer 0, after dead-input elimination.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mamfpga.errors import MamfpgaError
from mamfpga.sw.mam import MAMLinear

__all__ = ["Layer", "Network", "from_torch", "to_torch", "ModelFormatError"]

MODES = ("mac", "mam")


class ModelFormatError(MamfpgaError, ValueError):
    """The model is not something mamfpga can take (named op, position, shapes)."""

    exit_code = 2


@dataclass
class Layer:
    weight: np.ndarray            # float [M, N]
    bias: np.ndarray              # float [M]
    mode: str                     # "mac" | "mam"
    relu: bool
    name: str = ""

    def __post_init__(self):
        self.weight = np.asarray(self.weight, dtype=np.float64)
        self.bias = np.asarray(self.bias, dtype=np.float64)
        if self.mode not in MODES:
            raise ModelFormatError(f"layer {self.name or '?'}: mode must be mac or mam, not {self.mode!r}")
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ModelFormatError(f"layer {self.name or '?'}: weight {self.weight.shape} and bias "
                                   f"{self.bias.shape} do not fit")

    @property
    def rows(self) -> int:
        return self.weight.shape[0]

    @property
    def cols(self) -> int:
        return self.weight.shape[1]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float reference forward for a batch x [B, N] (float64)."""
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

    def __post_init__(self):
        n = len(self.input_index) if self.input_index is not None else self.input_size
        for k, layer in enumerate(self.layers):
            if layer.cols != n:
                raise ModelFormatError(f"layer {k} has {layer.cols} inputs but receives {n}")
            n = layer.rows

    @property
    def output_size(self) -> int:
        return self.layers[-1].rows

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != self.input_size:
            raise ValueError(f"network expects {self.input_size} inputs, got {x.shape[1]}")
        if self.input_index is not None:
            x = x[:, self.input_index]
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def nnz(self) -> list[int]:
        return [int(np.count_nonzero(layer.weight)) for layer in self.layers]


class InputSelect(nn.Module):
    """Keeps the input columns a simplified network still reads."""

    def __init__(self, index, in_features: int):
        super().__init__()
        self.in_features = in_features
        self.register_buffer("index", torch.as_tensor(np.asarray(index), dtype=torch.long))

    def forward(self, x):
        return x.index_select(-1, self.index)


def from_torch(model: nn.Module, input_size: int | None = None) -> Network:
    """The IR of a Sequential MLP (Linear/MAMLinear, ReLU, Flatten, InputSelect).

    A MAMLinear with 0 < beta < 1 is refused: the hardware has MAC or MAM, not a blend.
    """
    modules = list(model) if isinstance(model, nn.Sequential) else [model]
    layers: list[Layer] = []
    input_index = None
    for pos, m in enumerate(modules):
        name = f"{type(m).__name__} at position {pos}"
        if isinstance(m, nn.Flatten):
            if layers:
                raise ModelFormatError(f"{name}: Flatten is only supported before the first layer")
        elif isinstance(m, InputSelect):
            if layers:
                raise ModelFormatError(f"{name}: input selection is only supported before the first layer")
            input_index = m.index.cpu().numpy()
            input_size = m.in_features
        elif isinstance(m, nn.Linear):
            if isinstance(m, MAMLinear) and 0.0 < m.beta < 1.0:
                raise ModelFormatError(f"{name}: beta={m.beta:g} is a MAC/MAM blend; finish the "
                                       "vanishing-contribution schedule (beta=0) first")
            mode = "mam" if isinstance(m, MAMLinear) and m.beta == 0.0 else "mac"
            w = m.weight.detach().cpu().double().numpy()
            b = (m.bias.detach().cpu().double().numpy() if m.bias is not None
                 else np.zeros(m.out_features))
            layers.append(Layer(w, b, mode, False, name=f"layer{len(layers)}"))
        elif isinstance(m, nn.ReLU):
            if not layers or layers[-1].relu:
                raise ModelFormatError(f"{name}: ReLU must follow a linear layer")
            layers[-1].relu = True
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            continue
        else:
            raise ModelFormatError(f"{name}: unsupported module; mamfpga takes Linear, MAMLinear, "
                                   "ReLU, Flatten and Dropout")
    if not layers:
        raise ModelFormatError("the model has no Linear or MAMLinear layer")
    if input_size is None:
        input_size = layers[0].cols
    return Network(layers, input_size, input_index)


def to_torch(net: Network, *, masks: bool = True) -> nn.Sequential:
    """A Sequential computing ``net`` in float32 (MAM layers as MAMLinear, beta = 0).

    With ``masks``, a layer with zero weights gets a torch.nn.utils.prune mask on
    them, so that fine-tuning keeps them pruned."""
    from torch.nn.utils import prune as torch_prune

    modules: list[nn.Module] = []
    if net.input_index is not None:
        modules.append(InputSelect(net.input_index, net.input_size))
    for layer in net.layers:
        cls = MAMLinear if layer.mode == "mam" else nn.Linear
        lin = cls(layer.cols, layer.rows)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(layer.weight))
            lin.bias.copy_(torch.as_tensor(layer.bias))
        if masks and (layer.weight == 0).any():
            torch_prune.custom_from_mask(lin, "weight", torch.as_tensor(layer.weight != 0, dtype=torch.float32))
        modules.append(lin)
        if layer.relu:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)
