"""The pipeline: one function per arrow of the data flow, typed in and out.

    data set --train--> model --prune--> model (.pt)             (and evaluate, sweep)
    model (.pt/.onnx) --quantize--> QuantNetwork --compile_for--> Program --emit--> build folder
    build --cosimulate--> SimFigures      build --synthesize--> SynthFigures (a bitstream)
    build --run_on_board--> BoardRunFigures

The CLI verbs, the demo, ``sweep-hw`` and the bench scripts call these and
nothing else of the pipeline. A stage that works on a build folder writes its
section of the folder's report (:mod:`mamfpga.report`): :func:`emit` starts the
report with the compile section; :func:`cosimulate`, :func:`synthesize` and
:func:`run_on_board` add theirs. Errors are :class:`mamfpga.errors.MamfpgaError`
subclasses, with the exit code each maps to.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mamfpga.boards import fit
from mamfpga.boards.fit import LOGIC_MARGIN, NoFitError
from mamfpga.boards import flow as board_flow
from mamfpga.boards import run as board_run
from mamfpga.boards.targets import Board, board as board_by_name
from mamfpga.compile import ArchConfig, MemoryFitError, Program, compile_network, load_build, supported
from mamfpga.compile.device import DEVICES
from mamfpga.compile.arch import not_powers_of_two
from mamfpga.errors import UsageError
from mamfpga.outputs import PLOTS_HINT, atomic_write_text, replaced_whole, staged_dir
from mamfpga.hw import emit as hw_emit
from mamfpga.hw.emit import TOP_NAME
from mamfpga.report import CompileFigures, PlacedSimFigures, Report, ReportError, SimFigures, SynthFigures
from mamfpga.sim import cosim
from mamfpga.sw import golden
from mamfpga.sw import data as data_mod
from mamfpga.sw.data import holdout
from mamfpga.sw import experiments
from mamfpga.sw.experiments import pruning_batches
from mamfpga.sw.flops import flops
from mamfpga.sw.mam import WEIGHTED_TYPES, is_mam
from mamfpga.sw.mam import to_mac as mam_to_mac
from mamfpga.sw.mam import to_mam as to_mam_layers
from mamfpga.sw.modelio import load_model as _load_model_file
from mamfpga.sw.modelio import save_model
from mamfpga.sw.network import ModelFormatError, Network, from_torch, to_torch
from mamfpga.sw.onnx_io import import_onnx, read_onnx
from mamfpga.sw import qonnx_io
from mamfpga.sw.prune import (METHODS, STRUCTURED, iterative_prune, layer_sparsity, prunable_layers, prune_model,
                              units_removed)
from mamfpga.sw.prune import sparsity as sparsity_of
from mamfpga.sw.qnet import QuantNetwork, load_qnet, save_qnet
from mamfpga.sw.quantize import quantize as quantize_network
from mamfpga.sw.simplify import SimplifyReport
from mamfpga.sw.simplify import simplify as simplify_network
from mamfpga.sw.train import (DEFAULT_HIDDEN, ActQuant, TrainConfig, accuracy, act_quant_of, build_mlp, build_model,
                              snap_weights)
from mamfpga.sw.train import fit as fit_model
from mamfpga.sw.train import EPOCH_FIELDS
from mamfpga.sw.train import finetune as finetune_model

__all__ = ["load_dataset", "load_model", "save_model", "Trained", "train", "Pruned", "prune", "evaluate", "Swept",
           "sweep", "Quantized", "load_float_network", "quantize", "accuracy_float_int8", "load_qnet", "save_qnet",
           "Compiled", "compile_for", "emit", "load", "cosimulate", "synthesize", "build_for_board", "run_on_board",
           "get_board",
           "Report", "TOP_NAME", "LOGIC_MARGIN", "NoFitError", "VAL_FRACTION", "write_epochs", "read_epochs",
           "epochs_path"]


def get_board(name: str) -> Board:
    """The board called ``name``, or a :class:`UsageError` listing the known ones."""
    try:
        return board_by_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# --------------------------------------------------------------------------- software: train, prune, evaluate

#: the fraction of a training set ``train`` and ``prune`` hold out as a validation split (its
#: accuracy in the per-epoch log, the budget of ``prune --max-drop``; never the test set)
VAL_FRACTION = 0.1


def load_dataset(name: str) -> data_mod.Dataset:
    """A built-in data set by name (digits, mnist5k) or the user's DATA.npz by path; a
    :class:`~mamfpga.sw.data.DataError` (exit 2) names what is wrong."""
    return data_mod.load(name)


def _check_method(method: str) -> None:

    if method not in METHODS and method not in STRUCTURED:
        raise UsageError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)} (weights) or "
                         f"{', '.join(STRUCTURED)} (whole neurons and channels)")


@dataclass
class Trained:
    model: nn.Sequential
    meta: dict                          # what save_model stores beside it
    accuracy: float
    history: list = field(default_factory=list)     # the per-epoch log (mamfpga.sw.train.EPOCH_FIELDS)


def check_weight_bits(bits: int | None, option: str = "--weight-bits") -> None:
    """--weight-bits (or --act-bits): None, or 2 to 8 (UsageError, one line, otherwise)."""
    if bits is not None and not 2 <= bits <= 8:
        raise UsageError(f"{option} must be between 2 and 8, not {bits}")


def load_model(path) -> tuple[nn.Sequential, dict]:
    """A model file and its metadata; a model trained with quantized activations
    (``act_bits`` and its trained ``act_ranges``) computes with them again."""
    model, meta = _load_model_file(path)
    if meta.get("act_bits") is not None:
        _act_quant(model, meta, path)
    return model, meta


def _act_quant(model, meta: dict, where) -> None:
    try:
        ranges = [float(r) for r in meta["act_ranges"]]
        if not all(math.isfinite(r) and r > 0 for r in ranges):
            raise ValueError(f"activation ranges {ranges} must be positive numbers")
        ActQuant(model, int(meta["act_bits"]), ranges)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{where}: the activation quantization in its metadata does not fit the model "
                               f"({exc})") from None


def _act_meta(model) -> dict:
    """The metadata of a model's quantized activations (none without them)."""
    aq = act_quant_of(model)
    return {"act_bits": aq.bits, "act_ranges": [float(r or 0.0) for r in aq.ranges]} if aq is not None else {}


def train(ds: data_mod.Dataset, *, mode: str = "mam", hidden=None, arch: str | None = None,
          schedule: str | None = None, per: str | None = None, vc_epochs: int | None = None,
          epochs: int | None = None, lr: float | None = None, batch: int | None = None,
          weight_decay: float = 1e-4, prune_at: int | None = None, method: str = "gmp", sparsity: float = 0.99,
          seed: int = 0, weight_bits: int | None = None, act_bits: int | None = None, progress: bool = True,
          val: float = VAL_FRACTION, init: tuple[nn.Module, dict, str] | None = None,
          layers: list[str] | None = None, epoch_log: bool = True, log=print) -> Trained:
    """A network trained on ``ds``: an MLP of ``hidden`` sizes, or the layers of ``arch``
    (:func:`~mamfpga.sw.train.parse_arch`: convolutions, pooling, fc), the classifier appended;
    MAM conv and hidden layers with vanishing contributions (beta to 0 over ``vc_epochs``), or
    MAC; with ``prune_at``, pruned by ``method`` after that epoch (0: at initialisation). The
    fraction ``val`` of the training set is held out as a validation split: its accuracy, the
    training set's, the loss, beta and the sparsity, epoch by epoch, are the returned history
    (without ``epoch_log``, the loss, beta and sparsity only: no pass over the data to measure).

    ``init`` (model, metadata, where from): start from that trained network instead, its
    weights copied; with ``mode`` "mam" its ``layers`` (default: every hidden linear and conv
    layer) become MAM with vanishing contributions (beta 1 -> 0), the seeds' MAC -> MAM."""
    if prune_at is not None:
        _check_method(method)
        if prune_at < 0:
            raise UsageError(f"--prune-at is an epoch, 0 (at initialisation) or later, not {prune_at}")
    given = {"schedule": schedule, "per": per, "vc_epochs": vc_epochs, "epochs": epochs, "lr": lr, "batch": batch}
    check_weight_bits(weight_bits)
    check_weight_bits(act_bits, "--act-bits")
    cfg = TrainConfig(weight_decay=weight_decay, seed=seed, weight_bits=weight_bits, act_bits=act_bits,
                      **{k: v for k, v in given.items() if v is not None})
    if arch is not None and hidden is not None:
        raise UsageError("give --arch or --hidden, not both (--hidden 256,256 is --arch fc256,fc256)")
    if layers is not None and init is None:
        raise UsageError("--layers names the layers of --init to turn into MAM; it needs --init")
    if init is not None:
        if arch is not None or hidden is not None:
            raise UsageError("--init brings its own network; --arch and --hidden do not go with it")
        model, init_meta, where = copy.deepcopy(init[0]), init[1], init[2]
        try:
            with torch.no_grad():
                out = model.eval()(torch.zeros((1, ds.features)))
        except (RuntimeError, ValueError) as exc:
            raise UsageError(f"{where} does not take the {ds.name} data ({ds.features} features): {exc}") from None
        if out.shape[-1] != ds.classes:
            raise UsageError(f"{where} has {out.shape[-1]} outputs; {ds.name} has {ds.classes} classes")
        if mode == "mam":
            try:
                to_mam_layers(model, layers, beta=1.0)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        elif layers is not None:
            raise UsageError("--layers chooses the layers --mode mam turns into MAM; with --mode mac there are none")
        arch, hidden = init_meta.get("arch"), init_meta.get("hidden")
        what = f"network from {where}" + (f" ({', '.join(n for n, m in model.named_modules() if is_mam(m))} "
                                          "now MAM)" if mode == "mam" else "")
    elif arch is None:
        hidden = tuple(hidden or DEFAULT_HIDDEN)
        model = build_mlp(ds.features, ds.classes, hidden, mode=mode, seed=seed)
        what = f"MLP {ds.features}-{'-'.join(map(str, hidden))}-{ds.classes}"
    else:
        model = build_model(arch, ds.sample_shape, ds.classes, mode=mode, seed=seed)
        what = f"network {'x'.join(map(str, ds.sample_shape))} -> {arch} -> fc{ds.classes}"
    targets = [n for n, m in model.named_modules() if is_mam(m)] or None
    fit_ds, val_split = holdout(ds, val, seed)
    pset = pruning_batches(fit_ds) if prune_at is not None else None

    def prune_fn(m):
        prune_model(m, method, sparsity, data=pset, seed=seed)
    log(f"training a {mode.upper()} {what} on {ds.name} "
        f"({len(fit_ds.y_train)} train + {len(ds.y_train) - len(fit_ds.y_train)} validation / {len(ds.y_test)} test), "
        f"{cfg.epochs} epochs"
        + (f", beta {cfg.schedule} over {cfg.vc_epochs} epochs" if mode == "mam" else "")
        + (f", {weight_bits}-bit weights (quantization-aware)" if weight_bits else "")
        + (f", {act_bits}-bit activations (quantization-aware)" if act_bits else ""))
    history = fit_model(model, fit_ds, cfg, progress=progress, prune_at=prune_at,
                        prune_fn=prune_fn if pset else None, val=val_split, evaluate=epoch_log)
    acc = accuracy(model, ds.x_test, ds.y_test)
    meta = {"dataset": ds.name, "mode": mode, "train": vars(cfg), "accuracy": acc}
    if arch is not None:
        meta["arch"] = arch
    elif hidden is not None:
        meta["hidden"] = list(hidden)
    if init is not None:
        meta["init"] = init[2]
    if weight_bits is not None:
        meta["weight_bits"] = weight_bits
    meta.update(_act_meta(model))
    if targets:
        meta["pruned_layers"] = targets
    if prune_at is not None:
        meta["pruning"] = {"method": method, "sparsity": sparsity, "at_epoch": prune_at}
    meta["val"] = val
    return Trained(model, meta, acc, history)


def epochs_path(model_path) -> Path:
    """Where the per-epoch log of a model file goes: beside it, ``NAME.epochs.csv``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".epochs.csv")


def write_epochs(history: list[dict], path) -> Path:
    """The per-epoch log as CSV (:data:`~mamfpga.sw.train.EPOCH_FIELDS`; an empty cell where a
    figure was not measured), written atomically."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(EPOCH_FIELDS), lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                    for k in EPOCH_FIELDS})
    return atomic_write_text(path, buf.getvalue())


def read_epochs(path) -> list[dict]:
    """A per-epoch log written by :func:`write_epochs`; a file that is not one is refused in
    one line (exit 2), naming the file and what is wrong."""
    import csv

    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or set(reader.fieldnames) != set(EPOCH_FIELDS):
                raise ValueError(f"its columns are {reader.fieldnames}, not {', '.join(EPOCH_FIELDS)}")
            rows = []
            for n, row in enumerate(reader, start=2):
                try:
                    rows.append({"phase": row["phase"], "epoch": int(row["epoch"]),
                                 **{k: (float(row[k]) if row[k] != "" else None)
                                    for k in ("loss", "train_acc", "val_acc", "beta", "sparsity")}})
                except (TypeError, ValueError):
                    raise ValueError(f"line {n} is not numbers where numbers belong: {row}") from None
                if rows[-1]["beta"] is None or rows[-1]["sparsity"] is None:
                    raise ValueError(f"line {n} has no beta or sparsity")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, csv.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a per-epoch log of mamfpga train/prune ({exc})") from None
    if not rows:
        raise UsageError(f"{path}: a per-epoch log with no epochs")
    return rows


def _targets(model, names) -> list[str]:

    try:
        return [n for n, _ in prunable_layers(model, names)]
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@dataclass
class Pruned:
    model: nn.Sequential
    meta: dict
    accuracy: float
    history: list = field(default_factory=list)     # fine-tuning's per-epoch log
    search: list = field(default_factory=list)      # --max-drop: each sparsity tried and its validation accuracy


#: the sparsities ``prune --max-drop`` tries first, in order, before it bisects (on kept = 1 - s)
MAX_DROP_STEPS = (0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999)


def prune(model: nn.Sequential, meta: dict, ds: data_mod.Dataset, *, method: str, sparsity: float | None = None,
          layers: list[str] | None = None, rounds: int = 1, finetune: int = 0, patience: int | None = None,
          to_mac: bool = False, simplify: bool = False, seed: int = 0, progress: bool = True,
          val: float = VAL_FRACTION, max_drop: float | None = None, bisect: int = 4, log=print) -> Pruned:
    """``model`` (in place) pruned to ``sparsity`` over ``layers`` (default: those the model's
    metadata names, else its MAM layers), one-shot or in ``rounds``; optionally reverted
    MAM -> MAC, fine-tuned (on the training set less the validation split ``val``), and
    simplified (dead neurons and unread inputs removed).

    With ``max_drop`` instead of ``sparsity``: the highest sparsity whose (fine-tuned) accuracy on
    the validation split stays within ``max_drop`` of the unpruned model's there -- the
    :data:`MAX_DROP_STEPS` in turn up to the first that fails, then ``bisect`` halvings of the
    kept fraction between the last that held and it; every try is in ``search``."""
    _check_method(method)
    if (sparsity is None) == (max_drop is None):
        raise UsageError("give --sparsity or --max-drop (the accuracy budget), one of them")
    if max_drop is not None and not 0 <= max_drop < 1:
        raise UsageError(f"--max-drop is an accuracy drop in [0, 1), not {max_drop}")
    if max_drop is not None and rounds > 1:
        raise UsageError("--max-drop searches one-shot pruning (with --finetune); --rounds does not go with it")
    targets = _targets(model, layers or meta.get("pruned_layers"))
    fit_ds, val_split = holdout(ds, val, seed)
    if max_drop is not None and val_split is None:
        raise UsageError("--max-drop needs a validation split (--val above 0): it never looks at the test set")
    pset = pruning_batches(fit_ds)
    bits = meta.get("weight_bits")              # a quantization-aware model stays on its grid
    history: list[dict] = []
    search: list[dict] = []

    def one_shot(m, s: float, log_to: list):
        try:
            prune_model(m, method, s, layers=targets, data=pset, seed=seed)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if to_mac:
            mam_to_mac(m)
        if finetune:
            finetune_model(m, fit_ds, epochs=finetune, patience=patience, progress=progress, weight_bits=bits,
                           history=log_to, val=val_split)
        elif bits is not None:
            snap_weights(m, bits)

    before = accuracy(model, ds.x_test, ds.y_test)
    if max_drop is not None:
        base = accuracy(model, *val_split)
        floor = base - max_drop
        log(f"searching the highest {method} sparsity whose{f' {finetune}-epoch fine-tuned' if finetune else ''} "
            f"validation accuracy stays >= {floor:.4f} (unpruned {base:.4f} - {max_drop:g}) on "
            f"{len(val_split[1])} held-out training samples")
        best = None

        def attempt(s: float) -> bool:
            nonlocal best
            trial, log_to = copy.deepcopy(model), []
            one_shot(trial, s, log_to)
            acc = accuracy(trial, *val_split)
            ok = acc >= floor
            search.append({"sparsity": s, "val_acc": acc, "within": ok})
            log(f"  sparsity {s:.4f}: validation accuracy {acc:.4f} {'within' if ok else 'outside'} the budget")
            if ok and (best is None or s > best[0]):
                best = (s, trial, log_to)
            return ok

        lo, hi = 0.0, None
        for s in MAX_DROP_STEPS:
            if attempt(s):
                lo = s
            else:
                hi = s
                break
        if hi is not None:
            for _ in range(bisect):            # halve the kept fraction's interval (geometrically)
                mid = 1.0 - math.sqrt((1.0 - lo) * (1.0 - hi))
                if attempt(mid):
                    lo = mid
                else:
                    hi = mid
        if best is None:
            raise UsageError(f"no sparsity tried keeps the validation accuracy within {max_drop:g} of {base:.4f} "
                             f"(at {MAX_DROP_STEPS[0]:g}: {search[0]['val_acc']:.4f}); try a larger --max-drop or "
                             "--finetune")
        sparsity, model, history = best
        log(f"chose sparsity {sparsity:.4f} ({len(search)} tried)")
    else:
        if not 0.0 <= sparsity < 1.0:
            raise UsageError(f"--sparsity is the fraction of weights removed, in [0, 1), not {sparsity}")
        if rounds > 1:
            try:
                iterative_prune(model, method, sparsity, rounds=rounds, layers=targets, data=pset, seed=seed,
                                log=log, finetune=lambda r: finetune_model(
                                    model, fit_ds, epochs=max(finetune, 1), patience=patience, progress=progress,
                                    weight_bits=bits, history=history, val=val_split))
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            if to_mac:
                mam_to_mac(model)
        else:
            one_shot(model, sparsity, history)
    units = units_removed(model, targets)
    log(f"{method}: sparsity {sparsity_of(model, targets):.4f} over {', '.join(targets)}"
        + (f" ({', '.join(f'{n}: {r} of {u} units removed' for n, (r, u) in units.items())})"
           if method in STRUCTURED else "") + "; "
        f"test accuracy {before:.4f} -> {accuracy(model, ds.x_test, ds.y_test):.4f}"
        + (" (MAM -> MAC, keeping the sparse weights)" if to_mac else "")
        + (f", fine-tuned {finetune} epochs{f' ({bits}-bit weights)' if bits else ''}" if finetune else ""))
    acc = accuracy(model, ds.x_test, ds.y_test)
    act = _act_meta(model)                    # fine-tuning moved the activation ranges on
    if simplify:
        net, report = simplify_network(from_torch(model))
        model = to_torch(net)
        if act:
            _act_quant(model, act, "the simplified model")
        log(f"simplified: {report.summary()}")
        targets = None
    meta = {**meta, **act, "accuracy": acc, "pruned_layers": targets,
            "pruning": {"method": method, "sparsity": sparsity, "finetune": finetune, "rounds": rounds,
                        "to_mac": to_mac, "simplified": simplify, "val": val,
                        **({"max_drop": max_drop, "search": search} if max_drop is not None else {})}}
    if targets is None:
        meta.pop("pruned_layers")
    return Pruned(model, meta, acc, history, search)


def evaluate(model: nn.Sequential, meta: dict, ds: data_mod.Dataset) -> dict:
    """Test accuracy, sparsity over the pruned layers, each weighted layer's mode and sparsity,
    and the FLOPs of one inference (:func:`mamfpga.sw.flops.flops`)."""
    try:
        acc = accuracy(model, ds.x_test, ds.y_test)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"the model does not fit the {ds.name} data ({ds.features} features): {exc}") from None
    targets = _targets(model, meta.get("pruned_layers") if ("pruned_layers" in meta or meta.get("mode")) else None)
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, WEIGHTED_TYPES):
            mode = ("mac" if not is_mam(m) else "mam" if m.beta == 0.0 else f"blend(beta={m.beta:g})")
            layers.append({"name": name, "mode": mode, "sparsity": layer_sparsity(m), "pruned": name in targets})
    return {"accuracy": acc, "sparsity": sparsity_of(model, targets), "targets": targets, "layers": layers,
            "flops": flops(model, (ds.features,))}


@dataclass
class Swept:
    rows: list
    table: list[str]                    # one line per (network, method, kept): one-shot, fine-tuned, mam->mac
    csv: Path
    plot: Path | str                    # the plot, or why there is none


def sweep(ds: data_mod.Dataset, out: Path, *, models: dict | None = None, methods: list[str] | None = None,
          kept=None, finetune: int = 10, hidden=None, arch: str | None = None, epochs: int | None = None,
          vc_epochs: int | None = None, weight_decay: float = 1e-4, progress: bool = True) -> Swept:
    """Accuracy against the fraction kept, MAC against MAM, every pruning method, and MAM -> MAC;
    ``out``/sweep.csv and sweep.png. The networks: ``models``, else trained (an MLP of ``hidden``,
    or ``arch``)."""
    if arch is not None and hidden is not None:
        raise UsageError("give --arch or --hidden, not both")
    methods = methods or list(METHODS)
    for m in methods:
        parts = experiments.method_parts(m)
        if len(parts) == 2 and not (parts[0] in STRUCTURED and parts[1] in METHODS):
            raise UsageError(f"a combined method is STRUCTURED+UNSTRUCTURED (ll2n+gmp), not {m!r}")
        if len(parts) > 2:
            raise UsageError(f"a combined method has two parts (ll2n+gmp), not {m!r}")
        for part in parts:
            _check_method(part)
    given = {"epochs": epochs, "vc_epochs": vc_epochs}
    cfg = TrainConfig(weight_decay=weight_decay, **{k: v for k, v in given.items() if v is not None})
    rows = experiments.sweep(ds, models=models, methods=methods, kept=kept or experiments.DEFAULT_KEPT,
                             finetune_epochs=finetune, train_cfg=cfg, hidden=hidden, arch=arch, progress=progress)
    by: dict = {}
    left: dict = {}
    for r in rows:
        by.setdefault((r.network, r.method, r.kept), {})[r.stage] = r.accuracy
        left[(r.network, r.method, r.kept)] = (r.weights_kept, r.units_kept)
    table = [f"{'network':<8}{'method':<10}{'kept':>8}{'weights':>9}{'units':>7}  {'one-shot':>9}{'fine-tuned':>11}"
             f"{'mam->mac':>10}"]
    for (net, method, k), st in by.items():
        cells = "".join(f"{st[s]:>{w}.4f}" if s in st else " " * w
                        for s, w in (("one-shot", 9), ("fine-tuned", 11), ("mam->mac", 10)))
        w_left, u_left = left[(net, method, k)]
        table.append(f"{net:<8}{method:<10}{k:>8g}{w_left:>9.4f}{u_left:>7.3f}  {cells}")
    return Swept(rows, table, experiments.write_csv(rows, out / "sweep.csv"),
                 experiments.plot(rows, out / "sweep.png", title=ds.name) or f"no sweep.png ({PLOTS_HINT})")


def sweep_early(ds: data_mod.Dataset, out: Path, *, kept: float = 0.01, method: str = "gmp", finetune: int = 10,
                hidden=None, arch: str | None = None, epochs: int | None = None, vc_epochs: int | None = None,
                weight_decay: float = 1e-4, progress: bool = True, log=print) -> Swept:
    """Pruning before convergence (:func:`mamfpga.sw.experiments.early_sweep`): ``out``/early.csv
    and early.png, and the table."""
    if arch is not None and hidden is not None:
        raise UsageError("give --arch or --hidden, not both")
    _check_method(method)
    if not 0 < kept < 1:
        raise UsageError(f"--kept for --early is one fraction in (0, 1), not {kept}")
    given = {"epochs": epochs, "vc_epochs": vc_epochs}
    cfg = TrainConfig(weight_decay=weight_decay, **{k: v for k, v in given.items() if v is not None})
    try:
        rows = experiments.early_sweep(ds, hidden=hidden, arch=arch, train_cfg=cfg, kept=kept, method=method,
                                       finetune_epochs=finetune, log=log, progress=progress)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    table = [f"{'schedule':<10}{'pruned after':>13}{'after beta=0':>13}  {'network':<11}{'accuracy':>9}"
             f"{'train GFLOPs':>13}{'saved':>8}"]
    for r in sorted(rows, key=lambda r: (r.schedule, r.mac_back, r.pruned_after)):
        table.append(f"{r.schedule:<10}{r.pruned_after:>13}{'converged' if r.after_beta0 is None else r.after_beta0:>13}"
                     f"  {'MAM -> MAC' if r.mac_back else 'MAM':<11}{r.accuracy:>9.4f}{r.train_flops / 1e9:>13.2f}"
                     f"{r.saved:>8.1%}")
    return Swept(rows, table, experiments.write_csv(rows, out / "early.csv"),
                 experiments.plot_early(rows, out / "early.png", title=ds.name) or f"no early.png ({PLOTS_HINT})")


# --------------------------------------------------------------------------- quantize

@dataclass
class Quantized:
    qnet: QuantNetwork
    float_net: Network                 # the float network quantized (after simplification)
    simplified: SimplifyReport | None  # None: not simplified


def load_float_network(path: Path, log=print) -> tuple[Network, dict | None]:
    """The float network of a .pt (mamfpga model: with its metadata) or an .onnx file."""
    if Path(path).suffix.lower() == ".onnx":
        return import_onnx(path, log=log), None
    model, meta = load_model(path)
    return from_torch(model), meta


def is_qonnx_file(path: Path) -> bool:
    """Whether ``path`` is an ONNX model that carries its own quantization (QONNX Quant nodes)."""
    if Path(path).suffix.lower() != ".onnx" or not Path(path).is_file():
        return False
    try:
        return qonnx_io.is_qonnx(read_onnx(path))
    except ModelFormatError:  # not readable: import_onnx names the problem
        return False


def import_quantized(path: Path, mult_bits: int | None = None) -> tuple[QuantNetwork, qonnx_io.ImportReport]:
    """The QuantNetwork a QONNX model's own scales define (no calibration), and how exactly
    its mult/shift reproduce them; ``mult_bits`` 16-24 (default 24, exact to float32)."""
    return qonnx_io.import_qonnx(path, qonnx_io.MULT_BITS_IMPORT if mult_bits is None else mult_bits)


def accuracy_float_int8(q: Quantized, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Class accuracy on (x, y) of the float network quantized and of its int8 QuantNetwork."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return (float((q.float_net.forward(x).argmax(1) == y).mean()),
            float((golden.classify(golden.run(q.qnet, x)) == y).mean()))


def quantize(net: Network, calib: np.ndarray, *, simplify_first: bool = True,
             weight_bits: int | None = None, act_bits: int | None = None,
             act_ranges: list[float] | None = None) -> Quantized:
    """int8 QuantNetwork of ``net``, calibrated on ``calib`` (after integer-exact
    simplification, unless ``simplify_first`` is False); a model trained with ``weight_bits``
    keeps its trained per-row scales (its weights become those bits)."""
    report = None
    if simplify_first:
        net, report = simplify_network(net)
    return Quantized(quantize_network(net, calib, weight_bits=weight_bits, act_bits=act_bits, act_ranges=act_ranges),
                     net, report)


# --------------------------------------------------------------------------- compile

@dataclass
class Compiled:
    program: Program
    choice: fit.Choice | None          # how the configuration was chosen (None: it was given)


def compile_for(qnet: QuantNetwork, *, pes: int | None = None, lanes: int | None = None, board: str | None = None,
                acc_bits: int | None = None, delta_bits: int | None = None, split: str | None = None,
                log=None, lane_copies: bool | None = None, pack_rows: bool | None = None) -> Compiled:
    """The network compiled: for a board without ``pes`` and ``lanes``, the fastest
    configuration that fits it (:func:`mamfpga.boards.fit.choose`); otherwise the one given
    (P=4, L=2 by default), its block RAMs checked against the board's device if there is one.
    ``lane_copies``: the activations copied per lane (True) or banked across the lanes (False);
    None: the board flow tries both, banked without a board. ``pack_rows``: rows share words
    (True) or not (False); None: as the board flow's default for the board's device family
    (:data:`mamfpga.boards.fit.DEFAULT_PACKS`: both on an ECP5, own words on an iCE40), own words
    without a board."""
    for name, v in (("pes", pes), ("lanes", lanes)):
        if v is not None and not_powers_of_two([v]):
            raise UsageError(f"--{name} must be a power of two for the generated accelerator, not {v}")
    qnet = supported(qnet)          # the accelerator's layer kinds, before any board figure
    brd = get_board(board) if board is not None else None
    if brd is not None:
        problem = fit.lower_bound_problem(qnet, fit.device_of(brd))
        if problem:
            raise fit.NoFitError(f"does not fit the {brd.name}: {problem}")
        if pes is None or lanes is None:
            choice = fit.choose(qnet, brd, pes=[pes] if pes else None, lanes=[lanes] if lanes else None,
                                splits=[split] if split else None, acc_bits=acc_bits, delta_bits=delta_bits,
                                log=log or (lambda _m: None),
                                copies=None if lane_copies is None else [lane_copies],
                                packs=None if pack_rows is None else [pack_rows])
            return Compiled(choice.program, choice)
    cfg = ArchConfig(pes=pes or 4, lanes=lanes or 2, acc_bits=acc_bits or 32, lane_copies=bool(lane_copies),
                     pack_rows=bool(pack_rows))
    device = DEVICES[brd.device] if brd is not None else None
    try:
        return Compiled(compile_network(qnet, cfg, device=device, delta_bits=delta_bits, acc_bits=acc_bits,
                                        split=split or "auto"), None)
    except MemoryFitError as exc:
        raise MemoryFitError(f"{brd.name}: {exc}") from None


# --------------------------------------------------------------------------- emit / load

def emit(compiled: Compiled | Program, build: str | Path, *, board: str | None = None) -> Path:
    """BUILD/: memory images, manifest, ``accelerator.v``, and a report with its compile section."""
    if isinstance(compiled, Program):
        compiled = Compiled(compiled, None)
    choice = compiled.choice.record() if compiled.choice else None
    device = DEVICES[board_by_name(board).device].name if board else None
    # staged: Ctrl-C or an error part way leaves no half-written build folder (nor a half-updated one)
    with staged_dir(build, what="build folder", stale=r"pe\d+_.*\.hex") as tmp:
        hw_emit.emit(compiled.program, tmp, board=board, choice=choice)
        Report(board, device, CompileFigures.of(compiled.program, choice)).save(tmp)
    return Path(build)


def load(build: str | Path) -> tuple[Program, Report]:
    """A build folder's program (compiled again from its net.npz and manifest) and report."""
    build = Path(build)
    if not (build / "manifest.json").is_file():
        raise UsageError(f"{build}: not a build folder (no manifest.json); run mamfpga compile first")
    program = load_build(build)
    report = Report.load(build)
    figures = CompileFigures.of(program, report.compile.choice if report.compile else None)
    if report.compile is None:          # a build written by the compiler alone
        report.compile = figures
    elif report.compile != figures:     # the record and the build disagree: damaged or edited
        raise ReportError(f"{build / 'report.json'}: its compile figures are not the build's (compile again)")
    return program, report


# --------------------------------------------------------------------------- simulate

def cosimulate(program: Program, build: str | Path, x: np.ndarray, *, simulator: str = "verilator",
               waves: bool = False) -> cosim.CosimResult:
    """``x`` through the build's RTL on ``simulator``, against the golden model; the report's
    sim section."""
    res = cosim.cosimulate(program, build, x, simulator=simulator, waves=waves)
    report = Report.load(build)
    report.sim = SimFigures.of(res)
    report.save(build)
    return res


# --------------------------------------------------------------------------- board

def synthesize(build: str | Path, board_name: str, *, bitstream: bool = False, clock_mhz: float | None = None,
               baud: int = board_flow.DEFAULT_BAUD, seed: int = 1, seeds: int = board_flow.SEEDS_PER_CLOCK,
               retries: int = 3, log=print) -> SynthFigures:
    """The board top of ``build`` through yosys and nextpnr (a bitstream when asked and timing
    is met); the report's synth section."""
    brd = get_board(board_name)
    if clock_mhz is not None and clock_mhz <= 0:
        raise UsageError(f"--clock must be a positive frequency in MHz, not {clock_mhz}")
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, not {seeds}")
    # the board folder is written anew; Ctrl-C or an error part way puts the earlier one back,
    # so the report never names a bitstream that is gone
    with replaced_whole(board_flow.board_dir(Path(build), brd)):
        try:
            syn = board_flow.synth_board(Path(build), brd, bitstream=bitstream,
                                         clock_hz=clock_mhz * 1e6 if clock_mhz else None, baud=baud, seed=seed,
                                         seeds=seeds, retries=retries, log=log)
        except ValueError as exc:           # a baud rate the clock cannot make, a PLL out of range
            raise UsageError(str(exc)) from None
        report = Report.load(build)
        report.board, report.device, report.synth = brd.name, syn.device, syn
        report.save(build)
    return syn


def simulate_placed(program: Program, build: str | Path, board_name: str, x: np.ndarray) -> tuple:
    """``x`` through the placed and routed design of ``build`` for ``board_name`` (the netlist the
    bitstream was packed from, :mod:`mamfpga.boards.placed`), behind its UART as the host speaks
    to the board, against the golden model; the report's placed_sim section. Returns the
    figures and the :class:`~mamfpga.sim.cosim.HostLinkResult`."""
    import time

    from mamfpga.boards import hostlink, placed
    from mamfpga.boards.clocking import por_cycles
    from mamfpga.boards.top import frame_timeout_cycles

    build = Path(build)
    brd = get_board(board_name)
    report = Report.load(build)
    syn = report.synth
    if syn is None or syn.board != brd.name or not syn.bitstream:
        raise UsageError(f"{build}: no bitstream for the {brd.name} in its report; build it first "
                         f"(mamfpga synth {build} --board {brd.name} --bitstream)")
    f_clk, divisor = syn.clock["mhz"] * 1e6, int(syn.host_link["divisor"])
    bdir = board_flow.board_dir(build, brd)
    t0 = time.monotonic()
    try:
        model = placed.placed_model(bdir, brd.family, clock_port=f"{brd.make_platform().default_clk}_0__io",
                                    work=bdir / "placed_sim")
    except placed.PlacedError as exc:
        raise UsageError(str(exc)) from None
    res = cosim.cosimulate_hostlink(program, x, bdir / "placed_sim", divisor=divisor,
                                    frame_timeout=frame_timeout_cycles(f_clk, divisor), placed=model,
                                    startup_cycles=por_cycles(f_clk) + 64, show=len(x) > 1)
    problems = []
    try:
        info = hostlink.decode_info(res.info)
        build_id = f"{info.build_id:08x}"
        if build_id != syn.host_link["build_id"] or (info.n_in, info.n_out) != (program.net.input_size,
                                                                                program.net.output_size):
            problems.append(f"'?' answered build {build_id}, {info.n_in} inputs, {info.n_out} outputs; the report "
                            f"says build {syn.host_link['build_id']}")
    except hostlink.HostLinkError as exc:
        build_id = "none"
        problems.append(str(exc))
    for what, got, want in (("stray bytes while idle", res.stray_answer, b""),
                            ("a frame cut short", res.cut_answer, b""),
                            ("a request with a wrong CRC", res.bad_crc_answer, hostlink.error_bytes(hostlink.ERR_CRC)),
                            ("'?' after the inferences", res.info_after, res.info)):
        if got != want:
            problems.append(f"{what} got {got.hex(' ') or 'nothing'} back, not {want.hex(' ') or 'nothing'}")
    wrong = (res.outputs != res.expected).any(axis=1) | ~res.answered
    fig = PlacedSimFigures(brd.name, model.kind, model.clock, int(syn.host_link["baud"]), divisor, len(res.outputs),
                           int(wrong.sum()), sorted(set(res.cycles)), program.cycles_model, build_id, problems,
                           round(time.monotonic() - t0, 1), model.cells)
    report.placed_sim = fig
    report.save(build)
    return fig, res


def build_for_board(qnet: QuantNetwork, board_name: str, build: str | Path, *, on_build=None,
                    log=print) -> board_flow.BoardBuild:
    """A network to a bitstream for a board, whatever it turns out to need: the fastest
    configuration that fits, emitted, ``on_build(program, build)`` (the caller's checks, as a
    co-simulation), and the board build, falling back to the next configuration that fits when
    one gives no bitstream (:func:`mamfpga.boards.flow.build_for_board`); the build's report
    gets its compile and synth sections."""
    brd = get_board(board_name)
    done = board_flow.build_for_board(qnet, brd, Path(build), on_build=on_build, log=log)
    report = Report.load(done.build)
    report.board, report.device = brd.name, DEVICES[brd.device].name
    report.compile = CompileFigures.of(done.program, done.choice.record())
    report.synth = done.synth
    report.save(done.build)
    return done


def run_on_board(program: Program, build: str | Path, port: str, x: np.ndarray, *, labels: np.ndarray | None = None,
                 baud: int | None = None, timeout: float = 2.0, limit: int | None = None,
                 log=print) -> board_run.BoardRun:
    """``x`` through the board on ``port`` carrying ``build``, checked against the golden model;
    the report's board_run section."""
    xq = golden.prepare_inputs(program.source, x)
    if labels is not None and len(labels) != len(xq):
        raise UsageError(f"{len(labels)} labels for {len(xq)} input rows")
    if limit:
        xq = xq[:limit]
        labels = labels[:limit] if labels is not None else None
    report = Report.load(build)
    baud = baud or (report.synth.host_link["baud"] if report.synth else board_flow.DEFAULT_BAUD)
    run = board_run.run_on_board(program, build, port, xq, baud=baud, timeout=timeout, labels=labels, log=log)
    report.board_run = run.figures
    report.save(build)
    return run
