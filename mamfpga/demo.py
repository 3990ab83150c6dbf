"""``mamfpga demo``: the flow on the built-in digits set, as far as it exists today.

train a MAM MLP (vanishing contributions) -> prune the MAM layers (global
magnitude) -> keep MAM or revert to MAC, whichever fine-tunes better -> prune
the classifier -> simplify and quantize -> compile for the board -> generate
the accelerator's Verilog and lint it -> co-simulate the whole test set on
Verilator against the golden model -> synthesize it with yosys.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

__all__ = ["run_demo", "DEMO_KEPT", "DEMO_PES", "DEMO_LANES"]

DEMO_KEPT = 0.001          # fraction of the MAM layers' weights kept
CLASSIFIER_KEPT = 0.1      # fraction of the classifier's weights kept
DEMO_PES, DEMO_LANES = 2, 1


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


def run_demo(out: Path, board: str, family: str, *, quiet: bool = False) -> tuple[dict, bool]:
    from mamfpga.boards.resources import synth_resources
    from mamfpga.hw.arch import ArchConfig
    from mamfpga.hw.verilog import lint
    from mamfpga.outputs import atomic_write_json
    from mamfpga.sim.cosim import cosimulate
    from mamfpga.sw import data, golden, prune
    from mamfpga.sw.compiler import TOP_NAME, balance, compile_network, write_build
    from mamfpga.sw.mam import to_mac
    from mamfpga.sw.modelio import save_model
    from mamfpga.sw.network import from_torch
    from mamfpga.sw.qnet import save_qnet
    from mamfpga.sw.quantize import quantize
    from mamfpga.sw.simplify import simplify
    from mamfpga.sw.train import TrainConfig, accuracy, build_mlp, finetune, fit

    steps = Steps(7)
    ds = data.load()
    report: dict = {"board": board, "device": None}

    steps.start("training a MAM MLP 64-1024-1024-10 on digits (beta 1 -> 0 over 20 epochs, 60 epochs)")
    model = build_mlp(ds.features, ds.classes, mode="mam")
    fit(model, ds, TrainConfig(), progress=not quiet)
    dense = accuracy(model, ds.x_test, ds.y_test)
    save_model(model, out / "mam.pt", {"dataset": "digits", "mode": "mam", "accuracy": dense,
                                       "pruned_layers": ["0", "2"]})
    steps.done(f"test accuracy {dense:.4f}")

    steps.start(f"pruning the MAM layers to {DEMO_KEPT:.1%} kept (global magnitude), the classifier to "
                f"{CLASSIFIER_KEPT:.0%} (local magnitude), fine-tuning MAM and MAM->MAC")
    prune.prune_model(model, "gmp", 1.0 - DEMO_KEPT)
    one_shot = accuracy(model, ds.x_test, ds.y_test)
    prune.prune_model(model, "lmp", 1.0 - CLASSIFIER_KEPT, layers=["4"])
    as_mam = copy.deepcopy(model)
    mam_acc = finetune(as_mam, ds, epochs=10, progress=False)
    as_mac = to_mac(copy.deepcopy(model))
    mac_acc = finetune(as_mac, ds, epochs=30, progress=False)
    chosen, chosen_name, float_acc = (as_mac, "MAC", mac_acc) if mac_acc >= mam_acc else (as_mam, "MAM", mam_acc)
    save_model(chosen, out / "pruned.pt", {"dataset": "digits", "accuracy": float_acc})
    steps.done(f"one-shot {one_shot:.4f}; fine-tuned MAM {mam_acc:.4f}, MAM->MAC {mac_acc:.4f}: keeping {chosen_name}")

    steps.start("simplifying (dead neurons, unread inputs) and quantizing to int8")
    net, simp = simplify(from_torch(chosen))
    qnet = quantize(net, ds.x_train)
    save_qnet(qnet, out / "net.npz")
    q_acc = float((golden.classify(golden.run(qnet, ds.x_test)) == ds.y_test).mean())
    steps.done(f"{simp.summary()}; quantized accuracy {q_acc:.4f} (float {float_acc:.4f})")

    steps.start(f"compiling for {board} (P={DEMO_PES}, L={DEMO_LANES}) and generating the accelerator")
    program = compile_network(qnet, ArchConfig(pes=DEMO_PES, lanes=DEMO_LANES), board=board)
    build = write_build(program, out / "build", board=board)
    nnz = sum(l.nnz for l in program.layers)
    steps.done(f"{nnz} nonzero weights, {program.cycles_per_inference} cycles per inference (model; bound "
               f"{program.cycle_bound}), {program.memory['bram']} block RAMs, "
               f"{program.memory['weight_bits_per_nnz']:.1f} weight bits per nonzero; {build}/accelerator.v")

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

    steps.start(f"synthesizing the accelerator with yosys for {family}")
    res = synth_resources(build / "accelerator.v", TOP_NAME, family)
    from mamfpga.boards.targets import board_device

    dev = board_device(board)
    steps.done(f"{res.lut} LUT / {dev.lut}, {res.ff} FF, {res.bram} block RAM / {dev.bram}, {res.dsp} DSP")

    bal = balance(program)
    report.update({
        "device": dev.name,
        "config": {"pes": DEMO_PES, "lanes": DEMO_LANES, "weight_bits": 8, "act_bits": 8,
                   "acc_bits": program.config.acc_bits, "delta_bits": program.config.delta_bits},
        "layers": [{"mode": l.mode, "rows": l.rows, "cols": l.cols, "nnz": l.nnz, "cycles": c,
                    "cycle_model": l.cycles, "cycle_bound": l.bound} for l, c in zip(program.layers, cos.layer_cycles)],
        "cycles_per_inference": cycles,
        "cycle_bound": program.cycle_bound,
        "sim": {"simulator": "verilator", "samples": len(ds.y_test), "mismatches": cos.mismatches},
        "resources": {"lut": res.lut, "ff": res.ff, "bram": res.bram, "dsp": res.dsp,
                      "lut_avail": dev.lut, "ff_avail": dev.ff, "bram_avail": dev.bram, "dsp_avail": dev.dsp},
        "accuracy": {"dense_mam": dense, "float": float_acc, "quantized": q_acc, "hardware": hw_acc,
                     "kept": DEMO_KEPT, "classifier_kept": CLASSIFIER_KEPT, "chosen": chosen_name.lower()},
        "balance_nnz": bal["nnz"],
        "lint_warnings": issues,
    })
    atomic_write_json(out / "report.json", report)

    rows = [
        ("accuracy: float / quantized / hardware", f"{float_acc:.4f} / {q_acc:.4f} / {hw_acc:.4f}"),
        ("weights kept", f"{DEMO_KEPT:.1%} of the hidden layers, {CLASSIFIER_KEPT:.0%} of the classifier; "
                         f"{nnz} nonzero after simplification"),
        ("cycles per inference", f"{cycles} simulated = model (bound {program.cycle_bound}), P={DEMO_PES} L={DEMO_LANES}"),
        ("RTL vs golden, 540 samples", f"{cos.mismatches} mismatches"),
        (f"{dev.name} (yosys)", f"{res.lut} LUT, {res.ff} FF, {res.bram} BRAM, {res.dsp} DSP"),
    ]
    print()
    for k, v in rows:
        print(f"{k:<40}{v}")
    print(f"\nwrote {out}/report.json, {build}/ (accelerator.v, manifest, memory images), the models and net.npz")
    print("Not yet in the demo (open issues): place and route, Fmax, the bitstream and the UART host link.")
    ok = not issues and cos.mismatches == 0 and set(cos.cycles) == {program.cycles_per_inference}
    return report, ok
