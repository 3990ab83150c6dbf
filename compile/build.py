"""A build folder: the compiled program's memory images and manifest, written and read back.

``BUILD/manifest.json`` records every compile option (format ``mamfpga.build/3``),
``net.npz`` the source network, ``pe{p}_weights.hex``/``pe{p}_bias.hex`` each
PE's memory images. :func:`load_build` compiles ``net.npz`` again with the
manifest's options (compilation is deterministic) and checks it against the
manifest. The Verilog of the accelerator is the hardware side's to write
(:func:`mamfpga.hw.emit.emit`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mamfpga.compile.arch import ArchConfig, bias_bits, high_word_bits, low_word_bits
from mamfpga.compile.device import DEVICES
from mamfpga.compile.ir import CompileError, Program
from mamfpga.compile.passes import compile_network
from mamfpga.outputs import atomic_write_json, atomic_write_text, claim_dir
from mamfpga.sw.qnet import load_qnet, save_qnet

__all__ = ["write_build", "load_build", "balance", "BUILD_FORMAT"]

BUILD_FORMAT = "mamfpga.build/3"


def write_build(program: Program, build: str | Path, *, board: str | None = None, top: str | None = None,
                choice: dict | None = None) -> Path:
    """BUILD/: manifest.json, net.npz (the source network) and per-PE memory images (.hex).
    The manifest records every compile option, so that :func:`load_build` rebuilds the
    same program; ``top`` names the Verilog top module the hardware side writes beside
    them (:func:`mamfpga.hw.emit.emit`); ``choice`` (how the configuration was chosen)
    goes in as is."""
    build = claim_dir(build, what="build folder")
    cfg = program.config
    save_qnet(program.source, build / "net.npz")
    ww, hw = -(-low_word_bits(cfg) // 4), -(-high_word_bits(cfg) // 4)
    bw = -(-bias_bits(cfg, program.scales) // 4)
    for p in range(cfg.pes):
        words, high, _ = program.weight_images(p)
        atomic_write_text(build / f"pe{p}_weights.hex", "".join(f"{w:0{ww}x}\n" for w in words))
        if cfg.low_bits:
            atomic_write_text(build / f"pe{p}_weights_high.hex", "".join(f"{w:0{hw}x}\n" for w in high))
        bias = [b for l in program.layers for b in l.bias[p]]
        atomic_write_text(build / f"pe{p}_bias.hex", "".join(f"{b:0{bw}x}\n" for b in bias))
    manifest = {
        "format": BUILD_FORMAT,
        "board": board,
        "top": top,
        "config": {"pes": cfg.pes, "lanes": cfg.lanes, "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits,
                   "acc_bits": cfg.acc_bits, "mult_bits": cfg.mult_bits, "low_bits": cfg.low_bits, "delta_bits": cfg.delta_bits,
                   "lane_copies": cfg.lane_copies, "tree_stages": cfg.tree_stages, "pack_rows": cfg.pack_rows,
                   "split": program.split,
                   "device": program.device.name if program.device else None},
        "choice": choice,
        "input_index": [int(i) for i in program.input_index],
        "output_address": [int(a) for a in program.output_address],
        "eliminated": program.eliminated,
        "layers": [l.manifest() for l in program.layers],
        "cycles_model": program.cycles_model,
        "cycles_bound": program.cycles_bound,
        "cycle_model_formula": "N_0 + sum_k (max_p words_{k,p} + layer_overhead [+ split_overhead]) "
                       "+ OUTPUT_CYCLES * M_last (mamfpga.compile.arch)",
        "memory": program.memory,
        "balance": balance(program),
    }
    atomic_write_json(build / "manifest.json", manifest)
    return build


def _read_manifest(path: Path) -> dict:
    """A build's manifest, its fields that :func:`load_build` reads checked (one line naming
    the first that is missing or of the wrong type)."""
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompileError(f"{path}: damaged manifest, not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise CompileError(f"{path}: damaged manifest, not a JSON object")
    if manifest.get("format") != BUILD_FORMAT:
        raise CompileError(f"{path}: build format {manifest.get('format')!r}, this mamfpga reads "
                           f"{BUILD_FORMAT!r}; compile the network again")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    c = manifest.get("config")
    if not isinstance(c, dict):
        raise CompileError(f"{path}: damaged manifest: config is {c!r}, not an object")
    for key in ("pes", "lanes", "acc_bits", "delta_bits"):
        if not is_int(c.get(key)):
            raise CompileError(f"{path}: damaged manifest: config.{key} is {c.get(key)!r}, not an integer")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(l, dict) for l in layers):
        raise CompileError(f"{path}: damaged manifest: layers is not a list of layer records")
    if not is_int(manifest.get("cycles_model")):
        raise CompileError(f"{path}: damaged manifest: cycles_model is {manifest.get('cycles_model')!r}, "
                           "not an integer")
    return manifest


def load_build(build: str | Path) -> Program:
    """The Program of a build folder: its net.npz compiled again with the manifest's
    configuration (compilation is deterministic), checked against the manifest."""
    build = Path(build)
    manifest_path = build / "manifest.json"
    if not manifest_path.is_file():
        raise CompileError(f"{build}: not a build folder (no manifest.json); run mamfpga compile first")
    manifest = _read_manifest(manifest_path)
    c = manifest["config"]
    try:
        cfg = ArchConfig(pes=c["pes"], lanes=c["lanes"], acc_bits=c["acc_bits"], delta_bits=c["delta_bits"],
                         lane_copies=c.get("lane_copies", False), tree_stages=c.get("tree_stages", 1),
                         pack_rows=c.get("pack_rows", False))
    except ValueError as exc:
        raise CompileError(f"{manifest_path}: config: {exc}") from None
    kinds = [l.get("kind") == "column-split" for l in manifest["layers"]]
    split = c.get("split", "auto")
    if split not in ("auto", "never", "always"):
        raise CompileError(f"{manifest_path}: config.split is {split!r}, not auto, never or always")
    dev = c.get("device")
    if dev is not None and dev not in DEVICES:
        raise CompileError(f"{manifest_path}: config.device is {dev!r}, not a known device ({', '.join(DEVICES)})")
    program = compile_network(load_qnet(build / "net.npz"), cfg, delta_bits=c["delta_bits"],
                              acc_bits=c["acc_bits"], split=split, device=DEVICES[dev] if dev else None)
    if [l.split for l in program.layers] != kinds or program.cycles_model != manifest["cycles_model"]:
        raise CompileError(f"{build}: net.npz no longer compiles to the manifest's program; compile again")
    return program


def balance(program: Program) -> dict:
    """max / mean nonzeros and words per PE, per layer and over the network."""
    out = {"layers": []}
    tot_nnz = np.zeros(program.config.pes)
    tot_words = np.zeros(program.config.pes)
    for l in program.layers:
        nnz = np.array(l.pe_nnz, dtype=float)
        words = np.array(l.pe_words, dtype=float)
        tot_nnz += nnz
        tot_words += words
        out["layers"].append({"nnz": _ratio(nnz), "words": _ratio(words)})
    out["nnz"] = _ratio(tot_nnz)
    out["words"] = _ratio(tot_words)
    return out


def _ratio(v: np.ndarray) -> float:
    return float(v.max() / v.mean()) if v.mean() > 0 else 1.0
