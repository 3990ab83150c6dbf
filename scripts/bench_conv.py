"""The MNIST CNN on the accelerator: cycles / bound per layer and in all, and the memories
against what they hold, at (P, L) = (1, 1), (2, 1), (2, 2), (4, 2), the activations banked
(one copy per PE in L banks) or copied per lane, each row in words of its own or rows sharing
words (ArchConfig.pack_rows); the iCE40UP5K's block RAM.

Trains the demo's CNN on mnist5k (conv8k3,pool2,conv16k3,pool2, MAM, pruned to 10 % kept as
the demo does), or reads it from build/bench/cnn_net.npz when an earlier run left it there.
Usage: .venv/bin/python scripts/bench_conv.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path("build/bench")


def main():
    from mamfpga import stages
    from mamfpga.compile import ArchConfig, compile_network, memory_use
    from mamfpga.compile.device import DEVICES
    from mamfpga.demo import DEMO_ARCH, demo_network
    from mamfpga.sw import golden
    from mamfpga.sw.qnet import load_qnet, save_qnet

    OUT.mkdir(parents=True, exist_ok=True)
    cached = OUT / "cnn_net.npz"
    ds = stages.load_dataset("mnist5k")
    if cached.is_file():
        qnet = load_qnet(cached)
    else:
        qnet = demo_network(ds, arch=DEMO_ARCH["mnist5k"])
        save_qnet(qnet, cached)
    acc = float((golden.classify(golden.run(qnet, ds.x_test)) == ds.y_test).mean())
    dev = DEVICES["iCE40UP5K"]
    print(f"MNIST CNN {DEMO_ARCH['mnist5k']} -> fc10: {[tuple(l.weight.shape) for l in qnet.layers if l.weight is not None]}, "
          f"{sum(l.nnz for l in qnet.layers)} nonzeros, int8 accuracy {acc:.4f}\n")
    head = (f"{'P':>3}{'L':>3}{'act':>7}{'rows':>7}{'model':>8}{'bound':>8}{'ratio':>7}  {'per layer model/bound':<34}"
            f"{'fmap bits':>10}{'weight bits':>12}{'act BRAM':>9}{'wgt BRAM':>9}{'all BRAM':>9}")
    print(head)
    print("-" * len(head))
    rows = []
    for p, l, copies, packs in ((1, 1, False, False), (2, 1, False, False), (2, 2, False, False),
                                (2, 2, False, True), (2, 2, True, False), (2, 2, True, True), (4, 2, False, False),
                                (4, 2, False, True), (4, 2, True, False), (4, 2, True, True)):
        prog = compile_network(qnet, ArchConfig(pes=p, lanes=l, lane_copies=copies, pack_rows=packs))
        use = memory_use(prog, dev.family)
        mems = use["memories"]
        # what the maps and the weights need, stored once: every map's values, every nonzero
        fmap_bits = 8 * (prog.net.input_size + sum(len(pl.out_address) for pl in prog.layers))
        weight_bits = 8 * sum(pl.nnz for pl in prog.layers)
        per = " ".join(f"{pl.cycles_model / pl.cycles_bound:.2f}" for pl in prog.layers)
        ratio = prog.cycles_model / prog.cycles_bound
        print(f"{p:>3}{l:>3}{'copies' if copies else 'banked':>7}{'shared' if prog.config.packs else 'own':>7}"
              f"{prog.cycles_model:>8}{prog.cycles_bound:>8}{ratio:>7.3f}  {per:<34}"
              f"{fmap_bits:>10}{weight_bits:>12}{mems['activations']['bram']:>9}{mems['weights']['bram']:>9}"
              f"{use['bram']:>9}", flush=True)
        rows.append({"pes": p, "lanes": l, "lane_copies": copies, "pack_rows": prog.config.packs, "model": prog.cycles_model, "bound": prog.cycles_bound,
                     "layers": [[pl.cycles_model, pl.cycles_bound] for pl in prog.layers],
                     "fmap_bits": fmap_bits, "weight_bits": weight_bits,
                     "act_bits": mems["activations"]["bits"], "weight_mem_bits": sum(m["bits"] for k, m in mems.items() if k.startswith("weights")),
                     "bram": use["bram"], "act_bram": mems["activations"]["bram"],
                     "weight_bram": mems["weights"]["bram"]})
    print(f"\n(the {dev.name} has {dev.bram} block RAMs of {dev.bram_bits} bits and {dev.spram} SPRAMs; "
          "the SPRAMs are not used yet)")
    (OUT / "conv.json").write_text(json.dumps({"accuracy": acc, "configs": rows}))


if __name__ == "__main__":
    main()
