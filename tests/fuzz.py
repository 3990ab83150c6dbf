"""Mutation fuzzing of the loaders: QuantNetwork files (.npz), ONNX models, model files (.pt) and
build folders. Each kind has a valid original, a set of mutations (truncation, wrong dtypes and
shapes, NaN/inf, huge dimensions, out-of-range values, unknown format versions, missing and
unknown keys) and the CLI verb that loads it. A mutated input must give the original's result
or exit 2 with one line naming the problem, no traceback, and nothing written; never an
unhandled exception or a hang. ``tests/test_fuzz_loaders.py`` runs it under hypothesis;
``scripts/fuzz_loaders.py`` runs many and prints the counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("npz", "onnx", "pt", "build")
#: seconds one loader run may take before it counts as a hang
HANG_S = 60


@dataclass
class Outcome:
    kind: str
    mutation: str
    result: str            # "same" | "rejected" | "valid" | a failure: "crash", "different", "message",
    detail: str = ""       # "written", "hang"

    @property
    def ok(self) -> bool:
        return self.result in ("same", "rejected", "valid")


#: mutations that can leave a valid model that computes something else (a node removed, an
#: attribute changed to another legal value): these may give another result; every other must
#: give the original's or be refused
MAY_STAY_VALID = ("node ", "an attribute of ", "initializer ")


# ----------------------------------------------------------------------------- originals

def make_originals(folder: Path) -> dict:
    """A valid file or folder of each kind, the inputs its verb needs, and its verb's result."""
    import torch
    from torch import nn

    from mamfpga.sw.modelio import save_model
    from mamfpga.sw.qnet import save_qnet
    from tests.support import random_conv_network, random_network

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    conv = random_conv_network(rng)
    while sum(l.weight is not None for l in conv.layers) < 2:
        conv = random_conv_network(rng)
    save_qnet(conv, folder / "net.npz")
    np.save(folder / "x_net.npy", rng.integers(-128, 128, size=(3, conv.input_size)).astype(np.int8))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    save_model(model, folder / "model.pt", {"dataset": "digits"})
    np.save(folder / "x_float.npy", rng.standard_normal((16, 6)).astype(np.float32))
    onnx_path = folder / "model.onnx"
    torch.onnx.export(model, torch.zeros(1, 6), str(onnx_path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})

    small = random_network(np.random.default_rng(1), [8, 6, 3], 0.5, ["mam", "mac"])
    save_qnet(small, folder / "small.npz")
    _quiet_cli(["compile", str(folder / "small.npz"), "--pes", "2", "--lanes", "1", "-q", "-o",
                str(folder / "build")])
    originals = {kind: folder / name for kind, name in
                 (("npz", "net.npz"), ("onnx", "model.onnx"), ("pt", "model.pt"), ("build", "build"))}
    base = {}
    for kind in KINDS:
        rc, out, err, result = run_verb(kind, originals[kind], folder, folder / f"base-{kind}")
        if rc != 0:
            raise RuntimeError(f"the original {kind} does not load: {err}")
        base[kind] = result
    return {"paths": originals, "base": base, "folder": folder}


# ----------------------------------------------------------------------------- the verbs

def _quiet_cli(argv) -> tuple[int, str, str]:
    from mamfpga import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def run_verb(kind: str, target: Path, folder: Path, out: Path):
    """(exit status, stdout, stderr, result) of the verb that loads ``target``; the result is
    what it wrote (or printed), for comparison with the original's."""
    if kind == "npz":
        out = out.with_suffix(".npy")
        rc, o, e = _quiet_cli(["golden", str(target), "--inputs", str(folder / "x_net.npy"), "--outputs", str(out)])
        return rc, o, e, (np.load(out) if rc == 0 else None)
    if kind in ("onnx", "pt"):
        out = out.with_suffix(".npz")
        rc, o, e = _quiet_cli(["quantize", str(target), "--calib", str(folder / "x_float.npy"), "-o", str(out)])
        if rc != 0:
            return rc, o, e, None
        with np.load(out) as z:
            return rc, o, e, {k: z[k].copy() for k in z.files}
    rc, o, e = _quiet_cli(["report", str(target), "--json"])
    return rc, o, e, (json.loads(o) if rc == 0 else None)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


# ----------------------------------------------------------------------------- mutations

HUGE = [2**31, 2**40, 10**9, -1, 0]


def _truncate(src: Path, dst: Path, rnd: random.Random) -> str:
    data = src.read_bytes()
    n = rnd.randrange(0, len(data))
    dst.write_bytes(data[:n])
    return f"truncated to {n} of {len(data)} bytes"


def _odd_value(rnd: random.Random, v: np.ndarray) -> tuple[np.ndarray, str]:
    """``v`` changed in one of the ways a damaged or hostile file could."""
    choice = rnd.choice(["dtype-float", "dtype-bool", "dtype-str", "dtype-u8", "shape-extra", "shape-short",
                         "nan", "inf", "huge", "negative", "empty", "scalar"])
    if choice == "dtype-float":
        return v.astype(np.float64) + (0.5 if v.dtype.kind in "iu" else 0), choice
    if choice == "dtype-bool":
        return np.ones(v.shape, bool), choice
    if choice == "dtype-str":
        return np.full(v.shape if v.size < 50 else (2,), "x"), choice
    if choice == "dtype-u8":
        return np.asarray(v).astype(np.uint8) if v.dtype.kind in "iub" else np.zeros(v.shape, np.uint8), choice
    if choice == "shape-extra":
        return np.expand_dims(v, 0).repeat(2, axis=0) if v.size < 10**5 else v[None], choice
    if choice == "shape-short":
        return (v.reshape(-1)[:-1] if v.size else np.zeros(3)), choice
    if choice in ("nan", "inf"):
        f = np.array(v, dtype=np.float64, copy=True) if v.dtype.kind in "iufb" else np.zeros(3)
        if f.size:
            f.reshape(-1)[rnd.randrange(f.size)] = np.nan if choice == "nan" else -np.inf
        return f, choice
    if choice == "huge":
        h = rnd.choice(HUGE[:3])
        return (np.full(v.shape, h, dtype=np.int64) if v.size < 10**5 else np.array(h)), f"huge {h}"
    if choice == "negative":
        return -np.abs(np.asarray(v, dtype=np.int64)) - 1 if v.dtype.kind in "iub" else np.array(-1), choice
    if choice == "empty":
        return np.zeros((0,) + v.shape[1:], v.dtype) if v.ndim else np.zeros(0), choice
    return np.array(v.reshape(-1)[0] if v.size else 0), choice


def mutate_npz(src: Path, dst: Path, rnd: random.Random) -> str:
    if rnd.random() < 0.15:
        return _truncate(src, dst, rnd)
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    key = rnd.choice(sorted(arrays))
    op = rnd.random()
    if op < 0.1:
        del arrays[key]
        what = f"{key} removed"
    elif op < 0.15:
        arrays[f"{key}_unknown"] = np.array(1)
        what = f"unknown key beside {key}"
    elif op < 0.25 and key == "format":
        arrays[key] = np.array(rnd.choice(["mamfpga.qnet/9", "", "mamfpga.qnet/2\x00"]))
        what = f"format {arrays[key]!r}"
    elif op < 0.45 and (key.endswith((".mult", ".shift", ".weight", ".act_max", ".weight_bits", ".stride",
                                      ".padding", ".kernel")) or key == "input_shape"):
        v = np.asarray(arrays[key], dtype=np.int64).copy()
        # values each key's range refuses (a value inside it is another valid network)
        field = key.rsplit(".", 1)[-1]
        bad = rnd.choice({"mult": [0, -1, 2**24, 2**40], "shift": [-1, 63, 99], "weight": [-128, 128, 200, 2**40],
                          "act_max": [0, 100, 256], "weight_bits": [0, 1, 9], "padding": [-1, -(2**40)],
                          }.get(field, [0, -1, 2**40]))
        if v.size:
            v.reshape(-1)[rnd.randrange(v.size)] = bad
        arrays[key] = v
        what = f"{key} gets {bad}"
    else:
        arrays[key], how = _odd_value(rnd, np.asarray(arrays[key]))
        what = f"{key}: {how}"
    np.savez(dst, **arrays)
    return what


def mutate_onnx(src: Path, dst: Path, rnd: random.Random) -> str:
    import onnx
    from onnx import numpy_helper

    if rnd.random() < 0.2:
        return _truncate(src, dst, rnd)
    m = onnx.load(str(src))
    g = m.graph
    op = rnd.choice(["init-dims", "init-dtype", "init-nan", "init-huge-dims", "op-type", "drop-node", "ir",
                     "input-dims", "attr", "drop-init"])
    if op.startswith("init") and g.initializer:
        t = rnd.choice(list(g.initializer))
        if op == "init-dims":
            t.dims[rnd.randrange(len(t.dims))] += rnd.choice([1, -1, 7]) if t.dims else 0
        elif op == "init-huge-dims":
            if t.dims:
                t.dims[0] = rnd.choice([2**31, 10**9, 0])
        elif op == "init-dtype":
            t.data_type = rnd.choice([onnx.TensorProto.INT8, onnx.TensorProto.STRING, onnx.TensorProto.DOUBLE,
                                      onnx.TensorProto.BOOL, 999])
        else:
            a = numpy_helper.to_array(t).astype(np.float32).copy()
            value = rnd.choice([np.nan, np.inf, 3e38])
            if a.size:
                a.reshape(-1)[rnd.randrange(a.size)] = value
            t.CopyFrom(numpy_helper.from_array(a, t.name))
            if np.isfinite(value):               # a legal float, however large: a valid model
                op = "initializer value 3e38"
        what = f"{op} on {t.name}"
    elif op == "op-type" and g.node:
        n = rnd.choice(list(g.node))
        n.op_type = rnd.choice(["Sin", "Conv", "Gemm", "MaxPool", "Relu", "Quant"])
        what = f"node {n.name} becomes {n.op_type}"
    elif op == "drop-node" and g.node:
        k = rnd.randrange(len(g.node))
        del g.node[k]
        what = f"node {k} removed"
    elif op == "drop-init" and g.initializer:
        k = rnd.randrange(len(g.initializer))
        del g.initializer[k]
        what = f"initializer {k} removed"
    elif op == "ir":
        m.ir_version = rnd.choice([0, 99, 3])
        what = f"ir_version {m.ir_version}"
    elif op == "input-dims":
        d = g.input[0].type.tensor_type.shape.dim
        if len(d) > 1:
            d[1].dim_value = rnd.choice([0, 10**9, 5])
        what = "input width changed"
    else:
        n = rnd.choice(list(g.node))
        if n.attribute:
            a = n.attribute[0]
            if a.type == onnx.AttributeProto.INT:
                a.i = rnd.choice([-1, 10**9, 2])
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = float("nan")
            elif a.type == onnx.AttributeProto.INTS and a.ints:
                a.ints[0] = rnd.choice([-3, 10**6, 0])
        what = f"an attribute of {n.op_type}"
    dst.write_bytes(m.SerializeToString())
    return what


def mutate_pt(src: Path, dst: Path, rnd: random.Random) -> str:
    import torch

    if rnd.random() < 0.2:
        return _truncate(src, dst, rnd)
    obj = torch.load(src, weights_only=True)
    op = rnd.choice(["format", "module-field", "module-type", "tensor", "tensor-drop", "modules-type", "meta"])
    if op == "format":
        obj["format"] = rnd.choice(["mamfpga.model/9", None, 3])
        what = f"format {obj['format']!r}"
    elif op in ("module-field", "module-type"):
        entries = [e for e in obj["modules"]]
        e = rnd.choice(entries)
        if op == "module-type":
            e["type"] = rnd.choice(["lstm", "", "conv3d", None])
            what = f"module type {e['type']!r}"
        else:
            keys = [k for k in e if k != "type"] or ["type"]
            k = rnd.choice(keys)
            e[k] = rnd.choice([10**9, -1, 0, "x", None, [1, 2, 3], 2.5])
            what = f"module {e.get('type')} {k} = {e[k]!r}"
    elif op in ("tensor", "tensor-drop") and obj["tensors"]:
        k = rnd.choice(sorted(obj["tensors"]))
        if op == "tensor-drop":
            del obj["tensors"][k]
            what = f"tensor {k} removed"
        else:
            v, how = _odd_value(rnd, obj["tensors"][k].numpy())
            if v.dtype.kind in "U":
                obj["tensors"][k] = "x"
            else:
                obj["tensors"][k] = torch.from_numpy(np.ascontiguousarray(v))
            what = f"tensor {k}: {how}"
    elif op == "modules-type":
        obj["modules"] = rnd.choice([None, "x", {}])
        what = f"modules = {obj['modules']!r}"
    else:
        obj["meta"] = rnd.choice([None, [], {"act_bits": 3, "act_ranges": [1.0, 2.0]}, {"act_bits": 3, "act_ranges": [float("nan")]}, {"weight_bits": 99},
                                  {"act_bits": "x"}])
        what = f"meta = {obj['meta']!r}"
    buf = io.BytesIO()
    torch.save(obj, buf)
    dst.write_bytes(buf.getvalue())
    return what


def mutate_build(src: Path, dst: Path, rnd: random.Random) -> str:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    target = rnd.choice(["manifest.json", "manifest.json", "manifest.json", "net.npz", "report.json"])
    path = dst / target
    if target == "net.npz":
        return "net.npz: " + mutate_npz(src / "net.npz", path, rnd)
    if rnd.random() < 0.2:
        return f"{target}: " + _truncate(src / target, path, rnd)
    obj = json.loads(path.read_text())
    key = rnd.choice(sorted(obj))
    sub = obj[key]
    if isinstance(sub, dict) and sub and rnd.random() < 0.6:
        k2 = rnd.choice(sorted(sub))
        sub[k2] = rnd.choice([None, -1, 10**12, "x", [], {}, 2.5, True])
        what = f"{target}: {key}.{k2} = {sub[k2]!r}"
    elif rnd.random() < 0.3:
        del obj[key]
        what = f"{target}: {key} removed"
    else:
        obj[key] = rnd.choice([None, -1, 10**12, "x", [], {}, 2.5, "mamfpga.build/9"])
        what = f"{target}: {key} = {obj[key]!r}"
    path.write_text(json.dumps(obj))
    return what


MUTATORS = {"npz": mutate_npz, "onnx": mutate_onnx, "pt": mutate_pt, "build": mutate_build}


# ----------------------------------------------------------------------------- one run

class _Hang(Exception):
    pass


def _alarm(_sig, _frame):
    raise _Hang()


def fuzz_one(kind: str, originals: dict, rnd: random.Random, work: Path) -> Outcome:
    """Mutate the original of ``kind`` once and run its verb on it."""
    src = originals["paths"][kind]
    work.mkdir(parents=True, exist_ok=True)
    dst = work / (src.name if kind == "build" else f"mutated{src.suffix}")
    if dst.is_file():
        dst.unlink()
    out = work / "out"
    for f in (out.with_suffix(".npy"), out.with_suffix(".npz")):
        if f.exists():
            f.unlink()
    try:
        what = MUTATORS[kind](src, dst, rnd)
    except Exception as exc:             # the mutation itself could not be written: nothing to test
        return Outcome(kind, f"(not written: {type(exc).__name__})", "same")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_S)
    try:
        rc, _o, err, result = run_verb(kind, dst, originals["folder"], out)
    except _Hang:
        return Outcome(kind, what, "hang", f"no answer within {HANG_S} s")
    except BaseException as exc:          # anything the CLI let through is a crash
        return Outcome(kind, what, "crash", "".join(traceback.format_exception(exc))[-1500:])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    written = [f for f in (out.with_suffix(".npy"), out.with_suffix(".npz")) if f.exists()]
    if rc == 2:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        if len(lines) != 1 or "Traceback" in err:
            return Outcome(kind, what, "message", err[-800:])
        if written:
            return Outcome(kind, what, "written", f"exit 2 but {written[0].name} written")
        return Outcome(kind, what, "rejected", lines[0])
    if rc == 0 and _same(result, originals["base"][kind]):
        return Outcome(kind, what, "same")
    if rc == 0 and kind == "onnx" and what.startswith(MAY_STAY_VALID):
        return Outcome(kind, what, "valid", "a different valid model")
    return Outcome(kind, what, "different", f"exit {rc}: {err.strip()[-500:]}")
