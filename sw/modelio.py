"""Model files (.pt): a Sequential MLP with its pruning masks, and what made it.

Format ``mamfpga.model/1``: a dict with ``modules`` (a list describing the
Sequential: flatten, select, linear/mam with sizes and beta, relu), the
effective weights, biases and masks, and ``meta`` (provenance: dataset,
training and pruning settings, accuracy). Loading rebuilds the modules and
re-applies the masks, so ``prune.remove`` and fine-tuning keep working.
Files are written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mamfpga.errors import MamfpgaError
from mamfpga.outputs import atomic_write_bytes
from mamfpga.sw.mam import MAMLinear
from mamfpga.sw.network import InputSelect

__all__ = ["FORMAT", "save_model", "load_model", "ModelFileError"]

FORMAT = "mamfpga.model/1"


class ModelFileError(MamfpgaError, ValueError):
    """A model file mamfpga cannot read."""

    exit_code = 2


def save_model(model: nn.Sequential, path: str | os.PathLike, meta: dict | None = None) -> Path:
    if not isinstance(model, nn.Sequential):
        raise TypeError("save_model takes an nn.Sequential")
    modules, tensors = [], {}
    for k, m in enumerate(model):
        if isinstance(m, nn.Flatten):
            modules.append({"type": "flatten"})
        elif isinstance(m, InputSelect):
            modules.append({"type": "select", "in": m.in_features})
            tensors[f"{k}.index"] = m.index.clone()
        elif isinstance(m, nn.Linear):
            kind = "mam" if isinstance(m, MAMLinear) else "linear"
            entry = {"type": kind, "in": m.in_features, "out": m.out_features,
                     "bias": m.bias is not None, "pruned": hasattr(m, "weight_mask")}
            if kind == "mam":
                entry["beta"] = float(m.beta)
            modules.append(entry)
            tensors[f"{k}.weight"] = (m.weight_orig if hasattr(m, "weight_orig") else m.weight).detach().clone()
            if hasattr(m, "weight_mask"):
                tensors[f"{k}.mask"] = m.weight_mask.detach().clone()
            if m.bias is not None:
                tensors[f"{k}.bias"] = m.bias.detach().clone()
        elif isinstance(m, nn.ReLU):
            modules.append({"type": "relu"})
        elif isinstance(m, nn.Dropout):
            modules.append({"type": "dropout", "p": m.p})
        else:
            raise TypeError(f"cannot save {type(m).__name__} at position {k}")
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "modules": modules, "tensors": tensors, "meta": meta or {}}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_model(path: str | os.PathLike) -> tuple[nn.Sequential, dict]:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: not a mamfpga model file ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        fmt = obj.get("format") if isinstance(obj, dict) else None
        raise ModelFileError(f"{path}: unknown format {fmt!r}; expected {FORMAT!r}")
    tensors = obj["tensors"]
    mods: list[nn.Module] = []
    try:
        for k, e in enumerate(obj["modules"]):
            t = e["type"]
            if t == "flatten":
                mods.append(nn.Flatten())
            elif t == "select":
                mods.append(InputSelect(tensors[f"{k}.index"], e["in"]))
            elif t in ("linear", "mam"):
                lin = (MAMLinear(e["in"], e["out"], e["bias"], beta=e.get("beta", 0.0)) if t == "mam"
                       else nn.Linear(e["in"], e["out"], e["bias"]))
                with torch.no_grad():
                    lin.weight.copy_(tensors[f"{k}.weight"])
                    if e["bias"]:
                        lin.bias.copy_(tensors[f"{k}.bias"])
                if e.get("pruned"):
                    torch_prune.custom_from_mask(lin, "weight", tensors[f"{k}.mask"])
                mods.append(lin)
            elif t == "relu":
                mods.append(nn.ReLU())
            elif t == "dropout":
                mods.append(nn.Dropout(e["p"]))
            else:
                raise ModelFileError(f"{path}: unknown module type {t!r} at position {k}")
    except (KeyError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: damaged model file ({exc})") from None
    return nn.Sequential(*mods), dict(obj.get("meta", {}))
