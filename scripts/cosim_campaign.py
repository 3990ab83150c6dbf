"""Random dense and conv networks co-simulated on Verilator, each at a random (P, L), activation
memory and layer kind: outputs against the golden model, and the cycles of every layer and of
every inference against the compiler's schedule. For changes to the accelerator's timing (the
schedule is exact: a start a cycle early reads a stale activation).

    .venv/bin/python scripts/cosim_campaign.py [FIRST_SEED] [COUNT]     (about 20 s a network)

Exit 1 if any network is wrong."""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # the random networks of tests/


def main(first: int = 1000, count: int = 40) -> int:
    import numpy as np

    import mamfpga.compile as compiler
    from mamfpga.compile.arch import ArchConfig
    from mamfpga.hw.emit import emit
    from mamfpga.sim.cosim import cosimulate
    from tests.support import conv_inputs, random_conv_network, random_network
    from tests.sw.test_golden import random_inputs

    bad = 0
    for seed in range(first, first + count):
        rng = np.random.default_rng(seed)
        conv = seed % 3 == 0
        if conv:
            net = random_conv_network(rng)
            x = conv_inputs(rng, net.input_shape, 4)
        else:
            depth = int(rng.integers(2, 5))
            shapes = [int(rng.integers(4, 160)) for _ in range(depth + 1)]
            net = random_network(rng, shapes, float(rng.choice([0.02, 0.05, 0.2, 0.6])),
                                 [str(rng.choice(["mac", "mam"])) for _ in range(depth)])
            x = random_inputs(rng, net.input_size, 4)
        cfg = ArchConfig(pes=int(rng.choice([1, 2, 4, 8])), lanes=int(rng.choice([1, 2, 4])),
                         lane_copies=bool(rng.random() < 0.3))
        split = "auto" if conv else str(rng.choice(["auto", "never", "always"]))
        try:
            program = compiler.compile_network(net, cfg, split=split)
        except compiler.CompileError as e:
            print(f"{seed}: refused: {e}")
            continue
        t = time.time()
        with tempfile.TemporaryDirectory() as d:
            res = cosimulate(program, emit(program, Path(d) / "build"), x, seed=seed)
        model = [l.cycles_model for l in program.layers]
        ok = res.mismatches == 0 and res.layer_cycles == model and set(res.cycles) == {program.cycles_model}
        bad += not ok
        print(f"{seed}: {'conv' if conv else 'dense'} P{cfg.pes} L{cfg.lanes}{' copies' if cfg.lane_copies else ''} "
              f"split {[int(l.split) for l in program.layers]} overlap {[l.overlap for l in program.layers]}: "
              + ("ok" if ok else f"WRONG: {res.mismatches} mismatches, cycles {sorted(set(res.cycles))} "
                 f"(model {program.cycles_model}), per layer {res.layer_cycles} (model {model})")
              + f" ({time.time() - t:.0f} s)", flush=True)
    print(f"{bad} of {count} wrong")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:3])))
