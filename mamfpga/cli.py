"""The ``mamfpga`` command line (DESIGN.md's CLI contract).

Exit codes: 0 success; 1 the work ran and found a problem (a mismatch, a
missing tool); 2 bad input (a malformed file, a bad option, an output that
would overwrite a user's file). Errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from mamfpga import toolchain
from mamfpga.boards.targets import BOARDS
from mamfpga.outputs import OutputError, atomic_write_json, claim_dir

__all__ = ["main"]



class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


# --------------------------------------------------------------------------- doctor

def cmd_doctor(args) -> int:
    checks = toolchain.doctor_checks()
    width = max(len(c.name) for c in checks)
    print(f"{'':2}{'component':<{width}}  {'status':<8}  version / how to get it")
    for c in checks:
        status = "OK" if c.ok else ("MISSING" if c.required else "absent")
        detail = c.version if c.ok else c.hint
        flag = "  " if c.ok else ("! " if c.required else "- ")
        print(f"{flag}{c.name:<{width}}  {status:<8}  {detail}")
    missing = [c.name for c in checks if c.required and not c.ok]
    optional = [c.name for c in checks if not c.required and not c.ok]
    if missing:
        print(f"\n{len(missing)} required component(s) missing: {', '.join(missing)}")
        return 1
    note = f" (optional, absent: {', '.join(optional)})" if optional else ""
    print(f"\nall required components present{note}")
    return 0


# --------------------------------------------------------------------------- demo

def cmd_demo(args) -> int:
    from mamfpga.boards.targets import BOARDS, board_device
    from mamfpga.demo import run_demo

    if args.board not in BOARDS:
        raise UsageError(f"unknown board {args.board!r}; known: {', '.join(BOARDS)}")
    out = claim_dir(args.out, what="demo output folder")
    print(f"mamfpga demo: digits -> MAM training -> pruning -> int8 -> compiled for {args.board}, into {out}/")
    _, ok = run_demo(out, args.board, board_device(args.board).family, quiet=args.quiet)
    return 0 if ok else 1


# --------------------------------------------------------------------------- software verbs

def _check_output_file(path: Path, force: bool) -> Path:
    if path.exists() and not force:
        raise UsageError(f"{path} exists; refusing to overwrite it (pass --force to replace it)")
    if path.exists() and path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name")
    return path


def _load_dataset(name: str):
    from mamfpga.sw import data

    try:
        return data.load(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _load_model(path: Path):
    from mamfpga.sw.modelio import ModelFileError, load_model

    try:
        return load_model(path)
    except ModelFileError as exc:
        raise UsageError(str(exc)) from None


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--hidden takes sizes like 1024,1024, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--hidden takes positive sizes, not {text!r}")
    return sizes


def _layer_report(model, targets=None) -> list[dict]:
    from torch import nn

    from mamfpga.sw.mam import MAMLinear
    from mamfpga.sw.prune import layer_sparsity

    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            mode = "mam" if isinstance(m, MAMLinear) and m.beta == 0.0 else (
                "mac" if not isinstance(m, MAMLinear) else f"blend(beta={m.beta:g})")
            out.append({"name": name, "mode": mode, "sparsity": layer_sparsity(m),
                        "pruned": targets is None or name in targets})
    return out


def _targets(model, meta):
    from mamfpga.sw.prune import prunable_layers

    names = meta.get("pruned_layers")
    return [n for n, _ in prunable_layers(model, names)]


def cmd_train(args) -> int:
    from mamfpga.sw.modelio import save_model
    from mamfpga.sw.prune import METHODS, prune_model
    from mamfpga.sw.train import TrainConfig, accuracy, build_mlp, fit

    out = _check_output_file(args.output, args.force)
    ds = _load_dataset(args.dataset)
    hidden = _parse_sizes(args.hidden)
    if args.prune_at is not None and args.method not in METHODS:
        raise UsageError(f"unknown pruning method {args.method!r}; choose one of {', '.join(METHODS)}")
    cfg = TrainConfig(epochs=args.epochs, vc_epochs=args.vc_epochs, schedule=args.schedule, per=args.per,
                      lr=args.lr, batch=args.batch, weight_decay=args.weight_decay, seed=args.seed)
    model = build_mlp(ds.features, ds.classes, hidden, mode=args.mode, seed=args.seed)
    targets = [n for n, m in model.named_modules() if type(m).__name__ == "MAMLinear"] or None
    prune_fn = None
    if args.prune_at is not None:
        from mamfpga.sw.experiments import pruning_batches

        pset = pruning_batches(ds)

        def prune_fn(m):
            prune_model(m, args.method, args.sparsity, data=pset, seed=args.seed)
    print(f"training a {args.mode.upper()} MLP {ds.features}-{'-'.join(map(str, hidden))}-{ds.classes} on "
          f"{ds.name} ({len(ds.y_train)} train / {len(ds.y_test)} test), {args.epochs} epochs"
          + (f", beta {args.schedule} over {args.vc_epochs} epochs" if args.mode == "mam" else ""))
    fit(model, ds, cfg, progress=not args.quiet, prune_at=args.prune_at, prune_fn=prune_fn)
    acc = accuracy(model, ds.x_test, ds.y_test)
    meta = {"dataset": ds.name, "mode": args.mode, "hidden": list(hidden), "train": vars(cfg),
            "accuracy": acc}
    if targets:
        meta["pruned_layers"] = targets
    if args.prune_at is not None:
        meta["pruning"] = {"method": args.method, "sparsity": args.sparsity, "at_epoch": args.prune_at}
    save_model(model, out, meta)
    print(f"test accuracy {acc:.4f}; saved {out}")
    return 0


def cmd_prune(args) -> int:
    from mamfpga.sw.experiments import pruning_batches
    from mamfpga.sw.mam import to_mac
    from mamfpga.sw.modelio import save_model
    from mamfpga.sw.network import from_torch, to_torch
    from mamfpga.sw.prune import METHODS, iterative_prune, prune_model, sparsity
    from mamfpga.sw.simplify import simplify
    from mamfpga.sw.train import accuracy, finetune

    if args.method not in METHODS:
        raise UsageError(f"unknown pruning method {args.method!r}; choose one of {', '.join(METHODS)}")
    if not 0.0 <= args.sparsity < 1.0:
        raise UsageError(f"--sparsity is the fraction of weights removed, in [0, 1), not {args.sparsity}")
    out = _check_output_file(args.output, args.force)
    model, meta = _load_model(args.model)
    ds = _load_dataset(args.dataset or meta.get("dataset", "digits"))
    layers = args.layers.split(",") if args.layers else meta.get("pruned_layers")
    try:
        targets = _targets(model, {"pruned_layers": layers})
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    pset = pruning_batches(ds)
    before = accuracy(model, ds.x_test, ds.y_test)
    try:
        if args.rounds > 1:
            iterative_prune(model, args.method, args.sparsity, rounds=args.rounds, layers=targets, data=pset,
                            seed=args.seed, finetune=lambda r: finetune(
                                model, ds, epochs=max(args.finetune, 1), patience=args.patience,
                                progress=not args.quiet))
        else:
            prune_model(model, args.method, args.sparsity, layers=targets, data=pset, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    one_shot = accuracy(model, ds.x_test, ds.y_test)
    print(f"{args.method}: sparsity {sparsity(model, targets):.4f} over {', '.join(targets)}; "
          f"accuracy {before:.4f} -> {one_shot:.4f}")
    if args.to_mac:
        to_mac(model)
        print("reverted MAM layers to MAC (MAM -> MAC), keeping the sparse weights")
    if args.finetune and args.rounds <= 1:
        acc = finetune(model, ds, epochs=args.finetune, patience=args.patience, progress=not args.quiet)
        print(f"fine-tuned {args.finetune} epochs: accuracy {acc:.4f}")
    acc = accuracy(model, ds.x_test, ds.y_test)
    if args.simplify:
        net, report = simplify(from_torch(model))
        model = to_torch(net)
        print(f"simplified: {report.summary()}")
        targets = None
    meta = {**meta, "accuracy": acc, "pruned_layers": targets,
            "pruning": {"method": args.method, "sparsity": args.sparsity, "finetune": args.finetune,
                        "rounds": args.rounds, "to_mac": args.to_mac, "simplified": args.simplify}}
    if targets is None:
        meta.pop("pruned_layers")
    save_model(model, out, meta)
    print(f"test accuracy {acc:.4f}; saved {out}")
    return 0


def cmd_eval(args) -> int:
    import json

    from mamfpga.sw.prune import sparsity
    from mamfpga.sw.train import accuracy

    model, meta = _load_model(args.model)
    ds = _load_dataset(args.dataset)
    try:
        acc = accuracy(model, ds.x_test, ds.y_test)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"{args.model} does not fit the {ds.name} data ({ds.features} features): {exc}") from None
    targets = _targets(model, meta) if "pruned_layers" in meta or meta.get("mode") else _targets(model, {})
    layers = _layer_report(model, set(targets))
    result = {"accuracy": acc, "sparsity": sparsity(model, targets),
              "layers": [{"name": l["name"], "mode": l["mode"], "sparsity": l["sparsity"]} for l in layers]}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.model}: accuracy {acc:.4f} on the {ds.name} test set ({len(ds.y_test)} samples)")
    print(f"sparsity {result['sparsity']:.4f} over the pruned layers ({', '.join(targets)})")
    for l in layers:
        print(f"  layer {l['name']:<6} {l['mode']:<5} sparsity {l['sparsity']:.4f}"
              + ("" if l["pruned"] else "  (not pruned)"))
    return 0


def cmd_sweep(args) -> int:
    from mamfpga.sw import prune as prune_mod
    from mamfpga.sw.experiments import plot, sweep, write_csv
    from mamfpga.sw.train import TrainConfig

    out = claim_dir(args.out, what="sweep output folder")
    ds = _load_dataset(args.dataset)
    methods = args.methods.split(",") if args.methods else list(prune_mod.METHODS)
    bad = [m for m in methods if m not in prune_mod.METHODS]
    if bad:
        raise UsageError(f"unknown pruning method {bad[0]!r}; choose from {', '.join(prune_mod.METHODS)}")
    try:
        kept = [float(k) for k in args.kept.split(",")]
    except ValueError:
        raise UsageError(f"--kept takes fractions like 0.01,0.001, not {args.kept!r}") from None
    if any(not 0 < k <= 1 for k in kept):
        raise UsageError(f"--kept fractions must be in (0, 1], got {args.kept}")
    models = {}
    for mode, path in (("mac", args.mac_model), ("mam", args.mam_model)):
        if path is not None:
            models[mode] = _load_model(path)[0]
    cfg = TrainConfig(epochs=args.epochs, vc_epochs=args.vc_epochs, weight_decay=args.weight_decay)
    rows = sweep(ds, models=models, methods=methods, kept=kept, finetune_epochs=args.finetune,
                 train_cfg=cfg, hidden=_parse_sizes(args.hidden), progress=not args.quiet)
    csv_path = write_csv(rows, out / "sweep.csv")
    png_path = plot(rows, out / "sweep.png", title=ds.name)
    print(f"\n{'network':<8}{'method':<10}{'kept':>8}  {'one-shot':>9}{'fine-tuned':>11}{'mam->mac':>10}")
    by = {}
    for r in rows:
        by.setdefault((r.network, r.method, r.kept), {})[r.stage] = r.accuracy
    for (net, method, k), st in by.items():
        cells = "".join(f"{st[s]:>{w}.4f}" if s in st else " " * w
                        for s, w in (("one-shot", 9), ("fine-tuned", 11), ("mam->mac", 10)))
        print(f"{net:<8}{method:<10}{k:>8g}  {cells}")
    print(f"\nwrote {csv_path} and {png_path}")
    return 0


# --------------------------------------------------------------------------- quantize / golden / compile

def _load_npy(path: Path, what: str):
    import numpy as np

    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{what} {path}: not a readable .npy array ({exc})") from None


def _load_qnet(path: Path):
    from mamfpga.sw.qnet import QNetError, load_qnet

    try:
        return load_qnet(path)
    except QNetError as exc:
        raise UsageError(str(exc)) from None


def _float_network(path: Path, log=print):
    """The float Network IR of a .pt (mamfpga model) or .onnx file."""
    from mamfpga.sw.network import ModelFormatError, from_torch
    from mamfpga.sw.onnx_io import import_onnx

    try:
        if path.suffix.lower() == ".onnx":
            return import_onnx(path, log=log), None
        model, meta = _load_model(path)
        return from_torch(model), meta
    except ModelFormatError as exc:
        raise UsageError(str(exc)) from None


def cmd_quantize(args) -> int:
    import numpy as np

    from mamfpga.sw import golden
    from mamfpga.sw.qnet import QNetError, save_qnet
    from mamfpga.sw.quantize import quantize
    from mamfpga.sw.simplify import simplify

    out = _check_output_file(args.output, args.force)
    net, meta = _float_network(args.model)
    test = None
    if args.calib == "digits":
        ds = _load_dataset("digits")
        calib, test = ds.x_train, (ds.x_test, ds.y_test)
    else:
        calib = _load_npy(Path(args.calib), "calibration data")
    if args.test is not None:
        test = (_load_npy(args.test, "test inputs"), _load_npy(args.labels, "test labels") if args.labels else None)
    if not args.no_simplify:
        net, report = simplify(net)
        print(f"simplified: {report.summary()}")
    try:
        qnet = quantize(net, calib)
    except QNetError as exc:
        raise UsageError(str(exc)) from None
    save_qnet(qnet, out)
    nnz = sum(l.nnz for l in qnet.layers)
    print(f"quantized {len(qnet.layers)} layers ({', '.join(l.mode for l in qnet.layers)}), {nnz} nonzero "
          f"int8 weights; input_scale {qnet.input_scale:.6g}; saved {out}")
    if test is not None and test[1] is not None:
        x, y = test
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        f_acc = float((net.forward(x).argmax(1) == y).mean())
        q_acc = float((golden.classify(golden.run(qnet, x)) == y).mean())
        print(f"accuracy on {len(y)} test samples: float {f_acc:.4f}, quantized {q_acc:.4f} "
              f"({(q_acc - f_acc) * 100:+.2f} points)")
    return 0


def cmd_golden(args) -> int:
    import numpy as np

    from mamfpga.outputs import atomic_write_bytes
    from mamfpga.sw import golden
    from mamfpga.sw.qnet import QNetError

    out = _check_output_file(args.outputs, args.force)
    net = _load_qnet(args.net)
    x = _load_npy(args.inputs, "inputs")
    try:
        y = golden.run(net, x)
    except QNetError as exc:
        raise UsageError(str(exc)) from None
    import io

    buf = io.BytesIO()
    np.save(buf, y)
    atomic_write_bytes(out, buf.getvalue())
    print(f"{len(y)} samples -> {out} (int8 [{len(y)}, {y.shape[1]}])")
    return 0


def cmd_compile(args) -> int:
    from mamfpga.hw.arch import ArchConfig
    from mamfpga.sw.compiler import TOP_NAME, CompileError, compile_network, write_build

    net = _load_qnet(args.net)
    for name in ("pes", "lanes"):
        v = getattr(args, name)
        if v is not None and (v < 1 or (name == "pes" and v & (v - 1))):
            raise UsageError(f"--{name} must be a {'power of two' if name == 'pes' else 'positive number'} "
                             f"for the generated accelerator, not {v}")
    choice = None
    try:
        if args.board is not None:
            from mamfpga.boards import fit
            from mamfpga.boards.targets import board as board_by_name

            brd = board_by_name(args.board)
            problem = fit.lower_bound_problem(net, fit.device_of(brd))
            if problem:
                raise UsageError(f"does not fit the {args.board}: {problem}")
        if args.board is not None and (args.pes is None or args.lanes is None):
            choice = _choose(net, brd, args)
            program = choice.program
        else:
            cfg = ArchConfig(pes=args.pes or 4, lanes=args.lanes or 2, acc_bits=args.acc_bits or 32)
            program = compile_network(net, cfg, board=args.board, delta_bits=args.delta_bits,
                                      acc_bits=args.acc_bits, split=args.split or "auto")
    except (CompileError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    build = write_build(program, args.output, board=args.board, choice=choice.record() if choice else None)
    cfg = program.config
    print(f"compiled for P={cfg.pes} PEs x L={cfg.lanes} lanes, {cfg.acc_bits}-bit accumulators, "
          f"{cfg.delta_bits}-bit column deltas" + (f", board {args.board}" if args.board else ""))
    e = program.eliminated
    if e["sizes_before"] != e["sizes_after"]:
        print(f"dead rows/columns eliminated: {' -> '.join(map(str, e['sizes_before']))}  to  "
              f"{' -> '.join(map(str, e['sizes_after']))}")
    print(f"{'layer':<6}{'mode':<5}{'kind':<14}{'rows':>6}{'cols':>6}{'nnz':>7}{'cycles':>8}{'bound':>7}"
          f"{'balance':>9}")
    from mamfpga.sw.compiler import balance

    bal = balance(program)
    for k, l in enumerate(program.layers):
        kind = "column-split" if l.split else "row-parallel"
        print(f"{k:<6}{l.mode:<5}{kind:<14}{l.rows:>6}{l.cols:>6}{l.nnz:>7}{l.cycles:>8}{l.bound:>7}"
              f"{bal['layers'][k]['nnz']:>9.3f}")
    mem = program.memory
    per_nnz = mem["weight_bits_per_nnz"]
    print(f"cycles per inference {program.cycles_per_inference} (bound {program.cycle_bound}, "
          f"ratio {program.cycles_per_inference / program.cycle_bound:.3f}); PE balance max/mean nnz "
          f"{bal['nnz']:.3f}; weight memory {per_nnz:.1f} bits per nonzero"
          + (f"; {mem['bram']} block RAMs" if mem.get("bram") is not None else ""))
    print(f"wrote {build}/accelerator.v (top {TOP_NAME}), manifest.json and the memory images")
    return 0


def _choose(net, brd, args):
    """compile --board without --pes/--lanes: the fastest configuration that fits, said why."""
    from mamfpga.boards import fit
    from mamfpga.boards.flow import SynthError

    log = (lambda _m: None) if args.quiet else (lambda m: print(f"  {m}", flush=True))
    print(f"choosing the fastest configuration that fits the {brd.name} ({brd.device}; logic at most "
          f"{fit.LOGIC_MARGIN:.0%} of the device, every other resource to its count) ...", flush=True)
    try:
        choice = fit.choose(net, brd, pes=[args.pes] if args.pes else None,
                            lanes=[args.lanes] if args.lanes else None, splits=[args.split] if args.split else None,
                            acc_bits=args.acc_bits, delta_bits=args.delta_bits, log=log)
    except fit.NoFitError as exc:
        raise UsageError(str(exc)) from None
    except SynthError as exc:
        raise UsageError(f"could not synthesize a candidate to count its resources: {exc}") from None
    print(choice.explain())
    return choice


def cmd_sim(args) -> int:
    import io

    import numpy as np

    from mamfpga.hw.arch import ArchConfig
    from mamfpga.outputs import atomic_write_bytes
    from mamfpga.sim.cosim import cosimulate
    from mamfpga.sim.runner import SimulationError
    from mamfpga.sw.compiler import CompileError, compile_network, load_build, write_build
    from mamfpga.sw.qnet import QNetError

    out_file = _check_output_file(args.outputs, args.force)
    target = args.target
    try:
        if target.is_dir():
            build = target
            program = load_build(build)
        else:
            net = _load_qnet(target)
            if args.pes < 1 or args.pes & (args.pes - 1):
                raise UsageError(f"--pes must be a power of two for the generated accelerator, not {args.pes}")
            program = compile_network(net, ArchConfig(pes=args.pes, lanes=args.lanes))
            build = args.build or Path("build") / f"sim-{target.stem}-p{args.pes}l{args.lanes}"
            write_build(program, build)
            print(f"compiled {target} for P={args.pes}, L={args.lanes} into {build}")
    except (CompileError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    x = _load_npy(args.inputs, "inputs")
    try:
        res = cosimulate(program, build, x, simulator=args.simulator, waves=args.waves)
    except QNetError as exc:
        raise UsageError(str(exc)) from None
    except (SimulationError, RuntimeError) as exc:
        print(f"mamfpga sim: error: {exc}", file=sys.stderr)
        return 1
    buf = io.BytesIO()
    np.save(buf, res.outputs)
    atomic_write_bytes(out_file, buf.getvalue())
    report = _sim_report(program, res)
    atomic_write_json(Path(build) / "report.json", report)
    cyc = sorted(set(res.cycles))
    print(f"{args.simulator}: {len(res.outputs)} samples, {res.mismatches} mismatching; cycles per inference "
          f"{'/'.join(map(str, cyc))} (model {program.cycles_per_inference}, bound {program.cycle_bound})")
    for k, (l, c) in enumerate(zip(program.layers, res.layer_cycles)):
        print(f"  layer {k}: {c} cycles (model {l.cycles}, bound {l.bound})")
    if res.sim.waves:
        print(f"waves: {res.sim.waves}")
    print(f"wrote {out_file} and {Path(build) / 'report.json'}")
    if not res.ok:
        m = res.first_mismatch
        where = ("the compiled program already differs from the golden model" if m["program_layer"] is not None
                 else "the compiled program is right, so the RTL departs from it")
        print(f"MISMATCH: first at sample {m['sample']}, layer {m['layer']}, neuron {m['neuron']}: "
              f"got {m['got']}, expected {m['expected']} ({where})", file=sys.stderr)
        return 1
    if cyc != [program.cycles_per_inference]:
        print(f"CYCLES: measured {cyc}, the model says {program.cycles_per_inference}", file=sys.stderr)
        return 1
    return 0


def _sim_report(program, res) -> dict:
    cfg = program.config
    return {
        "board": None, "device": None,
        "config": {"pes": cfg.pes, "lanes": cfg.lanes, "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits,
                   "acc_bits": cfg.acc_bits, "delta_bits": cfg.delta_bits},
        "layers": [{"mode": l.mode, "rows": l.rows, "cols": l.cols, "nnz": l.nnz, "cycles": c,
                    "cycle_model": l.cycles, "cycle_bound": l.bound}
                   for l, c in zip(program.layers, res.layer_cycles)],
        "cycles_per_inference": max(res.cycles) if res.cycles else None,
        "cycle_model": program.cycles_per_inference,
        "cycle_bound": program.cycle_bound,
        "sim": {"simulator": res.simulator, "samples": int(len(res.outputs)), "mismatches": res.mismatches,
                "first_mismatch": res.first_mismatch},
    }


def cmd_report(args) -> int:
    import json

    build = args.build
    manifest_path = build / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"{build}: not a build folder (no manifest.json); run mamfpga compile first")
    try:
        manifest = json.loads(manifest_path.read_text())
        report = json.loads((build / "report.json").read_text()) if (build / "report.json").is_file() else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"{build}: damaged manifest or report ({exc})") from None
    if args.json:
        print(json.dumps({"manifest": manifest, "report": report}))
        return 0
    c = manifest["config"]
    print(f"{build}: P={c['pes']} L={c['lanes']}, {c['acc_bits']}-bit accumulators, {c['delta_bits']}-bit "
          f"column deltas, split {c.get('split', 'auto')}"
          + (f", board {manifest['board']}" if manifest.get("board") else ""))
    choice = manifest.get("choice")
    if choice:
        n = choice.get("needs") or {}
        print(f"configuration chosen as the {choice['by']} ({len(choice['tried']) - 1} faster ones do not)"
              + (f"; estimate {n['lc']} logic cells, {n['bram']} block RAMs, {n['dsp']} DSPs" if n else ""))
    measured = {k: l.get("cycles") for k, l in enumerate(report.get("layers", []))}
    print(f"{'layer':<6}{'mode':<5}{'kind':<14}{'rows':>6}{'cols':>6}{'nnz':>7}{'cycles':>8}{'model':>7}{'bound':>7}")
    for k, l in enumerate(manifest["layers"]):
        cyc = measured.get(k)
        print(f"{k:<6}{l['mode']:<5}{l['kind']:<14}{l['rows']:>6}{l['cols']:>6}{l['nnz']:>7}"
              f"{(str(cyc) if cyc is not None else '-'):>8}{l['cycle_model']:>7}{l['cycle_bound']:>7}")
    sim = report.get("sim")
    measured_total = report.get("cycles_per_inference")
    print(f"cycles per inference: {measured_total if measured_total is not None else '-'} simulated, "
          f"{manifest['cycles_per_inference']} model, {manifest['cycle_bound']} bound")
    mem = manifest.get("memory", {})
    if mem.get("weight_bits_per_nnz") is not None:
        print(f"weight memory {mem['weight_bits_per_nnz']:.1f} bits per nonzero; PE balance max/mean nnz "
              f"{manifest['balance']['nnz']:.3f}" + (f"; {mem['bram']} block RAMs" if mem.get("bram") else ""))
    if sim:
        print(f"co-simulation: {sim['simulator']}, {sim['samples']} samples, {sim['mismatches']} mismatching")
    else:
        print("co-simulation: not run (mamfpga sim BUILD --inputs X.npy --outputs Y.npy)")
    if report.get("resources") and report.get("clock"):
        print(f"board {report['board']} ({report['device']}), placed and routed:")
        print_board_table(report)
    elif report.get("resources"):
        res = report["resources"]
        print(f"resources: {res['lut']}/{res['lut_avail']} LUT, {res['ff']}/{res['ff_avail']} FF, "
              f"{res['bram']}/{res['bram_avail']} BRAM, {res['dsp']}/{res['dsp_avail']} DSP")
    run = report.get("board_run")
    if run:
        acc = f", accuracy {run['accuracy']:.4f}" if "accuracy" in run else ""
        print(f"on the board ({run['port']}): {run['samples']} samples, {run['mismatches']} mismatching{acc}; "
              f"cycles {'/'.join(map(str, run['cycles']))} (model {run['cycle_model']})")
    return 0


# --------------------------------------------------------------------------- boards

def _build_and_report(build: Path):
    import json

    from mamfpga.sw.compiler import CompileError, load_build

    if not (build / "manifest.json").is_file():
        raise UsageError(f"{build}: not a build folder (no manifest.json); run mamfpga compile first")
    try:
        program = load_build(build)
    except (CompileError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    path = build / "report.json"
    try:
        report = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: damaged report ({exc})") from None
    return program, report


def print_board_table(r: dict):
    """The synthesis results of a report (``resources``, ``fmax_mhz``, latency) as a table."""
    res = r["resources"]
    print(f"{'resource':<10}{'used':>8}{'available':>11}{'use':>7}")
    for key, name in (("lut", "LUT"), ("ff", "FF"), ("bram", "BRAM"), ("dsp", "DSP")):
        used, avail = res[key], res[f"{key}_avail"]
        print(f"{name:<10}{used:>8}{avail:>11}{used / avail:>7.0%}")
    clk = r["clock"]["mhz"]
    verdict = "met" if r["timing_met"] else "NOT met"
    print(f"Fmax {r['fmax_mhz']:.1f} MHz; clock {clk:g} MHz ({verdict})"
          + (f", target {r['target_mhz']:g} MHz" if r.get("target_mhz") and r["target_mhz"] != clk else ""))
    cp = r.get("critical_path")
    if cp:
        print(f"critical path {cp['ns']:.1f} ns ({cp['logic_ns']:.1f} logic, {cp['routing_ns']:.1f} routing): "
              f"{cp['from']} -> {cp['to']}")
    cycles = r.get("cycles_per_inference_model", r.get("cycles_per_inference", "?"))
    print(f"latency {r['latency_us']:.1f} us per inference ({cycles} cycles), "
          f"{r['inferences_per_s']:,.0f} inferences/s")


def cmd_synth(args) -> int:
    from mamfpga.boards.flow import CapacityError, SynthError, synth_board
    from mamfpga.boards.targets import board

    program, report = _build_and_report(args.build)
    try:
        target = board(args.board)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.clock is not None and args.clock <= 0:
        raise UsageError(f"--clock must be a positive frequency in MHz, not {args.clock}")
    try:
        result = synth_board(args.build, target, bitstream=args.bitstream,
                             clock_hz=args.clock * 1e6 if args.clock else None, baud=args.baud, seed=args.seed)
    except CapacityError as exc:
        print(f"mamfpga synth: does not fit: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:          # a baud rate the clock cannot make, a PLL out of range
        raise UsageError(str(exc)) from None
    except SynthError as exc:
        print(f"mamfpga synth: error: {exc}", file=sys.stderr)
        return 1
    report.update(result)
    report["cycles_per_inference_model"] = program.cycles_per_inference
    atomic_write_json(args.build / "report.json", report)
    if "export_only" in result:
        return 0
    print(f"{target.name} ({result['device']}): clock {result['clock']['mhz']:g} MHz from a "
          f"{result['clock']['oscillator_mhz']:g} MHz oscillator, host link {args.baud} baud, "
          f"build {result['host_link']['build_id']}")
    print_board_table(report)
    if result.get("bitstream"):
        print(f"bitstream: {result['bitstream']}  (load it with: {target.programmer.replace('BUILD', str(args.build))})")
    print(f"wrote {args.build / 'report.json'}")
    if not result["timing_met"]:
        print(f"mamfpga synth: timing not met (Fmax {result['fmax_mhz']:.1f} MHz below the "
              f"{result['clock']['mhz']:g} MHz clock); no bitstream. Try --clock {int(result['fmax_mhz'])}",
              file=sys.stderr)
        return 1
    return 0


def cmd_run(args) -> int:
    import time

    import numpy as np

    from mamfpga.boards.flow import DEFAULT_BAUD
    from mamfpga.boards.hostlink import HostLink, HostLinkError, build_id, open_serial
    from mamfpga.sw import golden
    from mamfpga.sw.qnet import QNetError

    program, report = _build_and_report(args.build)
    labels = None
    if str(args.inputs) == "digits":
        from mamfpga.sw import data

        ds = data.load()
        x, labels = ds.x_test, ds.y_test
    else:
        x = _load_npy(args.inputs, "inputs")
    if args.labels is not None:
        labels = _load_npy(args.labels, "labels")
    try:
        xq = golden.prepare_inputs(program.source, x)
    except QNetError as exc:
        raise UsageError(str(exc)) from None
    if labels is not None and len(labels) != len(xq):
        raise UsageError(f"{len(labels)} labels for {len(xq)} input rows")
    if args.limit:
        xq = xq[:args.limit]
        labels = labels[:args.limit] if labels is not None else None
    out_file = _check_output_file(args.outputs, args.force) if args.outputs else None
    expected = golden.run(program.source, xq)
    baud = args.baud or report.get("host_link", {}).get("baud", DEFAULT_BAUD)
    n_out = program.net.output_size
    port = None
    try:
        port = open_serial(args.port, baud, timeout=args.timeout)
        link = HostLink(port)
        link.sync()
        info = link.info()
        want = (program.net.input_size, n_out, program.config.pes, program.config.lanes, build_id(args.build))
        got = (info.n_in, info.n_out, info.pes, info.lanes, info.build_id)
        if got != want:
            raise HostLinkError(
                f"the board carries another build: {info.n_in} inputs, {info.n_out} outputs, P={info.pes} "
                f"L={info.lanes}, build {info.build_id:08x}; {args.build} has {want[0]}, {want[1]}, P={want[2]} "
                f"L={want[3]}, build {want[4]:08x}. Load {args.build}'s bitstream (mamfpga synth --bitstream)")
        print(f"board on {args.port} at {baud} baud carries build {info.build_id:08x}; sending {len(xq)} inputs")
        outputs = np.zeros((len(xq), n_out), dtype=np.int8)
        cycles = []
        t0 = time.monotonic()
        for i in range(len(xq)):
            outputs[i], c = link.infer(np.ascontiguousarray(xq[i, program.columns]), n_out)
            cycles.append(c)
        wall = time.monotonic() - t0
    except HostLinkError as exc:
        print(f"mamfpga run: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if port is not None:
            port.close()
    bad = np.flatnonzero((outputs != expected).any(axis=1))
    run = {"port": args.port, "baud": baud, "samples": int(len(xq)), "mismatches": int(len(bad)),
           "cycles": sorted(set(cycles)), "cycle_model": program.cycles_per_inference,
           "seconds": round(wall, 3)}
    if labels is not None:
        run["accuracy"] = float((golden.classify(outputs) == labels).mean())
        run["golden_accuracy"] = float((golden.classify(expected) == labels).mean())
    report["board_run"] = run
    atomic_write_json(args.build / "report.json", report)
    if out_file is not None:
        import io

        from mamfpga.outputs import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, outputs)
        atomic_write_bytes(out_file, buf.getvalue())
    print(f"{len(xq)} inferences in {wall:.2f} s ({len(xq) / wall:.0f}/s over the link); "
          f"{len(bad)} differ from the golden model")
    print(f"cycles per inference on the board: {'/'.join(map(str, run['cycles']))} "
          f"(model {program.cycles_per_inference})")
    if labels is not None:
        print(f"accuracy: board {run['accuracy']:.4f}, golden model {run['golden_accuracy']:.4f}")
    if len(bad):
        s, j = int(bad[0]), int(np.flatnonzero(outputs[bad[0]] != expected[bad[0]])[0])
        print(f"MISMATCH: first at sample {s}, output {j}: board {outputs[s, j]}, golden {expected[s, j]}",
              file=sys.stderr)
        return 1
    if run["cycles"] != [program.cycles_per_inference]:
        print(f"CYCLES: the board counted {run['cycles']}, the model says {program.cycles_per_inference}",
              file=sys.stderr)
        return 1
    return 0


def _int_list(text: str, what: str, allow_auto: bool = False) -> list:
    out = []
    for part in text.split(","):
        part = part.strip()
        if allow_auto and part == "auto":
            out.append(None)
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise UsageError(f"{what}: {part!r} is not an integer (a comma-separated list is expected)") from None
    return out


def cmd_sweep_hw(args) -> int:
    import numpy as np

    from mamfpga.boards.targets import BOARDS
    from mamfpga.sw import golden
    from mamfpga.sw.qnet import QNetError
    from mamfpga.sweep_hw import pareto, plot_pareto, points, run_points, write_csv

    net = _load_qnet(args.net)
    boards = [b.strip() for b in args.boards.split(",")]
    unknown = [b for b in boards if b not in BOARDS]
    if unknown:
        raise UsageError(f"unknown board(s) {', '.join(unknown)}; known: {', '.join(BOARDS)}")
    pes = _int_list(args.pes, "--pes")
    bad = [p for p in pes if p < 1 or p & (p - 1)]
    if bad:
        raise UsageError(f"--pes must be powers of two, not {bad}")
    lanes = _int_list(args.lanes, "--lanes")
    if any(l < 1 for l in lanes):
        raise UsageError(f"--lanes must be at least 1, not {lanes}")
    accs = _int_list(args.acc_bits, "--acc-bits", allow_auto=True)
    deltas = _int_list(args.delta_bits, "--delta-bits", allow_auto=True)
    if str(args.inputs) == "digits":
        from mamfpga.sw import data

        x = data.load().x_test
    else:
        x = _load_npy(args.inputs, "inputs")
    try:
        x = golden.prepare_inputs(net, x)[:args.samples]
    except QNetError as exc:
        raise UsageError(str(exc)) from None
    out = claim_dir(args.output, what="sweep-hw output folder")
    np.save(out / "inputs.npy", x)
    pts = points(boards, pes, lanes, accs, deltas)
    where = f"the Dask cluster at {args.scheduler}" if args.scheduler else f"{args.jobs} local processes"
    print(f"sweep-hw: {len(pts)} points ({len(boards)} boards x P {pes} x L {lanes} x acc {args.acc_bits} x "
          f"delta {args.delta_bits}), {len(x)} samples each, on {where}")
    head = (f"{'board':<11}{'P':>3}{'L':>3}{'acc':>5}{'dlt':>4} {'status':<13}{'cycles':>7}{'LUT':>7}{'FF':>7}"
            f"{'BRAM':>5}{'DSP':>4}{'Fmax':>7}{'us':>8}{'s':>6}")
    print(head)

    def show(r):
        def f(v, spec=""):
            return "-" if v is None else format(v, spec)
        print(f"{r['board']:<11}{r['pes']:>3}{r['lanes']:>3}{f(r['acc_bits']):>5}{f(r['delta_bits']):>4} "
              f"{r['status']:<13}{f(r['cycles_sim']):>7}{f(r['lut']):>7}{f(r['ff']):>7}{f(r['bram']):>5}"
              f"{f(r['dsp']):>4}{f(r['fmax_mhz'], '.1f'):>7}{f(r['latency_us'], '.2f'):>8}{r['seconds']:>6.0f}",
              flush=True)
        if r["status"] not in ("ok",) and r.get("detail"):
            print(f"    {r['detail'].splitlines()[0][:150]}")

    try:
        rows = run_points(pts, args.net, out / "inputs.npy", out / "points", synth=not args.no_synth,
                          jobs=args.jobs, scheduler=args.scheduler, on_row=show)
    except OSError as exc:
        print(f"mamfpga sweep-hw: error: cannot reach the Dask scheduler {args.scheduler}: {exc}", file=sys.stderr)
        return 1
    csv_path = write_csv(rows, out / "sweep_hw.csv")
    made = [str(csv_path)]
    if not args.no_synth and any(r.get("lut") is not None for r in rows):
        made.append(str(plot_pareto(rows, out / "pareto.png")))
        front = pareto(rows)
        print("Pareto front (cycles against LUTs): " + ", ".join(
            f"{r['board']} P{r['pes']}L{r['lanes']} ({r['cycles_model']} cycles, {r['lut']} LUT)" for r in front))
    print(f"wrote {', '.join(made)}")
    return 0 if all(r["status"] in ("ok", "does not fit") for r in rows) else 1


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mamfpga", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    d = sub.add_parser("doctor", help="which tools are present, and how to get the rest")
    d.set_defaults(func=cmd_doctor)

    d = sub.add_parser("demo", help="the whole flow on the built-in default")
    d.add_argument("--out", default="build/demo", type=Path, help="output folder (default build/demo)")
    d.add_argument("--board", default="icebreaker", help="target board (default icebreaker)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    from mamfpga.sw.train import DEFAULT_HIDDEN, TrainConfig

    tc = TrainConfig()
    hidden = ",".join(map(str, DEFAULT_HIDDEN))

    d = sub.add_parser("train", help="train an MLP (MAM hidden layers with vanishing contributions, or MAC)")
    d.add_argument("--dataset", default="digits", help="built-in data set (default digits)")
    d.add_argument("--mode", choices=["mac", "mam"], default="mam")
    d.add_argument("--hidden", default=hidden, help=f"hidden layer sizes (default {hidden})")
    d.add_argument("--schedule", choices=["linear", "parabolic", "exponential"], default=tc.schedule)
    d.add_argument("--per", choices=["epoch", "step"], default=tc.per, help="step beta per epoch or per batch")
    d.add_argument("--vc-epochs", type=int, default=tc.vc_epochs, help="Q: epochs for beta to reach 0")
    d.add_argument("--epochs", type=int, default=tc.epochs)
    d.add_argument("--lr", type=float, default=tc.lr)
    d.add_argument("--batch", type=int, default=tc.batch)
    d.add_argument("--weight-decay", type=float, default=1e-4,
                   help="L2 weight decay (default 1e-4: unselected MAM weights decay, so magnitude pruning works)")
    d.add_argument("--prune-at", type=int, help="prune before convergence, after this epoch")
    d.add_argument("--method", default="gmp", help="pruning method for --prune-at")
    d.add_argument("--sparsity", type=float, default=0.99, help="sparsity for --prune-at")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("-o", "--output", type=Path, required=True)
    d.add_argument("--force", action="store_true", help="overwrite the output file")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_train)

    d = sub.add_parser("prune", help="prune a model (one-shot or iterative), optionally MAM -> MAC and fine-tune")
    d.add_argument("model", type=Path)
    d.add_argument("--method", required=True, help="gmp lmp ggp lgp rp gpsp lpsp lmp-lpsp")
    d.add_argument("--sparsity", type=float, required=True, help="fraction of the targeted weights removed")
    d.add_argument("--layers", help="comma-separated layer names (default: the MAM layers)")
    d.add_argument("--finetune", type=int, default=0, help="fine-tuning epochs after pruning")
    d.add_argument("--patience", type=int, help="stop fine-tuning after this many epochs without progress")
    d.add_argument("--rounds", type=int, default=1, help="iterative pruning: prune/fine-tune rounds")
    d.add_argument("--to-mac", action="store_true", help="revert MAM layers to MAC before fine-tuning")
    d.add_argument("--simplify", action="store_true", help="remove dead neurons and unread inputs")
    d.add_argument("--dataset", help="data set for scores and fine-tuning (default: the model's)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("-o", "--output", type=Path, required=True)
    d.add_argument("--force", action="store_true", help="overwrite the output file")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_prune)

    d = sub.add_parser("eval", help="accuracy and sparsity of a float model")
    d.add_argument("model", type=Path)
    d.add_argument("--dataset", default="digits")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_eval)

    d = sub.add_parser("sweep", help="accuracy against kept fraction: MAC vs MAM, every method, MAM -> MAC")
    d.add_argument("--dataset", default="digits")
    d.add_argument("--out", type=Path, default=Path("build/sweep"))
    d.add_argument("--methods", help="comma-separated (default: all eight)")
    d.add_argument("--kept", default="0.1,0.03,0.01,0.003,0.001", help="kept fractions")
    d.add_argument("--finetune", type=int, default=10, help="fine-tuning epochs per point")
    d.add_argument("--mam-model", type=Path, help="use this trained MAM model instead of training one")
    d.add_argument("--mac-model", type=Path, help="use this trained MAC model instead of training one")
    d.add_argument("--hidden", default=hidden)
    d.add_argument("--epochs", type=int, default=tc.epochs)
    d.add_argument("--vc-epochs", type=int, default=tc.vc_epochs)
    d.add_argument("--weight-decay", type=float, default=1e-4)
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_sweep)

    d = sub.add_parser("quantize", help="int8 QuantNetwork (.npz) from a float model (.pt or .onnx)")
    d.add_argument("model", type=Path)
    d.add_argument("--calib", required=True, help="calibration inputs: X.npy, or 'digits'")
    d.add_argument("--test", type=Path, help="test inputs (.npy) for the accuracy comparison")
    d.add_argument("--labels", type=Path, help="labels (.npy) of --test")
    d.add_argument("--no-simplify", action="store_true", help="keep dead neurons and unread inputs")
    d.add_argument("-o", "--output", type=Path, required=True)
    d.add_argument("--force", action="store_true")
    d.set_defaults(func=cmd_quantize)

    d = sub.add_parser("golden", help="run the bit-exact golden model")
    d.add_argument("net", type=Path)
    d.add_argument("--inputs", type=Path, required=True, help="int8 [B, N] (or float, through input_scale)")
    d.add_argument("--outputs", type=Path, required=True)
    d.add_argument("--force", action="store_true")
    d.set_defaults(func=cmd_golden)

    d = sub.add_parser("compile", help="CSR per PE, memory images, cycle model -> BUILD/")
    d.add_argument("net", type=Path)
    d.add_argument("--pes", type=int, help="processing elements P (default: with --board, the fastest that "
                                           "fits; else 4)")
    d.add_argument("--lanes", type=int, help="multiplier lanes per PE L (default: with --board, the fastest "
                                             "that fits; else 2)")
    d.add_argument("--board", help="fit the board (every resource), choosing P and L unless given: "
                   + ", ".join(BOARDS))
    d.add_argument("--acc-bits", type=int, help="accumulator width (default: what the network needs)")
    d.add_argument("--delta-bits", type=int, help="column delta width (default: smallest memory)")
    d.add_argument("--split", choices=["auto", "never", "always"],
                   help="column-split layers (default: where faster; with --board, whichever fits)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    d.add_argument("-o", "--output", type=Path, required=True)
    d.set_defaults(func=cmd_compile)

    d = sub.add_parser("sim", help="co-simulate the generated accelerator against the golden model")
    d.add_argument("target", type=Path, help="net.npz (compiled first) or a BUILD folder")
    d.add_argument("--inputs", type=Path, required=True, help="int8 [B, N] or float (through input_scale)")
    d.add_argument("--outputs", type=Path, required=True)
    d.add_argument("--pes", type=int, default=4)
    d.add_argument("--lanes", type=int, default=2)
    d.add_argument("--build", type=Path, help="where to compile a net.npz (default build/sim-NAME-pPlL)")
    d.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    d.add_argument("--waves", action="store_true", help="write waves (VCD on Verilator, FST on Icarus)")
    d.add_argument("--force", action="store_true", help="overwrite --outputs")
    d.set_defaults(func=cmd_sim)

    d = sub.add_parser("synth", help="board top with UART host link -> yosys -> nextpnr -> bitstream")
    d.add_argument("build", type=Path)
    d.add_argument("--board", required=True, help="one of: " + ", ".join(BOARDS))
    d.add_argument("--bitstream", action="store_true", help="keep the bitstream (only when timing is met)")
    d.add_argument("--clock", type=float, help="sync clock in MHz (default: the board's target, lowered to "
                                               "what place and route reaches)")
    d.add_argument("--baud", type=int, default=115200, help="host link baud rate (default 115200)")
    d.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    d.set_defaults(func=cmd_synth)

    d = sub.add_parser("run", help="run inputs on the board over its serial port, check against the golden model")
    d.add_argument("build", type=Path)
    d.add_argument("--port", required=True, help="serial device (/dev/ttyUSB1) or a pyserial URL")
    d.add_argument("--inputs", type=Path, required=True,
                   help="X.npy (int8, or float through input_scale), or 'digits' for the built-in test set")
    d.add_argument("--labels", type=Path, help="Y.npy class labels, for accuracy")
    d.add_argument("--outputs", type=Path, help="write the board's outputs (.npy)")
    d.add_argument("--baud", type=int, help="default: the one the build was synthesized for")
    d.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for an answer")
    d.add_argument("--limit", type=int, help="only the first N inputs")
    d.add_argument("--force", action="store_true", help="overwrite --outputs")
    d.set_defaults(func=cmd_run)

    d = sub.add_parser("sweep-hw", help="design-space exploration: compile + sim + synth per (board, P, L, widths)")
    d.add_argument("net", type=Path, help="net.npz")
    d.add_argument("--boards", default="icebreaker", help="comma-separated (default icebreaker)")
    d.add_argument("--pes", default="1,2,4", help="comma-separated powers of two (default 1,2,4)")
    d.add_argument("--lanes", default="1,2", help="comma-separated (default 1,2)")
    d.add_argument("--acc-bits", default="auto", help="accumulator widths, or auto (default)")
    d.add_argument("--delta-bits", default="auto", help="column delta widths, or auto (default)")
    d.add_argument("--inputs", type=Path, default=Path("digits"),
                   help="X.npy, or 'digits' (the built-in test set, the default)")
    d.add_argument("--samples", type=int, default=50, help="inputs co-simulated per point (default 50)")
    d.add_argument("--jobs", type=int, default=2, help="local worker processes (default 2)")
    d.add_argument("--scheduler", help="run on the Dask cluster whose scheduler is at this address (tcp://host:8786)")
    d.add_argument("--no-synth", action="store_true", help="compile and simulate only")
    d.add_argument("-o", "--output", type=Path, required=True, help="folder for the CSV, the plot, the builds")
    d.set_defaults(func=cmd_sweep_hw)

    d = sub.add_parser("report", help="what a build folder holds: layers, cycles, memory, co-simulation")
    d.add_argument("build", type=Path)
    d.add_argument("--json", action="store_true", help="the manifest and report as one JSON object")
    d.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    toolchain.activate()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, OutputError) as exc:
        print(f"mamfpga {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except toolchain.MissingToolError as exc:
        print(f"mamfpga {args.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mamfpga {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader stopped reading (`mamfpga eval m.pt --json | head -c 100`): stop quietly, as a
        # Unix tool killed by SIGPIPE would, and keep Python from failing again when it flushes stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
