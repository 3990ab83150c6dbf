"""mamfpga: pruned Multiply-And-Max/min networks to FPGA accelerators, co-simulated bit for bit.

This module is the command line: argument parsing, input checks and printing.
The work is the pipeline's (:mod:`mamfpga.stages`), the figures the report's
(:mod:`mamfpga.report`).

Exit codes: 0 success; 1 the work ran and found a problem (a mismatch, a
missing tool, a design that does not fit); 2 bad input (a malformed file, a bad
option, an output that would overwrite a user's file). Errors are one line,
never a traceback: every one is a :class:`~mamfpga.errors.MamfpgaError`, mapped
to its exit code in :func:`main`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

from mamfpga import progress, stages, toolchain
from mamfpga.boards.flow import DEFAULT_BAUD, NEAR_MISS, SEEDS_PER_CLOCK
from mamfpga.boards.targets import BOARDS
from mamfpga.errors import MamfpgaError, UsageError
from mamfpga.outputs import PLOTS_HINT, atomic_write_bytes, run_dir
from mamfpga.report import render, render_board_run, render_compile, render_placed_sim, render_sim, render_synth
from mamfpga.sw import golden, qonnx_io
from mamfpga.sw.data import DATASETS

__all__ = ["main", "build_parser"]


def _output_file(path: Path, force: bool) -> Path:
    if path.exists() and not force:
        raise UsageError(f"{path} exists; refusing to overwrite it (pass --force to replace it)")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name")
    return path


def _npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{what} {path}: not a readable .npy array ({exc})") from None


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def _inputs(arg: Path, labels: Path | None = None):
    """X.npy (and labels), or a data set (digits, mnist5k, DATA.npz): its test set with its labels."""
    if str(arg) in DATASETS or str(arg).endswith(".npz"):
        ds = stages.load_dataset(str(arg))
        return ds.x_test, ds.y_test
    return _npy(arg, "inputs"), (_npy(labels, "labels") if labels else None)


def _ints(text: str, what: str, allow_auto: bool = False) -> list:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if allow_auto and part == "auto":
            out.append(None)
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise UsageError(f"{what}: {part!r} is not an integer (a comma-separated list is expected)") from None
    return out


DATASET_HELP = "digits (default), mnist5k, or DATA.npz (x_train, y_train, x_test, y_test)"


def _sizes(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        sizes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--hidden takes sizes like 1024,1024, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--hidden takes positive sizes, not {text!r}")
    return sizes


def _show(lines) -> None:
    print("\n".join(lines))


# --------------------------------------------------------------------------- verbs

def cmd_doctor(args) -> int:
    lines, ok = toolchain.doctor_report()
    _show(lines)
    return 0 if ok else 1


def cmd_demo(args) -> int:
    from mamfpga.demo import demo_arch, run_demo
    from mamfpga.sw.train import build_model

    stages.get_board(args.board)
    ds = stages.load_dataset(args.dataset)          # a bad data set: one line, nothing created
    arch = demo_arch(ds, args.arch)
    if arch is not None:
        build_model(arch, ds.sample_shape, ds.classes)   # a bad --arch: one line, nothing created
    bits = args.weight_bits
    stages.check_weight_bits(bits)                   # before any work, as the data set and arch
    with run_dir(args.out, what="demo output folder") as out:
        print(f"mamfpga demo: {ds.name} -> MAM training{f' ({arch})' if arch else ''} -> pruning -> "
              f"{f'{bits}-bit weights' if bits else 'int8'} -> compiled for {args.board}, into {out}/")
        return 0 if run_demo(out, args.board, dataset=ds, quiet=args.quiet, arch=arch, weight_bits=bits).ok else 1


def _check_val(val: float) -> None:
    if not 0.0 <= val < 1.0:
        raise UsageError(f"--val is the fraction of the training set held out, in [0, 1), not {val}")


def _save_with_log(model, meta, out: Path, history: list) -> str:
    """The model file, and its per-epoch log beside it when there is one; says what it wrote."""
    stages.save_model(model, out, meta)
    if not history:
        return f"saved {out}"
    log_path = stages.write_epochs(history, stages.epochs_path(out))
    return f"saved {out} and its per-epoch log {log_path}"


def cmd_train(args) -> int:
    out = _output_file(args.output, args.force)
    _output_file(stages.epochs_path(out), args.force)          # its log too: refused before any work
    _check_val(args.val)
    init = None
    if args.init is not None:
        init_model, init_meta = stages.load_model(args.init)
        init = (init_model, init_meta, str(args.init))
    ds = stages.load_dataset(args.dataset or (init[1].get("dataset") if init else None) or "digits")
    t = stages.train(ds, mode=args.mode, hidden=_sizes(args.hidden), arch=args.arch, init=init,
                     layers=args.layers.split(",") if args.layers else None,
                     schedule=args.schedule, per=args.per, vc_epochs=args.vc_epochs, epochs=args.epochs, lr=args.lr,
                     batch=args.batch, weight_decay=args.weight_decay, prune_at=args.prune_at, method=args.method,
                     sparsity=args.sparsity, seed=args.seed, weight_bits=args.weight_bits, act_bits=args.act_bits,
                     val=args.val, progress=not args.quiet, log=print)
    print(f"test accuracy {t.accuracy:.4f}; {_save_with_log(t.model, t.meta, out, t.history)}")
    return 0


def cmd_prune(args) -> int:
    out = _output_file(args.output, args.force)
    if args.finetune:
        _output_file(stages.epochs_path(out), args.force)
    _check_val(args.val)
    model, meta = stages.load_model(args.model)
    ds = stages.load_dataset(args.dataset or meta.get("dataset", "digits"))
    p = stages.prune(model, meta, ds, method=args.method, sparsity=args.sparsity, max_drop=args.max_drop,
                     layers=args.layers.split(",") if args.layers else None, rounds=args.rounds,
                     finetune=args.finetune, patience=args.patience, to_mac=args.to_mac, simplify=args.simplify,
                     seed=args.seed, val=args.val, progress=not args.quiet, log=print)
    print(f"test accuracy {p.accuracy:.4f}; {_save_with_log(p.model, p.meta, out, p.history)}")
    return 0


def cmd_plot(args) -> int:
    from mamfpga.sw.experiments import plot_epochs

    if args.output.suffix.lower() != ".png":
        raise UsageError(f"-o names the plot, a .png file, not {args.output}")
    logs = {}
    for path in args.logs:
        label = path.name.removesuffix(".epochs.csv").removesuffix(".csv")
        logs[label if label not in logs else str(path)] = stages.read_epochs(path)
    out = _output_file(args.output, args.force)
    written = plot_epochs(logs, out, title=args.title or "")
    if written is None:
        raise UsageError(PLOTS_HINT)
    print(f"wrote {written} ({len(logs)} log{'s' if len(logs) > 1 else ''}, "
          f"{sum(len(r) for r in logs.values())} epochs)")
    return 0


def cmd_eval(args) -> int:
    model, meta = stages.load_model(args.model)
    ds = stages.load_dataset(args.dataset or meta.get("dataset", "digits"))
    e = stages.evaluate(model, meta, ds)
    f = e["flops"]
    per_layer = {l["name"]: l for l in f["layers"]}
    if args.json:
        print(json.dumps({"accuracy": e["accuracy"], "sparsity": e["sparsity"], "flops": f["flops"],
                          "flops_dense": f["flops_dense"], "flops_saved": f["saved"],
                          "layers": [{**{k: l[k] for k in ("name", "mode", "sparsity")},
                                      **{k: per_layer[l["name"]][k] for k in ("positions", "nnz", "flops",
                                                                                "flops_dense")}}
                                     for l in e["layers"]]}))
        return 0
    print(f"{args.model}: accuracy {e['accuracy']:.4f} on the {ds.name} test set ({len(ds.y_test)} samples)")
    print(f"sparsity {e['sparsity']:.4f} over the pruned layers ({', '.join(e['targets'])})")
    print(f"FLOPs per inference {f['flops']:,} against {f['flops_dense']:,} dense: {f['saved']:.2%} saved "
          "(2 a MAC weight, 3 a MAM weight, at every position of a conv)")
    for l in e["layers"]:
        print(f"  layer {l['name']:<6} {l['mode']:<5} sparsity {l['sparsity']:.4f}  FLOPs "
              f"{per_layer[l['name']]['flops']:,}" + ("" if l["pruned"] else "  (not pruned)"))
    return 0


def cmd_sweep(args) -> int:
    try:
        kept = [float(k) for k in (args.kept or ("0.01" if args.early else "0.1,0.03,0.01,0.003,0.001")).split(",")]
    except ValueError:
        raise UsageError(f"--kept takes fractions like 0.01,0.001, not {args.kept!r}") from None
    if any(not 0 < k <= 1 for k in kept):
        raise UsageError(f"--kept fractions must be in (0, 1], got {args.kept}")
    ds = stages.load_dataset(args.dataset)
    if args.early:
        if len(kept) != 1 or args.mam_model or args.mac_model:
            raise UsageError("--early trains its own MAM network and prunes it to one --kept fraction")
        method = args.methods or "gmp"
        with run_dir(args.out, what="sweep output folder") as out:
            s = stages.sweep_early(ds, out, kept=kept[0], method=method, finetune=args.finetune,
                                   hidden=_sizes(args.hidden), arch=args.arch, epochs=args.epochs,
                                   vc_epochs=args.vc_epochs, weight_decay=args.weight_decay,
                                   progress=not args.quiet, log=print)
        _show(["", *s.table, "", f"wrote {s.csv} and {s.plot}"])
        return 0
    models = {mode: stages.load_model(path)[0] for mode, path in (("mac", args.mac_model), ("mam", args.mam_model))
              if path is not None}
    with run_dir(args.out, what="sweep output folder") as out:
        s = stages.sweep(ds, out, models=models, methods=args.methods.split(",") if args.methods else None,
                         kept=kept, finetune=args.finetune, hidden=_sizes(args.hidden), arch=args.arch,
                         epochs=args.epochs, vc_epochs=args.vc_epochs, weight_decay=args.weight_decay,
                         progress=not args.quiet)
    _show(["", *s.table, "", f"wrote {s.csv} and {s.plot}"])
    return 0


def _calibration(args):
    """(calibration inputs or None, (test x, test y) or None) from --calib / --test / --labels."""
    calib = test = None
    if args.calib is not None:
        if args.calib in DATASETS or args.calib.endswith(".npz"):
            ds = stages.load_dataset(args.calib)
            calib, test = ds.x_train, (ds.x_test, ds.y_test)
        else:
            calib = _npy(Path(args.calib), "calibration data")
    if args.test is not None:
        test = (_npy(args.test, "test inputs"), _npy(args.labels, "test labels") if args.labels else None)
    return calib, test


def _quantize_qonnx(args, out: Path) -> int:
    """A QONNX model: the integer network its own scales define; --calib only measures."""
    qnet, report = stages.import_quantized(args.model, args.mult_bits)
    calib, test = _calibration(args)
    measured = qonnx_io.exactness(qnet, report, calib) if calib is not None else None
    test_acc = (float((golden.classify(golden.run(qnet, test[0])) == test[1]).mean())
                if test is not None and test[1] is not None else None)
    stages.save_qnet(qnet, out)
    bits = sorted({l.weight_bits for l in qnet.layers if l.weight_bits})
    kinds = [l.kind if l.kind == "maxpool2d" else f"{'' if l.kind == 'dense' else l.kind + ' '}{l.mode}"
             for l in qnet.layers]
    print(f"imported QONNX: {len(qnet.layers)} layers ({', '.join(kinds)}), {sum(l.nnz for l in qnet.layers)} "
          f"nonzero weights of {'/'.join(map(str, bits))} bits, the model's own scales (input_scale "
          f"{qnet.input_scale:.6g}, output_scale {qnet.output_scale:.6g}); saved {out}")
    _show(report.lines())
    if measured is not None:
        e = measured
        print(f"on {len(calib)} calibration samples: {e.differ} of {e.total} layer outputs differ from the model's "
              f"exact requantization (its rounding, the float ratio)"
              f"{f', by at most {e.worst:.0f} step' if e.differ else ''}")
    if test_acc is not None:
        print(f"accuracy on {len(test[1])} test samples: quantized {test_acc:.4f}")
    return 0


def cmd_quantize(args) -> int:
    out = _output_file(args.output, args.force)
    if stages.is_qonnx_file(args.model):
        return _quantize_qonnx(args, out)
    if args.mult_bits is not None:
        raise UsageError(f"{args.model}: --mult-bits is for a QONNX model (its own float scales); mamfpga's "
                         "own quantization uses 16-bit mults")
    if args.calib is None:
        raise UsageError(f"{args.model}: --calib is needed: the model carries no quantization of its own "
                         "(only a QONNX model does)")
    net, meta = stages.load_float_network(args.model)
    calib, test = _calibration(args)
    bits = (meta or {}).get("weight_bits")
    act_bits, act_ranges = (meta or {}).get("act_bits"), (meta or {}).get("act_ranges")
    q = stages.quantize(net, calib, simplify_first=not args.no_simplify, weight_bits=bits, act_bits=act_bits,
                        act_ranges=act_ranges)
    if q.simplified is not None:
        print(f"simplified: {q.simplified.summary()}")
    stages.save_qnet(q.qnet, out)
    kinds = [l.kind if l.kind == "maxpool2d" else f"{'' if l.kind == 'dense' else l.kind + ' '}{l.mode}"
             for l in q.qnet.layers]
    print(f"quantized {len(q.qnet.layers)} layers ({', '.join(kinds)}), "
          f"{sum(l.nnz for l in q.qnet.layers)} nonzero {f'{bits}-bit (trained)' if bits else 'int8'} weights"
          f"{f', {act_bits}-bit hidden activations (trained ranges)' if act_bits else ''}; "
          f"input_scale {q.qnet.input_scale:.6g}; saved {out}")
    if test is not None and test[1] is not None:
        f_acc, q_acc = stages.accuracy_float_int8(q, *test)
        print(f"accuracy on {len(test[1])} test samples: float {f_acc:.4f}, quantized {q_acc:.4f} "
              f"({(q_acc - f_acc) * 100:+.2f} points)")
    return 0


def cmd_golden(args) -> int:
    out = _output_file(args.outputs, args.force)
    y = golden.run(stages.load_qnet(args.net), _npy(args.inputs, "inputs"))
    _save_npy(out, y)
    print(f"{len(y)} samples -> {out} (int8 [{len(y)}, {y.shape[1]}])")
    return 0


def _say(quiet: bool):
    return (lambda _m: None) if quiet else (lambda m: print(f"  {m}", flush=True))


def cmd_compile(args) -> int:
    net = stages.load_qnet(args.net)
    if args.board and (args.pes is None or args.lanes is None):
        print(f"choosing the fastest configuration that fits the {args.board} (logic at most "
              f"{stages.LOGIC_MARGIN:.0%} of the device, every other resource to its count) ...", flush=True)
    c = stages.compile_for(net, pes=args.pes, lanes=args.lanes, board=args.board, acc_bits=args.acc_bits,
                           delta_bits=args.delta_bits, split=args.split, log=_say(args.quiet),
                           lane_copies=None if args.act_memory is None else args.act_memory == "copies",
                           pack_rows=None if args.rows is None else args.rows == "shared")
    if c.choice:
        print(c.choice.explain())
    build = stages.emit(c, args.output, board=args.board)
    _show(render_compile(stages.Report.load(build).compile, board=args.board))
    print(f"wrote {build}/accelerator.v (top {stages.TOP_NAME}), manifest.json, report.json and the memory images")
    return 0


def cmd_sim(args) -> int:
    out_file = _output_file(args.outputs, args.force)
    if args.placed or args.board:
        return _sim_placed(args, out_file)
    if args.target.is_dir():
        build = args.target
        program, _ = stages.load(build)
    else:
        net = stages.load_qnet(args.target)
        c = stages.compile_for(net, pes=args.pes, lanes=args.lanes)
        build = stages.emit(c, args.build or Path("build") / f"sim-{args.target.stem}-p{args.pes}l{args.lanes}")
        program = c.program
        print(f"compiled {args.target} for P={args.pes}, L={args.lanes} into {build}")
    res = stages.cosimulate(program, build, _npy(args.inputs, "inputs"), simulator=args.simulator, waves=args.waves)
    _save_npy(out_file, res.outputs)
    report = stages.Report.load(build)
    _show(render_sim(report.sim, program.cycles_model))
    for k, (l, c) in enumerate(zip(program.layers, res.layer_cycles)):
        print(f"  layer {k}: {c} cycles (model {l.cycles_model}, bound {l.cycles_bound})")
    if res.sim.waves:
        print(f"waves: {res.sim.waves}")
    print(f"wrote {out_file} and {Path(build) / 'report.json'}")
    if not res.ok:
        m = res.first_mismatch
        where = (f"the compiled program already differs from the golden model at layer {m['program_layer']}"
                 if m["program_layer"] is not None else "the compiled program is right, so the RTL departs from it")
        print(f"MISMATCH: first at sample {m['sample']}, output neuron {m['neuron']}: got {m['got']}, expected "
              f"{m['expected']}; the RTL's first wrong layer is layer {m['layer']} ({where})", file=sys.stderr)
        return 1
    if report.sim.cycles_sim != [program.cycles_model]:
        print(f"CYCLES: measured {report.sim.cycles_sim}, the model says {program.cycles_model}", file=sys.stderr)
        return 1
    return 0


def _sim_placed(args, out_file: Path) -> int:
    if not (args.placed and args.board):
        raise UsageError("--placed and --board go together: mamfpga sim BUILD --board NAME --placed ...")
    if not args.target.is_dir():
        raise UsageError(f"{args.target}: --placed simulates a build folder's board design, not a network file")
    program, _ = stages.load(args.target)
    fig, res = stages.simulate_placed(program, args.target, args.board, _npy(args.inputs, "inputs"))
    _save_npy(out_file, res.outputs)
    _show(render_placed_sim(fig))
    print(f"wrote {out_file} and {args.target / 'report.json'}")
    if fig.mismatches:
        bad = np.argwhere((res.outputs != res.expected).any(axis=1) | ~res.answered)
        s = int(bad[0][0])
        print(f"MISMATCH: {fig.mismatches} of {fig.samples} samples; the first, sample {s}: "
              + (f"got {res.outputs[s].tolist()}, expected {res.expected[s].tolist()}" if res.answered[s]
                 else "no answer accepted"), file=sys.stderr)
        return 1
    if fig.cycles_placed != [fig.cycles_model] or fig.protocol_problems:
        print(f"the placed design counted {fig.cycles_placed} cycles (model {fig.cycles_model})"
              + "".join(f"; {p}" for p in fig.protocol_problems), file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    program, report = stages.load(args.build)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"{args.build}:")
    _show(render(report))
    return 0


def cmd_synth(args) -> int:
    stages.load(args.build)                      # a build folder, its program compiling as recorded
    syn = stages.synthesize(args.build, args.board, bitstream=args.bitstream, clock_mhz=args.clock, baud=args.baud,
                            seed=args.seed, seeds=args.seeds)
    if syn.export_only:
        return 0
    _show(render_synth(syn))
    if syn.bitstream:
        print(f"load it with: {stages.get_board(args.board).programmer.replace('BUILD', str(args.build))}")
    print(f"wrote {args.build / 'report.json'}")
    if not syn.timing_met:
        print(f"mamfpga synth: timing not met (Fmax {syn.fmax_mhz:.1f} MHz below the {syn.clock['mhz']:g} MHz "
              f"clock); no bitstream. Try --clock {int(syn.fmax_mhz)}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args) -> int:
    program, _ = stages.load(args.build)
    x, labels = _inputs(args.inputs, args.labels)
    out_file = _output_file(args.outputs, args.force) if args.outputs else None
    run = stages.run_on_board(program, args.build, args.port, x, labels=labels, baud=args.baud, timeout=args.timeout,
                              limit=args.limit)
    if out_file is not None:
        _save_npy(out_file, run.outputs)
    _show(render_board_run(run.figures))
    m = run.figures.first_mismatch
    if m:
        print(f"MISMATCH: first at sample {m['sample']}, output {m['output']}: board {m['got']}, golden "
              f"{m['expected']}", file=sys.stderr)
        return 1
    if not run.ok:
        print(f"CYCLES: the board counted {run.figures.cycles_board}, the model says {program.cycles_model}",
              file=sys.stderr)
        return 1
    return 0


def cmd_sweep_hw(args) -> int:
    from mamfpga import sweep_hw

    net = stages.load_qnet(args.net)
    boards, pes, lanes = [b.strip() for b in args.boards.split(",")], _ints(args.pes, "--pes"), _ints(args.lanes, "--lanes")
    accs, deltas = _ints(args.acc_bits, "--acc-bits", True), _ints(args.delta_bits, "--delta-bits", True)
    pts = sweep_hw.points(boards, pes, lanes, accs, deltas, [m.strip() for m in args.act_memory.split(",")])
    x = golden.prepare_inputs(net, _inputs(args.inputs)[0])[:args.samples]
    baseline = sweep_hw.read_csv(args.baseline) if args.baseline is not None else None
    where = f"the Dask cluster at {args.scheduler}" if args.scheduler else f"{args.jobs} local processes"
    with run_dir(args.output, what="sweep-hw output folder") as out:
        print(f"sweep-hw: {len(pts)} points ({len(boards)} boards x P {pes} x L {lanes} x acc {args.acc_bits} x "
              f"delta {args.delta_bits}), {len(x)} samples each, on {where}")
        print(sweep_hw.HEADER)
        res = sweep_hw.sweep(pts, args.net, x, out, synth=not args.no_synth, jobs=args.jobs,
                             scheduler=args.scheduler, on_row=lambda r: _show(sweep_hw.row_lines(r)),
                             baseline=baseline)
    if baseline is not None:
        lines = sweep_hw.compare(res.rows, baseline)
        print(f"against the baseline {args.baseline}:" + ("" if lines else " no point completed in both"))
        for line in lines:
            print(f"  {line}")
    if res.front:
        print("Pareto front (cycles against LUTs): " + ", ".join(
            f"{r['board']} P{r['pes']}L{r['lanes']} ({r['cycles_model']} cycles, {r['lut']} LUT)" for r in res.front))
    print(f"wrote {', '.join(map(str, res.written))}")
    return 0 if all(r["status"] in ("ok", "does not fit") for r in res.rows) else 1


# --------------------------------------------------------------------------- the parser

def build_parser() -> argparse.ArgumentParser:
    from mamfpga.sw.train import DEFAULT_HIDDEN, TrainConfig

    tc, hidden = TrainConfig(), ",".join(map(str, DEFAULT_HIDDEN))
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="no progress bars or lines")
    output = argparse.ArgumentParser(add_help=False)             # a file mamfpga writes
    output.add_argument("-o", "--output", type=Path, required=True)
    output.add_argument("--force", action="store_true", help="overwrite the output file")
    training = argparse.ArgumentParser(add_help=False)           # what shapes a trained network
    training.add_argument("--hidden", help=f"MLP hidden layer sizes (default {hidden})")
    training.add_argument("--arch", help='layers before the classifier instead, e.g. "conv8k3,pool2,conv16k3,pool2" '
                                         "(conv<C>k<K>[s<S>][p<P>], pool<K>[s<S>], fc<M>)")
    training.add_argument("--epochs", type=int, default=tc.epochs)
    training.add_argument("--vc-epochs", type=int, default=tc.vc_epochs, help="Q: epochs for beta to reach 0")
    training.add_argument("--weight-decay", type=float, default=1e-4,
                          help="L2 weight decay (default 1e-4: unselected MAM weights decay, so magnitude pruning works)")
    p = argparse.ArgumentParser(prog="mamfpga", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name, func, help, *parents):
        d = sub.add_parser(name, help=help, parents=[quiet, *parents])
        d.set_defaults(func=func)
        return d

    verb("doctor", cmd_doctor, "which tools are present, and how to get the rest")
    d = verb("demo", cmd_demo, "the whole flow on the built-in default")
    d.add_argument("--out", default="build/demo", type=Path, help="output folder (default build/demo)")
    d.add_argument("--board", default="icebreaker", help="target board (default icebreaker)")
    d.add_argument("--dataset", default="digits", help=DATASET_HELP)
    d.add_argument("--arch", help='the network before the classifier (default: the 1024-1024 MLP; on mnist5k '
                                  'the CNN "conv8k3,pool2,conv16k3,pool2")')
    d.add_argument("--weight-bits", type=int, help="train and fine-tune quantization-aware with B-bit weights (2-8)")

    d = verb("train", cmd_train, "train an MLP or a CNN (MAM layers with vanishing contributions, or MAC)",
             training, output)
    d.add_argument("--dataset", help="digits, mnist5k, or DATA.npz (x_train, y_train, x_test, y_test); default: "
                                     "digits, or the --init model's")
    d.add_argument("--mode", choices=["mac", "mam"], default="mam")
    d.add_argument("--init", type=Path, help="start from this trained model (MAC -> MAM: with --mode mam its "
                                             "--layers become MAM with vanishing contributions)")
    d.add_argument("--layers", help="with --init: comma-separated layers to turn into MAM (default: every hidden "
                                    "linear and conv layer)")
    d.add_argument("--schedule", choices=["linear", "parabolic", "exponential"], default=tc.schedule)
    d.add_argument("--per", choices=["epoch", "step"], default=tc.per, help="step beta per epoch or per batch")
    d.add_argument("--lr", type=float, default=tc.lr)
    d.add_argument("--batch", type=int, default=tc.batch)
    d.add_argument("--prune-at", type=int, help="prune before convergence, after this epoch (0: at initialisation)")
    d.add_argument("--val", type=float, default=stages.VAL_FRACTION,
                   help=f"fraction of the training set held out for validation (default {stages.VAL_FRACTION})")
    d.add_argument("--method", default="gmp", help="pruning method for --prune-at")
    d.add_argument("--sparsity", type=float, default=0.99, help="sparsity for --prune-at")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--weight-bits", type=int, help="quantization-aware training of B-bit weights (2-8; per row, "
                                                   "straight-through); prune --finetune and quantize keep them")
    d.add_argument("--act-bits", type=int, help="quantization-aware training of B-bit hidden activations (2-8; "
                                                "after a ReLU 0..2^B-1, 8: unsigned bytes; ranges tracked in "
                                                "training, which quantize then uses)")

    d = verb("prune", cmd_prune, "prune a model (one-shot or iterative), optionally MAM -> MAC and fine-tune",
             output)
    d.add_argument("model", type=Path)
    d.add_argument("--method", required=True, help="weights: gmp lmp ggp lgp rp gpsp lpsp lmp-lpsp; whole neurons "
                                                   "and channels: gl1n ll1n gl2n ll2n gapoz lapoz")
    d.add_argument("--sparsity", type=float, help="fraction of the targeted weights removed (of the hidden "
                                                  "neurons and channels, for a structured method)")
    d.add_argument("--max-drop", type=float, help="instead of --sparsity: the highest sparsity whose (fine-tuned) "
                                                  "validation accuracy stays within this of the unpruned model's")
    d.add_argument("--val", type=float, default=stages.VAL_FRACTION,
                   help=f"fraction of the training set held out for validation (default {stages.VAL_FRACTION})")
    d.add_argument("--layers", help="comma-separated layer names (default: the MAM layers)")
    d.add_argument("--finetune", type=int, default=0, help="fine-tuning epochs after pruning")
    d.add_argument("--patience", type=int, help="stop fine-tuning after this many epochs without progress")
    d.add_argument("--rounds", type=int, default=1, help="iterative pruning: prune/fine-tune rounds")
    d.add_argument("--to-mac", action="store_true", help="revert MAM layers to MAC before fine-tuning")
    d.add_argument("--simplify", action="store_true", help="remove dead neurons and unread inputs")
    d.add_argument("--dataset", help="data set for scores and fine-tuning (default: the model's)")
    d.add_argument("--seed", type=int, default=0)

    d = verb("eval", cmd_eval, "accuracy and sparsity of a float model")
    d.add_argument("model", type=Path)
    d.add_argument("--dataset", help="the data set to test on (default: the model's; " + DATASET_HELP + ")")
    d.add_argument("--json", action="store_true")

    d = verb("sweep", cmd_sweep, "accuracy against kept fraction: MAC vs MAM, every method, MAM -> MAC", training)
    d.add_argument("--dataset", default="digits", help=DATASET_HELP)
    d.add_argument("--out", type=Path, default=Path("build/sweep"))
    d.add_argument("--methods", help="comma-separated (default: the eight unstructured ones); structured ones "
                                     "(ll2n: kept is the share of hidden neurons kept) and combinations "
                                     "STRUCTURED+UNSTRUCTURED (ll2n+gmp: half the neurons, then the weights to kept)")
    d.add_argument("--kept", help="kept fractions (default 0.1,0.03,0.01,0.003,0.001; with --early one, 0.01)")
    d.add_argument("--early", action="store_true",
                   help="pruning before convergence: prune 1, 3, 5, 10, 15 epochs after beta reaches 0, linear and "
                        "parabolic schedules, MAM and MAM -> MAC, fine-tuned; accuracy and training FLOPs against "
                        "pruning at convergence (--methods: the one method, default gmp)")
    d.add_argument("--finetune", type=int, default=10, help="fine-tuning epochs per point")
    d.add_argument("--mam-model", type=Path, help="use this trained MAM model instead of training one")
    d.add_argument("--mac-model", type=Path, help="use this trained MAC model instead of training one")

    d = verb("quantize", cmd_quantize, "int8 QuantNetwork (.npz) from a float model (.pt or .onnx) or a "
                                         "QONNX model (its own scales)", output)
    d.add_argument("model", type=Path)
    d.add_argument("--calib", help="calibration inputs: X.npy, or a data set (digits, mnist5k, DATA.npz); "
                                   "needed for a float model, for a QONNX model only to count inexact outputs")
    d.add_argument("--test", type=Path, help="test inputs (.npy) for the accuracy comparison")
    d.add_argument("--labels", type=Path, help="labels (.npy) of --test")
    d.add_argument("--no-simplify", action="store_true", help="keep dead neurons and unread inputs")
    d.add_argument("--mult-bits", type=int, help="QONNX: the requantizers' mult width, 16-24 (default 24: exact "
                                                 "to the model's float32 scales; 16 saves 2 DSPs a requantizer)")

    d = verb("golden", cmd_golden, "run the bit-exact golden model")
    d.add_argument("net", type=Path)
    d.add_argument("--inputs", type=Path, required=True, help="int8 [B, N] (or float, through input_scale)")
    d.add_argument("--outputs", type=Path, required=True)
    d.add_argument("--force", action="store_true")

    d = verb("compile", cmd_compile, "CSR per PE, memory images, cycle model, Verilog -> BUILD/")
    d.add_argument("net", type=Path)
    d.add_argument("--pes", type=int, help="processing elements P (default: with --board, the fastest that fits; "
                                           "else 4)")
    d.add_argument("--lanes", type=int, help="multiplier lanes per PE L (default: with --board, the fastest that "
                                             "fits; else 2)")
    d.add_argument("--board", help="fit the board (every resource), choosing P and L unless given: "
                   + ", ".join(BOARDS))
    d.add_argument("--acc-bits", type=int, help="accumulator width (default: what the network needs)")
    d.add_argument("--delta-bits", type=int, help="column delta width (default: smallest memory)")
    d.add_argument("--split", choices=["auto", "never", "always"],
                   help="column-split layers (default: where faster; with --board, whichever fits)")
    d.add_argument("--act-memory", choices=["banked", "copies"],
                   help="the activations: one copy per PE banked across its lanes, or a copy per lane "
                        "(faster on short rows, L times the memory); default banked, with --board whichever "
                        "is faster and fits")
    d.add_argument("--rows", choices=["own", "shared"],
                   help="each row in words of its own, or a row's last word lending its free upper half of "
                        "lanes to the next row (fewer words on short rows; split lane trees and a carry). "
                        "Default own; with an ECP5 --board whichever is faster and fits (on an iCE40 they cost "
                        "the demo design clock: tried only when asked)")
    d.add_argument("-o", "--output", type=Path, required=True)

    d = verb("sim", cmd_sim, "co-simulate the generated accelerator against the golden model")
    d.add_argument("target", type=Path, help="net.npz (compiled first) or a BUILD folder")
    d.add_argument("--inputs", type=Path, required=True, help="int8 [B, N] or float (through input_scale)")
    d.add_argument("--outputs", type=Path, required=True)
    d.add_argument("--pes", type=int, default=4)
    d.add_argument("--lanes", type=int, default=2)
    d.add_argument("--build", type=Path, help="where to compile a net.npz (default build/sim-NAME-pPlL)")
    d.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    d.add_argument("--waves", action="store_true", help="write waves (VCD on Verilator, FST on Icarus)")
    d.add_argument("--board", help="with --placed: the board whose bitstream's design to simulate")
    d.add_argument("--placed", action="store_true",
                   help="simulate the placed and routed board design (nextpnr's routed netlist on yosys's cell "
                        "models) behind its UART instead of the RTL; needs mamfpga synth BUILD --board NAME "
                        "--bitstream first")
    d.add_argument("--force", action="store_true", help="overwrite --outputs")

    d = verb("synth", cmd_synth, "board top with UART host link -> yosys -> nextpnr -> bitstream")
    d.add_argument("build", type=Path)
    d.add_argument("--board", required=True, help="one of: " + ", ".join(BOARDS))
    d.add_argument("--bitstream", action="store_true", help="keep the bitstream (only when timing is met)")
    d.add_argument("--clock", type=float, help="sync clock in MHz (default: the board's target, lowered to "
                                               "what place and route reaches)")
    d.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"host link baud rate (default {DEFAULT_BAUD})")
    d.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    d.add_argument("--seeds", type=int, default=SEEDS_PER_CLOCK,
                   help=f"placements tried at one clock, with seeds --seed, --seed + 1 ..., when timing is missed "
                        f"by less than {round((1 - NEAR_MISS) * 100)} %% (default {SEEDS_PER_CLOCK}; 1: the one seed alone)")

    d = verb("run", cmd_run, "run inputs on the board over its serial port, check against the golden model")
    d.add_argument("build", type=Path)
    d.add_argument("--port", required=True, help="serial device (/dev/ttyUSB1) or a pyserial URL")
    d.add_argument("--inputs", type=Path, required=True,
                   help="X.npy (int8, or float through input_scale), or a data set's test set: digits, mnist5k, DATA.npz")
    d.add_argument("--labels", type=Path, help="Y.npy class labels, for accuracy")
    d.add_argument("--outputs", type=Path, help="write the board's outputs (.npy)")
    d.add_argument("--baud", type=int, help="default: the one the build was synthesized for")
    d.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for an answer")
    d.add_argument("--limit", type=int, help="only the first N inputs")
    d.add_argument("--force", action="store_true", help="overwrite --outputs")

    d = verb("plot", cmd_plot, "draw per-epoch logs (train's and prune --finetune's NAME.epochs.csv): accuracy, "
                               "beta, sparsity by epoch", output)
    d.add_argument("logs", type=Path, nargs="+", help="NAME.epochs.csv files")
    d.add_argument("--title")

    d = verb("sweep-hw", cmd_sweep_hw, "design-space exploration: compile + sim + synth per (board, P, L, widths)")
    d.add_argument("net", type=Path, help="net.npz")
    d.add_argument("--boards", default="icebreaker", help="comma-separated (default icebreaker)")
    d.add_argument("--pes", default="1,2,4", help="comma-separated powers of two (default 1,2,4)")
    d.add_argument("--lanes", default="1,2", help="comma-separated powers of two (default 1,2)")
    d.add_argument("--acc-bits", default="auto", help="accumulator widths, or auto (default)")
    d.add_argument("--delta-bits", default="auto", help="column delta widths, or auto (default)")
    d.add_argument("--act-memory", default="banked",
                   help="activation memories, comma-separated: banked (one copy per PE, the default), copies "
                        "(a copy per lane)")
    d.add_argument("--inputs", type=Path, default=Path("digits"),
                   help="X.npy, or a data set's test set: digits (the default), mnist5k, DATA.npz")
    d.add_argument("--samples", type=int, default=50, help="inputs co-simulated per point (default 50)")
    d.add_argument("--jobs", type=int, default=2, help="local worker processes (default 2)")
    d.add_argument("--scheduler", help="run on the Dask cluster whose scheduler is at this address (tcp://host:8786)")
    d.add_argument("--no-synth", action="store_true", help="compile and simulate only")
    d.add_argument("--baseline", type=Path,
                   help="an earlier sweep's sweep_hw.csv (another commit, say): its points drawn beside these in "
                        "pareto.png, and each point both completed compared (cycles, Fmax, inferences/s)")
    d.add_argument("-o", "--output", type=Path, required=True, help="folder for the CSV, the plot, the builds")

    d = verb("report", cmd_report, "what a build folder holds: layers, cycles, memory, co-simulation, board")
    d.add_argument("build", type=Path)
    d.add_argument("--json", action="store_true", help="the report as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    toolchain.activate()
    args = build_parser().parse_args(argv)
    progress.QUIET = args.quiet
    try:
        return args.func(args)
    except MamfpgaError as exc:
        print(f"mamfpga {args.verb}: {exc.label}: {exc}", file=sys.stderr)
        return exc.exit_code
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
