"""Cycles / bound across networks and every (P, L) with P x L <= 16: does the accelerator scale
with the lanes on small layers too (DESIGN.md's target: <= 1.10)?

Networks: the digits network of scripts/bench_compile.py (build/bench/net.npz, 0.1 % kept, MAM
-> MAC); the hidden-size-1024 network of the science table (MAM 64-1024-1024-10 on digits,
pruned to 1 % kept, fine-tuned; trained here once, then read from build/bench/sci_net.npz);
uniformly random sparse networks (MAM hidden layers, a MAC classifier, seeded): 784-1024-1024-10
at 1 %, 64-160-160-10 at 5 % and 2 %; the MNIST CNN of scripts/bench_conv.py
(build/bench/cnn_net.npz: run that script first). Each point is the compiler's cycle model (the
RTL takes exactly these cycles: the co-simulation tests hold it) at the fastest of banked and
copied activations, each with rows in words of their own or sharing words, among those whose
block RAMs fit the ECP5-85F (``c``: copied; ``s``: rows sharing words; ``-``: none fits). Logic
is not counted: the ECP5-85F's 83,640 LUT4 hold every P x L <= 16 of these networks (the
largest, P = 16 or P = 8, L = 2 on the digits network, synthesizes to about a quarter of them).

The last column says how much of what is left is the pipeline's depth: ``floor``, at (16, 1),
is the input stream, then every layer's pipeline latency (``arch.layer_overhead``) one after
another (a layer's rows read the results of the layer before, which leave its pipeline that
many cycles after they enter it), then the output stream, as a ratio to the bound; where it is
above 1.10 the target cannot be met at (16, 1) without a shallower pipeline or the first layer
starting while the inputs stream in. Usage: .venv/bin/python scripts/bench_scale.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path("build/bench")
BOARD = "ulx3s-85f"
GRID = [(p, l) for p in (1, 2, 4, 8, 16) for l in (1, 2, 4, 8, 16) if p * l <= 16]


def science_network():
    """The science table's hidden-size-1024 MAM network on digits, 1 % kept (cached)."""
    from mamfpga import stages
    from mamfpga.sw import prune
    from mamfpga.sw.network import from_torch
    from mamfpga.sw.train import finetune

    path = OUT / "sci_net.npz"
    if path.is_file():
        return stages.load_qnet(path)
    import torch

    torch.manual_seed(0)
    ds = stages.load_dataset("digits")
    model = stages.train(ds, mode="mam", progress=False, val=0.0, epoch_log=False, log=lambda _m: None).model
    prune.prune_model(model, "gmp", 0.99)
    finetune(model, ds, epochs=30, progress=False)
    qnet = stages.quantize(from_torch(model), ds.x_train).qnet
    OUT.mkdir(parents=True, exist_ok=True)
    stages.save_qnet(qnet, path)
    return qnet


def random_network(sizes, density, seed=0):
    from mamfpga.sw.qnet import QuantLayer, QuantNetwork

    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.integers(-127, 128, (b, a)).astype(np.int8)
        w[rng.random((b, a)) > density] = 0
        last = i == len(sizes) - 2
        layers.append(QuantLayer(w, rng.integers(-1000, 1000, b).astype(np.int32), "mac" if last else "mam",
                                 1 << 14, 22, not last))
    return QuantNetwork(layers, 1.0, 1.0, {})


def main():
    from mamfpga import stages
    from mamfpga.compile import MemoryFitError
    from mamfpga.compile.arch import layer_overhead, split_overhead

    nets = {}
    if (OUT / "net.npz").is_file():
        nets["digits 0.1 %"] = stages.load_qnet(OUT / "net.npz")
    else:
        print("(build/bench/net.npz missing: run scripts/bench_compile.py first for the digits network)")
    nets["science 1024, 1 %"] = science_network()
    nets["random 784-1024-1024-10, 1 %"] = random_network((784, 1024, 1024, 10), 0.01)
    nets["random 64-160-160-10, 5 %"] = random_network((64, 160, 160, 10), 0.05)
    nets["random 64-160-160-10, 2 %"] = random_network((64, 160, 160, 10), 0.02)
    if (OUT / "cnn_net.npz").is_file():
        nets["MNIST CNN"] = stages.load_qnet(OUT / "cnn_net.npz")
    else:
        print("(build/bench/cnn_net.npz missing: run scripts/bench_conv.py first for the MNIST CNN)")

    head = f"{'network':<30}{'nnz':>7}" + "".join(f"{f'{p},{l}':>9}" for p, l in GRID) + f"{'<=1.10':>8}{'floor':>7}"
    print(head)
    print("-" * len(head))
    figures = {}
    for name, net in nets.items():
        row, ratios, nnz, floor = [], {}, 0, None
        for p, l in GRID:
            best = None
            for copies, packs in (((False, False), (False, True), (True, False), (True, True)) if l > 1
                                  else ((False, False),)):
                try:
                    prog = stages.compile_for(net, pes=p, lanes=l, lane_copies=copies, pack_rows=packs,
                                              board=BOARD).program
                except MemoryFitError:
                    continue
                r = prog.cycles_model / prog.cycles_bound
                nnz = sum(x.nnz for x in prog.layers)
                if best is None or r < best[0]:
                    best = (r, copies, prog.config.packs, prog)
            if best is None:
                row.append("-")
                continue
            ratios[f"{p},{l}"] = {"ratio": round(best[0], 4), "copies": best[1], "pack_rows": best[2]}
            row.append(f"{best[0]:.3f}{'c' if best[1] else ''}{'s' if best[2] else ''}")
            if (p, l) == (16, 1):
                fp = best[3]
                floor = (fp.net.input_size + fp.net.output_size
                         + sum(layer_overhead(fp.config) + (split_overhead(fp.config) if x.split else 0)
                               for x in fp.layers)) / fp.cycles_bound
        within = sum(v["ratio"] <= 1.10 for v in ratios.values())
        print(f"{name:<30}{nnz:>7}" + "".join(f"{c:>9}" for c in row) + f"{f'{within}/{len(ratios)}':>8}"
              + (f"{floor:>7.2f}" if floor is not None else f"{'-':>7}"), flush=True)
        figures[name] = {"nnz": nnz, "points": ratios, "within": within, "fitting": len(ratios),
                         "floor_16_1": None if floor is None else round(floor, 4)}
    (OUT / "scale.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
