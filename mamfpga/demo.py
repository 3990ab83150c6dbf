"""``mamfpga demo``: the whole flow on the built-in digits set.

train a MAM MLP (vanishing contributions) -> prune the MAM layers (global
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
from pathlib import Path

__all__ = ["run_demo", "DEMO_KEPT"]

DEMO_KEPT = 0.001          # fraction of the MAM layers' weights kept
CLASSIFIER_KEPT = 0.1      # fraction of the classifier's weights kept
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


def train_dense(ds, *, hidden=(1024, 1024), seed: int = 0, progress: bool = False):
    """Step 1: the dense MAM MLP, vanishing contributions (training seed ``seed``)."""
    from mamfpga.sw.train import TrainConfig, build_mlp, fit

    model = build_mlp(ds.features, ds.classes, hidden=tuple(hidden), mode="mam", seed=seed)
    fit(model, ds, TrainConfig(seed=seed), progress=progress)
    return model


def prune_and_finetune(model, ds, *, kept: float = DEMO_KEPT, classifier_kept: float = CLASSIFIER_KEPT) -> dict:
    """Step 2 (in place on ``model``): prune the MAM layers (global magnitude) and the
    classifier (local magnitude), fine-tune as MAM and as MAC, keep the better."""
    from mamfpga.sw import prune
    from mamfpga.sw.mam import to_mac
    from mamfpga.sw.train import accuracy, finetune

    classifier = str(len(model) - 1)
    prune.prune_model(model, "gmp", 1.0 - kept)
    one_shot = accuracy(model, ds.x_test, ds.y_test)
    prune.prune_model(model, "lmp", 1.0 - classifier_kept, layers=[classifier])
    as_mam = copy.deepcopy(model)
    mam_acc = finetune(as_mam, ds, epochs=10, progress=False)
    as_mac = to_mac(copy.deepcopy(model))
    mac_acc = finetune(as_mac, ds, epochs=30, progress=False)
    chosen, name, acc = (as_mac, "MAC", mac_acc) if mac_acc >= mam_acc else (as_mam, "MAM", mam_acc)
    return {"model": chosen, "name": name, "accuracy": acc, "one_shot": one_shot, "mam_acc": mam_acc,
            "mac_acc": mac_acc}


def demo_network(ds, *, seed: int = 0, classifier_kept: float = CLASSIFIER_KEPT, hidden=(1024, 1024)):
    """Steps 1-3 without the demo's printing: the int8 QuantNetwork the demo builds hardware for,
    for a training seed and a perturbation (the robustness run, ``scripts/robustness.py``)."""
    from mamfpga.sw.network import from_torch
    from mamfpga.sw.quantize import quantize
    from mamfpga.sw.simplify import simplify

    model = train_dense(ds, hidden=hidden, seed=seed)
    pr = prune_and_finetune(model, ds, classifier_kept=classifier_kept)
    net, _ = simplify(from_torch(pr["model"]))
    return quantize(net, ds.x_train)


def run_demo(out: Path, board: str, family: str, *, quiet: bool = False) -> tuple[dict, bool]:
    from torch import nn

    from mamfpga.boards.fit import NoFitError
    from mamfpga.boards.flow import SynthError, build_for_board
    from mamfpga.boards.targets import board as board_by_name
    from mamfpga.boards.targets import board_device
    from mamfpga.hw.arch import ArchConfig
    from mamfpga.outputs import atomic_write_json
    from mamfpga.sw import data, golden, prune
    from mamfpga.sw.compiler import balance, compile_network, memory_use
    from mamfpga.sw.mam import to_mac
    from mamfpga.sw.modelio import save_model
    from mamfpga.sw.network import from_torch
    from mamfpga.sw.qnet import save_qnet
    from mamfpga.sw.quantize import quantize
    from mamfpga.sw.simplify import simplify
    from mamfpga.sw.train import accuracy

    steps = Steps(8)
    ds = data.load()
    report: dict = {"board": board, "device": None}

    steps.start("training a MAM MLP 64-1024-1024-10 on digits (beta 1 -> 0 over 20 epochs, 60 epochs)")
    model = train_dense(ds, progress=not quiet)
    dense_acc = accuracy(model, ds.x_test, ds.y_test)
    save_model(model, out / "mam.pt", {"dataset": "digits", "mode": "mam", "accuracy": dense_acc,
                                       "pruned_layers": ["0", "2"]})
    dense_model = copy.deepcopy(model)
    steps.done(f"test accuracy {dense_acc:.4f}")

    steps.start(f"pruning the MAM layers to {DEMO_KEPT:.1%} kept (global magnitude), the classifier to "
                f"{CLASSIFIER_KEPT:.0%} (local magnitude), fine-tuning MAM and MAM->MAC")
    curve = []
    for kept in CURVE_KEPT:                     # one-shot accuracy against sparsity, for the plot
        trial = copy.deepcopy(dense_model)
        prune.prune_model(trial, "gmp", 1.0 - kept)
        curve.append({"kept": kept, "accuracy": accuracy(trial, ds.x_test, ds.y_test)})
    pr = prune_and_finetune(model, ds)
    one_shot, mam_acc, mac_acc = pr["one_shot"], pr["mam_acc"], pr["mac_acc"]
    chosen, chosen_name, float_acc = pr["model"], pr["name"], pr["accuracy"]
    save_model(chosen, out / "pruned.pt", {"dataset": "digits", "accuracy": float_acc})
    steps.done(f"one-shot {one_shot:.4f}; fine-tuned MAM {mam_acc:.4f}, MAM->MAC {mac_acc:.4f}: keeping {chosen_name}")

    steps.start("simplifying (dead neurons, unread inputs) and quantizing to int8")
    net, simp = simplify(from_torch(chosen))
    qnet = quantize(net, ds.x_train)
    save_qnet(qnet, out / "net.npz")
    q_acc = float((golden.classify(golden.run(qnet, ds.x_test)) == ds.y_test).mean())
    steps.done(f"{simp.summary()}; quantized accuracy {q_acc:.4f} (float {float_acc:.4f})")

    brd = board_by_name(board)
    dev = board_device(board)
    steps.start(f"choosing the fastest configuration (P PEs x L lanes) that fits the {board}: compile, "
                "synthesize with the board top, count every resource")
    try:
        flow = build_for_board(qnet, brd, out / "build", on_build=lambda prog, b: _checks(steps, prog, b, ds),
                               log=sub)
    except (NoFitError, SynthError) as exc:       # nothing fits; a candidate would not synthesize
        steps.done(f"FAILED: {exc}")
        return report, False
    program, syn, fallbacks, choice = flow["program"], flow["syn"], flow["fallbacks"], flow["choice"]
    cfg = program.config
    res = syn.get("resources")
    if res:
        steps.done(f"{res['lut']}/{dev.lut} LUT, {res['ff']} FF, {res['bram']}/{dev.bram} BRAM, {res['dsp']} DSP; "
                   f"Fmax {syn['fmax_mhz']:.1f} MHz, clock {syn['clock']['mhz']:g} MHz"
                   + (f"; {syn['bitstream']}" if syn.get("bitstream") else "; timing NOT met, no bitstream"))
    else:
        steps.done(syn.get("export_only") and f"exported for the vendor's tools: {syn['export_only']}"
                   or f"FAILED: {syn.get('error')}")
    build = flow["build"]
    issues, cos, cycles, hw_acc = (flow["checks"][k] for k in ("lint", "cos", "cycles", "hw_acc"))
    nnz = sum(l.nnz for l in program.layers)

    steps.start("the same network dense and MAC: what would it need?")
    total_weights = sum(int(m.weight.numel()) for m in dense_model.modules() if isinstance(m, nn.Linear))
    dense_net = from_torch(to_mac(copy.deepcopy(dense_model)))
    dense_q = quantize(dense_net, ds.x_train)
    dense_prog = compile_network(dense_q, ArchConfig(pes=cfg.pes, lanes=cfg.lanes))
    dense_mem = memory_use(dense_prog, dev.family)
    dense = {
        # stored as a plain dense int8 matrix: 8 bits a weight, no structure
        "weights": total_weights, "bits": 8 * total_weights,
        "bram": -(-8 * total_weights // dev.bram_bits),
        # through the compiler: int8 rounding zeroes the small weights, which CSR then skips
        "nnz_after_int8": int(sum(l.nnz for l in dense_prog.layers)), "bram_compiled": dense_mem["bram"],
        "cycles_per_inference": dense_prog.cycles_per_inference,
        "accuracy": float((golden.classify(golden.run(dense_q, ds.x_test)) == ds.y_test).mean()),
    }
    dense["fits"] = min(dense["bram"], dense["bram_compiled"]) <= dev.bram
    steps.done(f"{total_weights} int8 weights = {dense['bits'] / 2**20:.1f} Mbit: {dense['bram']} block RAMs, the "
               f"{dev.name} has {dev.bram} ({dev.bram * dev.bram_bits // 1024} Kbit); compiled, with the "
               f"{dense['nnz_after_int8']} weights int8 rounding leaves nonzero, still {dense['bram_compiled']}; "
               f"{dense['cycles_per_inference']} cycles per inference at P={cfg.pes}, L={cfg.lanes}")

    bal = balance(program)
    report.update({
        "device": dev.name,
        "config": {"pes": cfg.pes, "lanes": cfg.lanes, "weight_bits": 8, "act_bits": 8,
                   "acc_bits": cfg.acc_bits, "delta_bits": cfg.delta_bits, "split": program.split},
        "choice": choice.record(),
        "fallbacks": fallbacks,
        "layers": [{"mode": l.mode, "rows": l.rows, "cols": l.cols, "nnz": l.nnz, "cycles": c,
                    "cycle_model": l.cycles, "cycle_bound": l.bound} for l, c in zip(program.layers, cos.layer_cycles)],
        "cycles_per_inference": cycles,
        "cycle_bound": program.cycle_bound,
        "sim": {"simulator": "verilator", "samples": len(ds.y_test), "mismatches": cos.mismatches},
        "accuracy": {"dense_mam": dense_acc, "float": float_acc, "quantized": q_acc, "hardware": hw_acc,
                     "kept": DEMO_KEPT, "classifier_kept": CLASSIFIER_KEPT, "chosen": chosen_name.lower()},
        "sparsity": 1.0 - nnz / total_weights,
        "nnz": nnz,
        "one_shot_curve": curve,
        "balance_nnz": bal["nnz"],
        "lint_warnings": issues,
        "dense_mac": dense,
    })
    report.update({k: v for k, v in syn.items() if k not in ("board", "device")})
    atomic_write_json(out / "report.json", report)
    atomic_write_json(build / "report.json", report)          # what `mamfpga report BUILD` shows
    plots = [_plot_accuracy(curve, report, out / "accuracy_vs_sparsity.png")]
    if "resources" in syn:
        plots.append(_plot_resources(report, dense, dev, out / "resources.png"))

    res = syn.get("resources")
    rows = [
        ("accuracy: float / quantized / hardware", f"{float_acc:.4f} / {q_acc:.4f} / {hw_acc:.4f}"
                                                   f"  (dense MAM {dense_acc:.4f})"),
        ("sparsity, nonzero weights", f"{1 - nnz / total_weights:.2%} of {total_weights} weights are zero; {nnz} "
                                      f"nonzero ({DEMO_KEPT:.1%} of the hidden layers kept, "
                                      f"{CLASSIFIER_KEPT:.0%} of the classifier, then simplified)"),
        ("cycles per inference", f"{cycles} simulated "
                                 f"{'=' if set(cos.cycles) == {program.cycles_per_inference} else '!='} model "
                                 f"(bound {program.cycle_bound}), {choice.chosen.label}, chosen to fit"),
        ("RTL vs golden, 540 samples", f"{cos.mismatches} mismatches"),
    ]
    if res:
        clk = syn["clock"]["mhz"]
        rows += [
            ("Fmax (nextpnr)", f"{syn['fmax_mhz']:.1f} MHz; built at {clk:g} MHz"
                               f" ({'timing met' if syn['timing_met'] else 'timing NOT met'})"),
            ("latency, throughput", f"{syn['latency_us']:.1f} us per inference, "
                                    f"{syn['inferences_per_s']:,.0f} inferences/s at {clk:g} MHz"),
            (f"{dev.name} (placed)", f"{res['lut']}/{dev.lut} LUT, {res['ff']}/{dev.ff} FF, "
                                     f"{res['bram']}/{dev.bram} BRAM, {res['dsp']}/{dev.dsp} DSP"),
            ("bitstream", syn.get("bitstream") or "none (timing not met)"),
        ]
    rows.append(("the same network dense and MAC", f"{dense['bram']} BRAM needed ({dense['bram_compiled']} after "
                                                   f"int8 rounding and CSR) of {dev.bram}: "
                                                   f"{'fits' if dense['fits'] else 'does not fit'}"))
    print()
    for k, v in rows:
        print(f"{k:<40}{v}")
    print(f"\nwrote {out}/report.json, {', '.join(str(p) for p in plots)}, {build}/ (accelerator, board-{board}/),"
          " the models and net.npz")
    if syn.get("bitstream"):
        print(f"on a board: load it with {brd.programmer.replace('BUILD', str(build))}, then\n"
              f"  mamfpga run {build} --port <{brd.serial}> --inputs digits")
    ok = (not issues and cos.mismatches == 0 and set(cos.cycles) == {program.cycles_per_inference}
          and bool(syn.get("bitstream") or syn.get("export_only")))
    return report, ok


def sub(msg: str):
    print(f"      {msg}", flush=True)


def _checks(steps: Steps, program, build: Path, ds) -> dict:
    """What the demo checks of each build before its board build: lint, co-simulation."""
    from mamfpga.hw.verilog import lint
    from mamfpga.sim.cosim import cosimulate
    from mamfpga.sw import golden

    nnz = sum(l.nnz for l in program.layers)
    cfg = program.config
    if steps.n == 7:        # a fallback: the previous configuration's board build gave no bitstream
        steps.done("no bitstream (above); back to step 4 with the next configuration that fits")
        steps.n = 3
        steps.start(f"compiling the next configuration, P={cfg.pes} L={cfg.lanes}")
    sub(f"P={cfg.pes}, L={cfg.lanes}: {nnz} nonzero weights, {program.cycles_per_inference} cycles per "
        f"inference (model; bound {program.cycle_bound}), {program.memory['bram']} block RAMs in the accelerator, "
        f"{program.memory['weight_bits_per_nnz']:.1f} weight bits per nonzero; {build}/accelerator.v")
    steps.done("compiled")

    steps.start("linting the accelerator with verilator -Wall")
    issues = lint(build / "accelerator.v")
    steps.done("clean (Amaranth backend idioms waived, see mamfpga.hw.verilog)" if not issues
               else f"{len(issues)} warning(s): {issues[0]}")

    steps.start(f"co-simulating all {len(ds.y_test)} test samples on Verilator against the golden model")
    cos = cosimulate(program, build, ds.x_test, simulator="verilator")
    hw_acc = float((golden.classify(cos.outputs) == ds.y_test).mean())
    cycles = max(cos.cycles)
    steps.done(f"{cos.mismatches} mismatching samples; {cycles} cycles per inference "
               f"({'equal to' if set(cos.cycles) == {program.cycles_per_inference} else 'DIFFERENT from'} the model)")
    steps.start(f"building the board top (UART host link, PLL): yosys, fit check, nextpnr, bitstream")
    return {"lint": issues, "cos": cos, "cycles": cycles, "hw_acc": hw_acc}


def _plot_accuracy(curve, report, path):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mamfpga.outputs import atomic_write_bytes

    acc = report["accuracy"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c["kept"] for c in curve], [c["accuracy"] for c in curve], "o-", ms=3,
            label="MAM, global magnitude, one-shot")
    ax.axhline(acc["dense_mam"], color="grey", ls=":", label=f"dense MAM {acc['dense_mam']:.3f}")
    ax.plot([acc["kept"]], [acc["float"]], "s", label=f"fine-tuned {acc['chosen'].upper()} (float)")
    ax.plot([acc["kept"]], [acc["hardware"]], "*", ms=10, label=f"int8 on the RTL {acc['hardware']:.3f}")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("fraction of hidden-layer weights kept")
    ax.set_ylabel("digits test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _plot_resources(report, dense, dev, path):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mamfpga.outputs import atomic_write_bytes

    res = report["resources"]
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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
