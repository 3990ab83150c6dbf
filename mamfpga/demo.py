"""``mamfpga demo``: the whole flow on a data set (the built-in digits by default).

train a MAM MLP, or a MAM CNN with ``arch`` (the default on mnist5k), with vanishing
contributions -> prune the MAM layers (global
magnitude) -> keep MAM or revert to MAC, whichever fine-tunes better -> prune
the classifier -> simplify and quantize -> compile for the board -> generate
the accelerator's Verilog and lint it -> co-simulate the whole test set on
Verilator against the golden model -> the board top with its UART host link
through yosys and nextpnr to a bitstream -> what the same network, dense and
MAC, would need. One table, report.json and two plots.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from mamfpga import stages
from mamfpga.compile import ArchConfig, compile_network, memory_use
from mamfpga.compile.device import DEVICES
from mamfpga.hw.verilog import lint
from mamfpga.outputs import PLOTS_HINT, pyplot, save_figure
from mamfpga.report import DemoFigures, Report, render_demo
from mamfpga.sw import golden, prune
from mamfpga.sw.flops import flops
from mamfpga.sw.mam import to_mac
from mamfpga.sw.network import from_torch
from mamfpga.sw.train import accuracy, finetune

__all__ = ["run_demo", "DemoResult", "DEMO_KEPT", "train_dense", "prune_and_finetune", "demo_network"]

DEMO_KEPT = 0.001          # fraction of the MAM layers' weights kept (an MLP's)
CNN_KEPT = 0.1             # a CNN's: its MAM conv layers have few weights to begin with
CLASSIFIER_KEPT = 0.1      # fraction of the classifier's weights kept (an MLP's)
CNN_CLASSIFIER_KEPT = 0.25  # a CNN's: its classifier holds most of its weights (0.928 at 10 %, 0.950 at 25 %)
#: the network a demo trains on a data set when no --arch is given (else the 1024-1024 MLP)
DEMO_ARCH = {"mnist5k": "conv8k3,pool2,conv16k3,pool2"}
CURVE_KEPT = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)


class Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int):
        self.total, self.n = total, 0

    def start(self, what: str):
        self.n += 1
        self._t = time.monotonic()
        print(f"[{self.n}/{self.total}] {what} ...", flush=True)

    def done(self, result: str):
        print(f"      {result} ({time.monotonic() - self._t:.1f} s)", flush=True)


def train_dense(ds, *, hidden=(1024, 1024), arch: str | None = None, seed: int = 0, progress: bool = False,
                weight_bits: int | None = None):
    """Step 1: the dense MAM MLP, or the network of ``arch``, vanishing contributions (training
    seed ``seed``; quantization-aware with ``weight_bits``), on the whole training set: the demo
    chooses nothing on a validation split and keeps no per-epoch log."""
    return stages.train(ds, mode="mam", hidden=None if arch else hidden, arch=arch, seed=seed, progress=progress,
                        weight_bits=weight_bits, val=0.0, epoch_log=False, log=lambda _m: None).model


def prune_and_finetune(model, ds, *, kept: float = DEMO_KEPT, classifier_kept: float = CLASSIFIER_KEPT,
                       weight_bits: int | None = None) -> dict:
    """Step 2 (in place on ``model``): prune the MAM layers (global magnitude) and the
    classifier (local magnitude), fine-tune as MAM and as MAC (on ``weight_bits`` grids), keep
    the better."""
    classifier = str(len(model) - 1)
    prune.prune_model(model, "gmp", 1.0 - kept)
    one_shot = accuracy(model, ds.x_test, ds.y_test)
    prune.prune_model(model, "lmp", 1.0 - classifier_kept, layers=[classifier])
    as_mam = copy.deepcopy(model)
    mam_acc = finetune(as_mam, ds, epochs=10, progress=False, weight_bits=weight_bits)
    as_mac = to_mac(copy.deepcopy(model))
    mac_acc = finetune(as_mac, ds, epochs=30, progress=False, weight_bits=weight_bits)
    chosen, name, acc = (as_mac, "MAC", mac_acc) if mac_acc >= mam_acc else (as_mam, "MAM", mam_acc)
    return {"model": chosen, "name": name, "accuracy": acc, "one_shot": one_shot, "mam_acc": mam_acc,
            "mac_acc": mac_acc}


def pruning_of(arch: str | None) -> tuple[float, float]:
    """The fractions the demo keeps of the MAM layers' weights and of the classifier's: an
    MLP's, or a CNN's (``arch`` with a conv layer)."""
    return (CNN_KEPT, CNN_CLASSIFIER_KEPT) if arch and "conv" in arch else (DEMO_KEPT, CLASSIFIER_KEPT)


def demo_network(ds, *, seed: int = 0, classifier_kept: float | None = None, hidden=(1024, 1024),
                 arch: str | None = None):
    """Steps 1-3 without the demo's printing: the int8 QuantNetwork the demo builds hardware for,
    for a training seed and a perturbation (the robustness run, ``scripts/robustness.py``), the
    MLP or the network of ``arch`` (pruned as the demo prunes it)."""
    model = train_dense(ds, hidden=hidden, arch=arch, seed=seed)
    kept, default_classifier = pruning_of(arch)
    pr = prune_and_finetune(model, ds, kept=kept,
                            classifier_kept=default_classifier if classifier_kept is None else classifier_kept)
    return stages.quantize(from_torch(pr["model"]), ds.x_train).qnet


@dataclass
class DemoResult:
    report: Report
    ok: bool


def demo_arch(ds, arch: str | None) -> str | None:
    """The network the demo trains on ``ds``: ``arch``, else the data set's default CNN, else
    None (the MLP)."""
    return arch if arch is not None else DEMO_ARCH.get(ds.name)


def run_demo(out: Path, board: str, *, dataset="digits", quiet: bool = False, arch: str | None = None,
             weight_bits: int | None = None) -> DemoResult:
    """The whole flow on ``dataset`` (a name, a DATA.npz path, or a loaded Dataset); the MLP, or
    the network of ``arch`` (the data set's default CNN if it has one); with ``weight_bits``,
    trained and fine-tuned quantization-aware on weights that narrow."""
    steps = Steps(8)
    ds = stages.load_dataset(dataset) if isinstance(dataset, str) else dataset
    brd = stages.get_board(board)
    dev = DEVICES[brd.device]
    arch = demo_arch(ds, arch)
    kept, classifier_kept = pruning_of(arch)

    what = (f"network {'x'.join(map(str, ds.sample_shape))} -> {arch} -> fc{ds.classes}" if arch
            else f"MLP {ds.features}-1024-1024-{ds.classes}")
    steps.start(f"training a MAM {what} on {ds.name} (beta 1 -> 0 over 20 epochs, 60 epochs"
                f"{f', {weight_bits}-bit weights' if weight_bits else ''})")
    model = train_dense(ds, arch=arch, progress=not quiet, weight_bits=weight_bits)
    dense_acc = accuracy(model, ds.x_test, ds.y_test)
    stages.save_model(model, out / "mam.pt", {"dataset": ds.name, "mode": "mam", "accuracy": dense_acc,
                                              "pruned_layers": [n for n, _ in prune.prunable_layers(model)]})
    dense_model = copy.deepcopy(model)
    steps.done(f"test accuracy {dense_acc:.4f}")

    steps.start(f"pruning the MAM layers to {kept:.1%} kept (global magnitude), the classifier to "
                f"{classifier_kept:.0%} (local magnitude), fine-tuning MAM and MAM->MAC")
    curve = []
    for share in CURVE_KEPT:                    # one-shot accuracy against sparsity, for the plot
        trial = copy.deepcopy(dense_model)
        prune.prune_model(trial, "gmp", 1.0 - share)
        curve.append({"kept": share, "accuracy": accuracy(trial, ds.x_test, ds.y_test)})
    pr = prune_and_finetune(model, ds, kept=kept, classifier_kept=classifier_kept, weight_bits=weight_bits)
    chosen, chosen_name, float_acc = pr["model"], pr["name"], pr["accuracy"]
    stages.save_model(chosen, out / "pruned.pt", {"dataset": ds.name, "accuracy": float_acc})
    steps.done(f"one-shot {pr['one_shot']:.4f}; fine-tuned MAM {pr['mam_acc']:.4f}, MAM->MAC {pr['mac_acc']:.4f}: "
               f"keeping {chosen_name}")

    steps.start("simplifying (dead neurons, unread inputs) and quantizing to "
                + (f"{weight_bits}-bit weights (the trained scales), int8 activations" if weight_bits else "int8"))
    q = stages.quantize(from_torch(chosen), ds.x_train, weight_bits=weight_bits)
    qnet = q.qnet
    stages.save_qnet(qnet, out / "net.npz")
    q_acc = float((golden.classify(golden.run(qnet, ds.x_test)) == ds.y_test).mean())
    steps.done(f"{q.simplified.summary()}; quantized accuracy {q_acc:.4f} (float {float_acc:.4f})")

    steps.start(f"choosing the fastest configuration (P PEs x L lanes) that fits the {board}: compile, "
                "synthesize with the board top, count every resource")
    try:
        done = stages.build_for_board(qnet, board, out / "build", log=sub,
                                      on_build=lambda prog, b: _checks(steps, prog, b, ds))
    except stages.NoFitError as exc:         # nothing fits at all
        steps.done(f"FAILED: {exc}")
        return DemoResult(Report(board, dev.name), False)
    program, syn, build = done.program, done.synth, done.build
    if syn and syn.resources:
        res = syn.resources
        steps.done(f"{res['lut']}/{dev.lut} LUT, {res['ff']} FF, {res['bram']}/{dev.bram} BRAM, {res['dsp']} DSP; "
                   f"Fmax {syn.fmax_mhz:.1f} MHz, clock {syn.clock['mhz']:g} MHz"
                   + (f"; {syn.bitstream}" if syn.bitstream else "; timing NOT met, no bitstream"))
    else:
        steps.done(f"exported for the vendor's tools: {syn.export_only}" if syn and syn.export_only
                   else f"FAILED: {done.error}")
    issues, cos, hw_acc = (done.checks[k] for k in ("lint", "cos", "hw_acc"))
    nnz = sum(l.nnz for l in program.layers)

    steps.start("the same network dense and MAC: what would it need?")
    cfg = program.config
    total_weights = sum(int(m.weight.numel()) for m in dense_model.modules()
                        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)))
    dense_q = stages.quantize(from_torch(to_mac(copy.deepcopy(dense_model))), ds.x_train,
                              simplify_first=False).qnet
    dense_prog = compile_network(dense_q, ArchConfig(pes=cfg.pes, lanes=cfg.lanes))
    dense = {
        # stored as a plain dense int8 matrix: 8 bits a weight, no structure
        "weights": total_weights, "bits": 8 * total_weights,
        "bram": -(-8 * total_weights // dev.bram_bits), "bram_avail": dev.bram,
        # through the compiler: int8 rounding zeroes the small weights, which CSR then skips
        "nnz_after_int8": int(sum(l.nnz for l in dense_prog.layers)),
        "bram_compiled": memory_use(dense_prog, dev.family)["bram"],
        "cycles_model": dense_prog.cycles_model,
        "accuracy": float((golden.classify(golden.run(dense_q, ds.x_test)) == ds.y_test).mean()),
    }
    dense["fits"] = min(dense["bram"], dense["bram_compiled"]) <= dev.bram
    size = f"{dense['bits'] / 2**20:.1f} Mbit" if dense["bits"] >= 2**20 else f"{dense['bits'] / 2**10:.1f} Kbit"
    steps.done(f"{total_weights} int8 weights = {size}: {dense['bram']} block RAMs, the "
               f"{dev.name} has {dev.bram} ({dev.bram * dev.bram_bits // 1024} Kbit); compiled, with the "
               f"{dense['nnz_after_int8']} weights int8 rounding leaves nonzero, still {dense['bram_compiled']}; "
               f"{dense['cycles_model']} cycles per inference at P={cfg.pes}, L={cfg.lanes}")

    report = Report.load(build)
    report.demo = DemoFigures(
        accuracy={"dense_mam": dense_acc, "float": float_acc, "quantized": q_acc, "hardware": hw_acc,
                  "kept": kept, "classifier_kept": classifier_kept, "chosen": chosen_name.lower()},
        sparsity=1.0 - nnz / total_weights, nnz=nnz, weights=total_weights, one_shot_curve=curve, dense_mac=dense,
        fallbacks=done.fallbacks, lint_warnings=issues,
        flops={k: v for k, v in flops(chosen, (ds.features,)).items() if k != "layers"})
    report.save(build, out)                      # `mamfpga report BUILD` shows it too
    plots = [_plot_accuracy(curve, report.demo.accuracy, out / "accuracy_vs_sparsity.png", ds.name)]
    if syn and syn.resources:
        plots.append(_plot_resources(syn.resources, dense, dev, out / "resources.png"))
    plots = [str(p) for p in plots if p] or [f"no plots ({PLOTS_HINT})"]
    print()
    print("\n".join(render_demo(report.demo, report)))
    print(f"\nwrote {out}/report.json, {', '.join(str(p) for p in plots)}, {build}/ (accelerator, board-{board}/),"
          " the models and net.npz")
    if syn and syn.bitstream:
        print(f"on a board: load it with {brd.programmer.replace('BUILD', str(build))}, then\n"
              f"  mamfpga run {build} --port <{brd.serial}> --inputs {ds.name}")
    ok = not issues and cos.mismatches == 0 and set(cos.cycles) == {program.cycles_model} and done.ok
    return DemoResult(report, ok)


def sub(msg: str):
    print(f"      {msg}", flush=True)


def _checks(steps: Steps, program, build: Path, ds) -> dict:
    """What the demo checks of each build before its board build: lint, co-simulation."""
    nnz = sum(l.nnz for l in program.layers)
    cfg = program.config
    if steps.n == 7:        # a fallback: the previous configuration's board build gave no bitstream
        steps.done("no bitstream (above); back to step 4 with the next configuration that fits")
        steps.n = 3
        steps.start(f"compiling the next configuration, P={cfg.pes} L={cfg.lanes}")
    sub(f"P={cfg.pes}, L={cfg.lanes}: {nnz} nonzero weights, {program.cycles_model} cycles per "
        f"inference (model; bound {program.cycles_bound}), {program.memory['bram']} block RAMs in the accelerator, "
        f"{program.memory['weight_bits_per_nnz']:.1f} weight bits per nonzero; {build}/accelerator.v")
    steps.done("compiled")

    steps.start("linting the accelerator with verilator -Wall")
    issues = lint(build / "accelerator.v")
    steps.done("clean (Amaranth backend idioms waived, see mamfpga.hw.verilog)" if not issues
               else f"{len(issues)} warning(s): {issues[0]}")

    steps.start(f"co-simulating all {len(ds.y_test)} test samples on Verilator against the golden model")
    cos = stages.cosimulate(program, build, ds.x_test)
    hw_acc = float((golden.classify(cos.outputs) == ds.y_test).mean())
    steps.done(f"{cos.mismatches} mismatching samples; {max(cos.cycles)} cycles per inference "
               f"({'equal to' if set(cos.cycles) == {program.cycles_model} else 'DIFFERENT from'} the model)")
    steps.start("building the board top (UART host link, PLL): yosys, fit check, nextpnr, bitstream")
    return {"lint": issues, "cos": cos, "hw_acc": hw_acc}


def _plot_accuracy(curve, acc, path, name: str = "digits") -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c["kept"] for c in curve], [c["accuracy"] for c in curve], "o-", ms=3,
            label="MAM, global magnitude, one-shot")
    ax.axhline(acc["dense_mam"], color="grey", ls=":", label=f"dense MAM {acc['dense_mam']:.3f}")
    ax.plot([acc["kept"]], [acc["float"]], "s", label=f"fine-tuned {acc['chosen'].upper()} (float)")
    ax.plot([acc["kept"]], [acc["hardware"]], "*", ms=10, label=f"int8 on the RTL {acc['hardware']:.3f}")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("fraction of hidden-layer weights kept")
    ax.set_ylabel(f"{name} test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


def _plot_resources(res, dense, dev, path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    names = ["LUT", "FF", "BRAM", "DSP"]
    used = [res["lut"] / dev.lut, res["ff"] / dev.ff, res["bram"] / dev.bram, res["dsp"] / dev.dsp]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(names, [100 * u for u in used], label="pruned network, placed")
    ax.bar(["BRAM\n(dense MAC)"], [100 * dense["bram"] / dev.bram], color="tab:red",
           label="same network dense, MAC (int8 weights)")
    ax.axhline(100, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel(f"% of the {dev.name}")
    for b, u in zip(bars, used):
        ax.annotate(f"{100 * u:.0f}%", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
