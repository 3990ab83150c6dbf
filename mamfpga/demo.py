"""``mamfpga demo``: the flow on the built-in digits set, as far as it exists today.

train a MAM MLP (vanishing contributions) -> prune the MAM layers (global
magnitude) -> keep MAM or revert to MAC, whichever fine-tunes better ->
simplify and quantize -> compile for the board -> run the compiled memory
images (the functional model of the accelerator) against the golden model on
the whole test set; and the first hardware block, the max/min comparator
tree, through Verilog, lint, Verilator co-simulation and yosys.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

__all__ = ["run_demo", "DEMO_KEPT", "DEMO_PES", "DEMO_LANES"]

DEMO_KEPT = 0.001          # fraction of the MAM layers' weights kept
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
    from mamfpga.hw.maxmin_tree import MaxMinTree
    from mamfpga.hw.verilog import lint, write_verilog
    from mamfpga.outputs import atomic_write_json
    from mamfpga.sim.runner import run_cocotb
    from mamfpga.sw import data, golden, prune
    from mamfpga.sw.compiler import balance, compile_network, write_build
    from mamfpga.sw.mam import to_mac
    from mamfpga.sw.modelio import save_model
    from mamfpga.sw.network import from_torch
    from mamfpga.sw.progsim import run_program
    from mamfpga.sw.qnet import save_qnet
    from mamfpga.sw.quantize import quantize
    from mamfpga.sw.simplify import simplify
    from mamfpga.sw.train import TrainConfig, accuracy, build_mlp, finetune, fit

    steps = Steps(9)
    ds = data.load()
    report: dict = {"board": board, "device": None}

    steps.start("training a MAM MLP 64-1024-1024-10 on digits (beta 1 -> 0 over 20 epochs, 60 epochs)")
    model = build_mlp(ds.features, ds.classes, mode="mam")
    fit(model, ds, TrainConfig(), progress=not quiet)
    dense = accuracy(model, ds.x_test, ds.y_test)
    save_model(model, out / "mam.pt", {"dataset": "digits", "mode": "mam", "accuracy": dense,
                                       "pruned_layers": ["0", "2"]})
    steps.done(f"test accuracy {dense:.4f}")

    steps.start(f"pruning the MAM layers to {DEMO_KEPT:.1%} kept (global magnitude), fine-tuning MAM and MAM->MAC")
    prune.prune_model(model, "gmp", 1.0 - DEMO_KEPT)
    one_shot = accuracy(model, ds.x_test, ds.y_test)
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
    y_golden = golden.run(qnet, ds.x_test)
    q_acc = float((golden.classify(y_golden) == ds.y_test).mean())
    steps.done(f"{simp.summary()}; quantized accuracy {q_acc:.4f} (float {float_acc:.4f})")

    steps.start(f"compiling for {board} (P={DEMO_PES}, L={DEMO_LANES})")
    program = compile_network(qnet, ArchConfig(pes=DEMO_PES, lanes=DEMO_LANES), board=board)
    build = write_build(program, out / "build", board=board)
    nnz = sum(l.nnz for l in program.layers)
    steps.done(f"{nnz} nonzero weights, {program.cycles_per_inference} cycles per inference "
               f"(bound {program.cycle_bound}), {program.memory['bram']} block RAMs, "
               f"{program.memory['weight_bits_per_nnz']:.1f} weight bits per nonzero")

    steps.start(f"running the compiled memory images on all {len(ds.y_test)} test samples against the golden model")
    y_prog = run_program(program, golden.prepare_inputs(qnet, ds.x_test)[:, program.columns])
    mismatches = int((y_prog != y_golden).any(axis=1).sum())
    steps.done(f"{mismatches} mismatching samples")

    width, lanes, vectors = 8, 4, 1000
    steps.start(f"generating the max/min comparator tree (W={width}, L={lanes}) with Amaranth")
    tree = MaxMinTree(width=width, lanes=lanes)
    src = write_verilog(tree, "maxmin_tree", out / "maxmin_tree.v")
    steps.done(f"{src} (latency {tree.latency} cycles)")

    steps.start("linting it with verilator -Wall")
    issues = lint(src)
    steps.done("clean" if not issues else f"{len(issues)} warning(s): {issues[0]}")

    steps.start(f"co-simulating it on Verilator against the Python reference ({vectors} random vectors)")
    res = run_cocotb(verilog_sources=[src], toplevel="maxmin_tree", test_module="mamfpga.sim.tb_maxmin_tree",
                     build_dir=out / "sim_verilator",
                     config={"width": width, "lanes": lanes, "vectors": vectors, "seed": 1})
    steps.done("0 mismatches" if res.ok else f"FAILED: {'; '.join(res.failures)}")

    steps.start("synthesizing it with yosys for iCE40 and ECP5")
    resources = {fam: synth_resources(src, "maxmin_tree", fam) for fam in ("ice40", "ecp5")}
    steps.done(", ".join(f"{f}: {r.lut} LUT / {r.ff} FF" for f, r in resources.items()))

    bal = balance(program)
    report.update({
        "config": {"pes": DEMO_PES, "lanes": DEMO_LANES, "weight_bits": 8, "act_bits": 8,
                   "acc_bits": program.config.acc_bits, "delta_bits": program.config.delta_bits},
        "layers": [{"mode": l.mode, "rows": l.rows, "cols": l.cols, "nnz": l.nnz, "cycle_model": l.cycles,
                    "cycle_bound": l.bound} for l in program.layers],
        "cycle_bound": program.cycle_bound,
        "accuracy": {"dense_mam": dense, "float": float_acc, "quantized": q_acc, "kept": DEMO_KEPT,
                     "chosen": chosen_name.lower()},
        "program_check": {"model": "memory images (mamfpga.sw.progsim)", "samples": len(ds.y_test),
                          "mismatches": mismatches},
        "balance_nnz": bal["nnz"],
        "maxmin_tree": {"sim": {"simulator": "verilator", "samples": vectors, "mismatches": 0 if res.ok else None},
                        "resources": {f: r.as_dict() for f, r in resources.items()}, "lint_warnings": issues},
    })
    atomic_write_json(out / "report.json", report)

    print(f"\n{'float accuracy':<38}{float_acc:.4f}   (dense MAM {dense:.4f})")
    print(f"{'quantized accuracy (golden model)':<38}{q_acc:.4f}")
    print(f"{'kept weights (MAM layers)':<38}{DEMO_KEPT:.1%}; {nnz} nonzero int8 weights after simplification")
    print(f"{'cycles per inference (model)':<38}{program.cycles_per_inference} (bound {program.cycle_bound}, "
          f"P={DEMO_PES} L={DEMO_LANES})")
    print(f"{'program vs golden, 540 samples':<38}{mismatches} mismatches")
    print(f"{'MaxMinTree W8 L4 (Verilator, yosys)':<38}{'pass' if res.ok else 'FAIL'}; "
          f"iCE40 {resources['ice40'].lut} LUT / {resources['ice40'].ff} FF")
    print(f"\nwrote {out}/report.json, {build}/ (manifest and memory images), the models and net.npz")
    print("Not yet in the demo (open issues): the accelerator RTL, its co-simulation, bitstreams.")
    ok = res.ok and not issues and mismatches == 0
    return report, ok

