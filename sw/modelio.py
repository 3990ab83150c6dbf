"""Model files (.pt): a Sequential network with its pruning masks, and what made it.

Format ``mamfpga.model/1``: a dict with ``modules`` (a list describing the
Sequential: flatten, unflatten, select, linear/mam, conv1d/conv2d (MAC or
MAM) with their geometry and beta, maxpool1d/2d, batchnorm1d/2d, relu,
dropout), the
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
from mamfpga.sw.mam import MAMConv1d, MAMConv2d, MAMLinear
from mamfpga.sw.network import InputSelect

__all__ = ["FORMAT", "save_model", "load_model", "ModelFileError"]

FORMAT = "mamfpga.model/1"


class ModelFileError(MamfpgaError, ValueError):
    """A model file mamfpga cannot read."""

    exit_code = 2


_CONVS = {"conv1d": (nn.Conv1d, MAMConv1d), "conv2d": (nn.Conv2d, MAMConv2d)}
_POOLS = {"maxpool1d": nn.MaxPool1d, "maxpool2d": nn.MaxPool2d}
_NORMS = {"batchnorm1d": nn.BatchNorm1d, "batchnorm2d": nn.BatchNorm2d}


def _weights(m: nn.Module, k: int, entry: dict, tensors: dict) -> None:
    entry.update(bias=m.bias is not None, pruned=hasattr(m, "weight_mask"))
    tensors[f"{k}.weight"] = (m.weight_orig if hasattr(m, "weight_orig") else m.weight).detach().clone()
    if hasattr(m, "weight_mask"):
        tensors[f"{k}.mask"] = m.weight_mask.detach().clone()
    if m.bias is not None:
        tensors[f"{k}.bias"] = m.bias.detach().clone()
    if hasattr(m, "beta"):
        entry["beta"] = float(m.beta)


def save_model(model: nn.Sequential, path: str | os.PathLike, meta: dict | None = None) -> Path:
    if not isinstance(model, nn.Sequential):
        raise TypeError("save_model takes an nn.Sequential")
    modules, tensors = [], {}
    for k, m in enumerate(model):
        if isinstance(m, nn.Flatten):
            modules.append({"type": "flatten"})
        elif isinstance(m, nn.Unflatten):
            modules.append({"type": "unflatten", "dim": int(m.dim), "shape": [int(v) for v in m.unflattened_size]})
        elif isinstance(m, InputSelect):
            modules.append({"type": "select", "in": m.in_features})
            tensors[f"{k}.index"] = m.index.clone()
        elif isinstance(m, nn.Linear):
            entry = {"type": "mam" if isinstance(m, MAMLinear) else "linear", "in": m.in_features,
                     "out": m.out_features}
            _weights(m, k, entry, tensors)
            modules.append(entry)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            kind = "conv1d" if isinstance(m, nn.Conv1d) else "conv2d"
            entry = {"type": kind, "mam": isinstance(m, (MAMConv1d, MAMConv2d)), "in": m.in_channels,
                     "out": m.out_channels, "kernel": list(m.kernel_size), "stride": list(m.stride),
                     "padding": m.padding if isinstance(m.padding, str) else list(m.padding)}
            _weights(m, k, entry, tensors)
            modules.append(entry)
        elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            modules.append({"type": "maxpool1d" if isinstance(m, nn.MaxPool1d) else "maxpool2d",
                            "kernel": m.kernel_size, "stride": m.stride})
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            modules.append({"type": "batchnorm1d" if isinstance(m, nn.BatchNorm1d) else "batchnorm2d",
                            "features": m.num_features, "eps": m.eps})
            for name, t in m.state_dict().items():
                tensors[f"{k}.bn.{name}"] = t.clone()
        elif isinstance(m, nn.ReLU):
            modules.append({"type": "relu"})
        elif isinstance(m, nn.Dropout):
            modules.append({"type": "dropout", "p": m.p})
        else:
            raise TypeError(f"cannot save {type(m).__name__} at position {k}")
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "modules": modules, "tensors": tensors, "meta": meta or {}}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _load_weights(mod: nn.Module, k: int, e: dict, tensors: dict) -> nn.Module:
    with torch.no_grad():
        mod.weight.copy_(tensors[f"{k}.weight"])
        if e["bias"]:
            mod.bias.copy_(tensors[f"{k}.bias"])
    if e.get("pruned"):
        torch_prune.custom_from_mask(mod, "weight", tensors[f"{k}.mask"])
    return mod


_TYPES = ("flatten", "unflatten", "select", "linear", "mam", "conv1d", "conv2d", "maxpool1d", "maxpool2d",
          "batchnorm1d", "batchnorm2d", "relu", "dropout")
#: the largest size, channel count or geometry value a module file may declare (far above any
#: network mamfpga builds; it keeps a damaged file from asking for terabytes)
_DIM_MAX = 1 << 24


def _check_contents(obj: dict, path: Path) -> None:
    """Every entry of a model file checked before anything is built from it: known module types,
    integer sizes in range, every tensor there, floating point, finite and of the shape its
    module declares. One line naming the module and the numbers otherwise."""
    def bad(msg):
        raise ModelFileError(f"{path}: {msg}")

    modules, tensors, meta = obj.get("modules"), obj.get("tensors"), obj.get("meta", {})
    if not isinstance(modules, list) or not all(isinstance(e, dict) for e in modules):
        bad("'modules' is not a list of module entries")
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in tensors.items()):
        bad("'tensors' is not a table of named tensors")
    if not isinstance(meta, dict):
        bad(f"'meta' is {type(meta).__name__}, not a table")

    def ints(k, e, name, n=None, lo=1):
        v = e.get(name)
        vals = list(v) if isinstance(v, (list, tuple)) else [v]
        if (n is not None and not 1 <= len(vals) <= n) or not vals or not all(
                isinstance(x, int) and not isinstance(x, bool) and lo <= x <= _DIM_MAX for x in vals):
            bad(f"module {k} ({e['type']}): {name} is {v!r}, not {'integers' if n else 'an integer'} in "
                f"[{lo}, {_DIM_MAX}]")
        return vals if n is not None else vals[0]

    def tensor(k, e, name, shape, what="weights"):
        t = tensors.get(f"{k}.{name}")
        if t is None:
            bad(f"module {k} ({e['type']}): its {what} ({k}.{name}) are missing")
        if not (t.is_floating_point() or (name == "mask" and t.dtype == torch.bool)):
            bad(f"module {k} ({e['type']}): {k}.{name} holds {t.dtype}, not floating point values")
        if tuple(t.shape) != tuple(shape):
            bad(f"module {k} ({e['type']}): {k}.{name} has shape {list(t.shape)}, the module needs {list(shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad(f"module {k} ({e['type']}): {k}.{name} holds NaN or infinite values")

    for k, e in enumerate(modules):
        t = e.get("type")
        if not isinstance(t, str) or t not in _TYPES:
            bad(f"unknown module type {t!r} at position {k}")
        if t in ("linear", "mam", "conv1d", "conv2d"):
            n_in, n_out = ints(k, e, "in"), ints(k, e, "out")
            if t in ("conv1d", "conv2d"):
                dims = 1 if t == "conv1d" else 2
                kernel = ints(k, e, "kernel", dims)
                ints(k, e, "stride", dims)
                if not isinstance(e.get("padding"), str):
                    ints(k, e, "padding", dims, lo=0)
                shape = (n_out, n_in, *(kernel * (dims // len(kernel))))
            else:
                shape = (n_out, n_in)
            if not isinstance(e.get("bias"), bool) or not isinstance(e.get("pruned", False), bool):
                bad(f"module {k} ({t}): 'bias' and 'pruned' must be true or false")
            if "beta" in e and not (isinstance(e["beta"], (int, float)) and 0.0 <= float(e["beta"]) <= 1.0):
                bad(f"module {k} ({t}): beta is {e['beta']!r}, not a number in [0, 1]")
            tensor(k, e, "weight", shape)
            if e["bias"]:
                tensor(k, e, "bias", (n_out,), "biases")
            if e.get("pruned"):
                tensor(k, e, "mask", shape, "pruning mask")
        elif t in ("maxpool1d", "maxpool2d"):
            ints(k, e, "kernel", 2)
            ints(k, e, "stride", 2)
        elif t in ("batchnorm1d", "batchnorm2d"):
            n = ints(k, e, "features")
            if not isinstance(e.get("eps"), (int, float)) or not 0 < float(e["eps"]) < 1:
                bad(f"module {k} ({t}): eps is {e.get('eps')!r}")
            for name in ("weight", "bias", "running_mean", "running_var"):
                tensor(k, e, f"bn.{name}", (n,), "statistics")
        elif t == "unflatten":
            ints(k, e, "dim")
            ints(k, e, "shape", 3)
        elif t == "select":
            n = ints(k, e, "in")
            idx = tensors.get(f"{k}.index")
            if idx is None or idx.dtype not in (torch.int64, torch.int32) or idx.dim() != 1 or (
                    idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n)):
                bad(f"module {k} (select): its index must be integers in [0, {n})")
        elif t == "dropout":
            if not isinstance(e.get("p"), (int, float)) or not 0.0 <= float(e["p"]) < 1.0:
                bad(f"module {k} (dropout): p is {e.get('p')!r}")


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
    _check_contents(obj, path)
    tensors = obj["tensors"]
    mods: list[nn.Module] = []
    try:
        for k, e in enumerate(obj["modules"]):
            t = e["type"]
            if t == "flatten":
                mods.append(nn.Flatten())
            elif t == "select":
                mods.append(InputSelect(tensors[f"{k}.index"], e["in"]))
            elif t == "unflatten":
                mods.append(nn.Unflatten(e["dim"], tuple(e["shape"])))
            elif t in ("linear", "mam"):
                lin = (MAMLinear(e["in"], e["out"], e["bias"], beta=e.get("beta", 0.0)) if t == "mam"
                       else nn.Linear(e["in"], e["out"], e["bias"]))
                mods.append(_load_weights(lin, k, e, tensors))
            elif t in _CONVS:
                plain, mam = _CONVS[t]
                padding = e["padding"] if isinstance(e["padding"], str) else tuple(e["padding"])
                geometry = dict(stride=tuple(e["stride"]), padding=padding, bias=e["bias"])
                conv = (mam(e["in"], e["out"], tuple(e["kernel"]), beta=e.get("beta", 0.0), **geometry)
                        if e["mam"] else plain(e["in"], e["out"], tuple(e["kernel"]), **geometry))
                mods.append(_load_weights(conv, k, e, tensors))
            elif t in _POOLS:
                mods.append(_POOLS[t](e["kernel"], e["stride"]))
            elif t in _NORMS:
                bn = _NORMS[t](e["features"], eps=e["eps"])
                bn.load_state_dict({n[len(f"{k}.bn."):]: v for n, v in tensors.items() if n.startswith(f"{k}.bn.")})
                mods.append(bn)
            elif t == "relu":
                mods.append(nn.ReLU())
            elif t == "dropout":
                mods.append(nn.Dropout(e["p"]))
            else:
                raise ModelFileError(f"{path}: unknown module type {t!r} at position {k}")
    except (KeyError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: damaged model file ({exc})") from None
    return nn.Sequential(*mods), dict(obj.get("meta", {}))
