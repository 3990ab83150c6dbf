"""Compiler and accelerator figures in one table: balance, memory bits per nonzero, cycle model /
bound, compile time, and the generated RTL co-simulated on Verilator over the 540-sample test set
(mismatches, simulated cycles, wall time).

Trains the default digits network (MAM, 64-1024-1024-10), prunes it to 0.1 %
kept, reverts to MAC and fine-tunes as the demo does, quantizes, and compiles
it at (P, L) = (2, 1), (4, 2), (8, 2); then times the compilation of a random
3072 x 768 MAM layer at 0.1 % kept, and gives the weight bits per nonzero of the
same network with its weights at 8, 4 and 2 bits. Usage: .venv/bin/python scripts/bench_compile.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

OUT = Path("build/bench")


def main():
    from mamfpga import stages
    from mamfpga.compile.build import balance
    from mamfpga.sw import prune
    from mamfpga.sw.mam import to_mac
    from mamfpga.sw.network import from_torch
    from mamfpga.sw.qnet import QuantLayer, QuantNetwork
    from mamfpga.sw.train import finetune

    ds = stages.load_dataset("digits")
    model = stages.train(ds, mode="mam", progress=False, val=0.0, epoch_log=False, log=lambda _m: None).model
    prune.prune_model(model, "gmp", 0.999)
    to_mac(model)
    finetune(model, ds, epochs=30, progress=False)
    qnet = stages.quantize(from_torch(model), ds.x_train).qnet

    OUT.mkdir(parents=True, exist_ok=True)
    stages.save_qnet(qnet, OUT / "net.npz")
    figures = {"configs": []}
    print(f"digits network after simplification: {[l.weight.shape for l in qnet.layers]}, "
          f"{sum(l.nnz for l in qnet.layers)} nonzeros\n")
    import tempfile

    head = (f"{'P':>3}{'L':>3}{'balance nnz':>13}{'bits/nnz':>10}{'model':>7}{'bound':>7}{'ratio':>7}"
            f"{'compile s':>11}{'sim cycles':>12}{'mismatch':>10}{'sim s':>8}{'kcycle/s':>10}")
    print(head)
    print("-" * len(head))
    for p, l in ((2, 1), (4, 2), (8, 2)):
        t = time.perf_counter()
        prog = stages.compile_for(qnet, pes=p, lanes=l).program
        dt = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            build = stages.emit(prog, Path(tmp) / "b")
            stages.cosimulate(prog, build, ds.x_test[:2])           # builds the simulator
            t = time.perf_counter()
            res = stages.cosimulate(prog, build, ds.x_test)
            st = time.perf_counter() - t
        print(f"{p:>3}{l:>3}{balance(prog)['nnz']:>13.3f}{prog.memory['weight_bits_per_nnz']:>10.1f}"
              f"{prog.cycles_model:>7}{prog.cycles_bound:>7}"
              f"{prog.cycles_model / prog.cycles_bound:>7.3f}{dt:>11.2f}"
              f"{'/'.join(map(str, sorted(set(res.cycles)))):>12}{res.mismatches:>10}{st:>8.1f}"
              f"{sum(res.cycles) / st / 1000:>10.0f}", flush=True)
        figures["configs"].append({"pes": p, "lanes": l, "balance": balance(prog)["nnz"],
                                   "bits_per_nnz": prog.memory["weight_bits_per_nnz"],
                                   "model": prog.cycles_model, "bound": prog.cycles_bound,
                                   "sim_cycles": sorted(set(res.cycles)), "mismatches": res.mismatches,
                                   "sim_seconds": st})
    # narrow weights (issue: QONNX and 2-8-bit weights): the same network's nonzeros rescaled to
    # b bits (none becomes zero), compiled at P=4 L=2; the weight memory stores b bits a weight
    from dataclasses import replace

    print(f"\n{'weight bits':>12}{'stored':>8}{'delta':>7}{'bits/nnz':>10}{'model cycles':>14}")
    figures["narrow"] = []
    n = len(qnet.layers)
    # every layer at 8, 4, 2 bits; then 8-bit first and last layers around 4-bit hidden ones (as
    # FINN-style models are quantized), stored per layer: the 8-bit layers' upper bits in the
    # extension memory
    for widths in ([8] * n, [4] * n, [2] * n, [8] + [4] * (n - 2) + [8]):
        layers = []
        for l, bits in zip(qnet.layers, widths):
            lim = 2 ** (bits - 1) - 1
            w = l.weight.astype(np.int64)
            narrow = np.sign(w) * np.maximum(1, np.rint(np.abs(w) * lim / 127)) * (w != 0)
            layers.append(replace(l, weight=narrow.astype(np.int8)))
        prog = stages.compile_for(QuantNetwork(layers, qnet.input_scale, qnet.output_scale,
                                               input_shape=qnet.input_shape), pes=4, lanes=2).program
        label = str(widths[0]) if len(set(widths)) == 1 else "/".join(map(str, widths))
        stored = (f"{prog.config.low_bits}+{prog.config.weight_bits - prog.config.low_bits}"
                  if prog.config.low_bits else str(prog.config.weight_bits))
        print(f"{label:>12}{stored:>8}{prog.config.delta_bits:>7}"
              f"{prog.memory['weight_bits_per_nnz']:>10.1f}{prog.cycles_model:>14}")
        figures["narrow"].append({"bits": label, "stored": stored,
                                  "bits_per_nnz": prog.memory["weight_bits_per_nnz"]})

    rng = np.random.default_rng(0)
    w = np.zeros((768, 3072), np.int8)
    idx = rng.choice(w.size, size=w.size // 1000, replace=False)
    w.flat[idx] = rng.integers(1, 127, size=len(idx))
    big = QuantNetwork([QuantLayer(w, np.zeros(768, np.int32), "mam", 1, 8, False)])
    t = time.perf_counter()
    stages.compile_for(big, pes=8, lanes=2)
    big_s = time.perf_counter() - t
    print(f"\ncompiling a 3072 x 768 MAM layer at 0.1 % kept ({len(idx)} nonzeros), P=8 L=2: {big_s:.2f} s")
    figures["compile_3072x768_s"] = big_s

    # a million nonzero weights: a dense 1024 x 1024 MAM layer and a 10-row classifier
    from mamfpga.boards import fit
    from mamfpga.compile.device import DEVICES

    w = rng.integers(-127, 128, (1024, 1024), dtype=np.int8)
    w[w == 0] = 1
    dense = QuantNetwork([QuantLayer(w, np.zeros(1024, np.int32), "mam", 1 << 14, 24, True),
                          QuantLayer(np.ones((10, 1024), np.int8), np.zeros(10, np.int32), "mac", 1 << 14, 24, False)])
    nnz = int(sum(l.nnz for l in dense.layers))
    t = time.perf_counter()
    stages.compile_for(dense, pes=4, lanes=2)
    dense_s = time.perf_counter() - t
    t = time.perf_counter()
    refusal = fit.lower_bound_problem(dense, DEVICES["iCE40UP5K"])
    refuse_s = time.perf_counter() - t
    print(f"compiling a dense 1024 x 1024 MAM layer + 10-row classifier ({nnz:,} nonzeros), P=4 L=2: "
          f"{dense_s:.2f} s ({nnz / dense_s:,.0f} weights/s)")
    print(f"refusing it for the iCE40UP5K by the lower bound: {refuse_s * 1000:.0f} ms "
          f"({'refused' if refusal else 'NOT refused'})")
    figures["compile_1m_s"] = dense_s
    figures["compile_1m_nnz"] = nnz
    figures["refuse_1m_s"] = refuse_s
    (OUT / "compile.json").write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
