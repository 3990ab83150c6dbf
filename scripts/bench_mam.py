"""MAM layers against nn.Linear and nn.Conv2d on the CPU: time and peak memory, forward and
forward+backward.

Each case runs in a fresh process (peak RSS is per process), timings are the
median of several runs after warm-up, and the figures that matter are the
ratios, measured in the same run. Usage: .venv/bin/python scripts/bench_mam.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = [  # (label, B, N, M)
    ("1024x1024", 256, 1024, 1024),
    ("ViT-B fc1 768->3072", 256, 768, 3072),
    ("ViT-B fc2 3072->768", 256, 3072, 768),
]

CONV_CASES = [  # (label, B, C, H = W, M), 3 x 3 kernel, padding 1
    ("MNIST 1->8 28x28", 64, 1, 28, 8),
    ("64->64 32x32", 64, 64, 32, 64),
]

WORKER = r"""
import json, resource, statistics, sys, time
import torch
from torch import nn
from mamfpga.sw import mam
kind, mode, impl, dims = sys.argv[1], sys.argv[2], sys.argv[3], [int(v) for v in sys.argv[4:]]
if impl == "torch":
    mam._fused_ok = lambda x, w: False
torch.manual_seed(0)
if kind in ("linear", "mam"):
    B, N, M = dims
    layer = nn.Linear(N, M) if kind == "linear" else mam.MAMLinear(N, M)
    x = torch.randn(B, N, requires_grad=(mode == "fwd+bwd"))
else:
    B, C, H, M = dims
    layer = nn.Conv2d(C, M, 3, padding=1) if kind == "conv" else mam.MAMConv2d(C, M, 3, padding=1)
    x = torch.randn(B, C, H, H, requires_grad=(mode == "fwd+bwd"))
def step():
    if mode == "fwd":
        with torch.no_grad():
            layer(x)
    else:
        layer(x).sum().backward()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
step()
reps = 3 if impl == "torch" else 10
times = []
for _ in range(reps):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({"ms": statistics.median(times) * 1e3, "peak_mib": peak}))
"""


def run(kind, dims, mode, impl="fused"):
    res = subprocess.run([sys.executable, "-c", WORKER, kind, mode, impl, *map(str, dims)],
                         capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise SystemExit(f"benchmark worker failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B x M x N float32 products "
          f"would take {256 * 1024 * 1024 * 4 / 2**20:.0f} MiB at 1024x1024\n")
    head = (f"{'shape (B=256)':<22}{'pass':<9}{'Linear ms':>10}{'MAM ms':>9}{'ratio':>7}"
            f"{'MAM torch ms':>13}{'Linear MiB':>11}{'MAM MiB':>9}")
    print(head)
    print("-" * len(head))
    figures = {}
    for label, b, n, m in CASES:
        for mode in ("fwd", "fwd+bwd"):
            lin = run("linear", (b, n, m), mode)
            fused = run("mam", (b, n, m), mode)
            chunked = run("mam", (b, n, m), mode, impl="torch")
            print(f"{label:<22}{mode:<9}{lin['ms']:>10.2f}{fused['ms']:>9.2f}{fused['ms'] / lin['ms']:>6.1f}x"
                  f"{chunked['ms']:>13.1f}{lin['peak_mib']:>11.0f}{fused['peak_mib']:>9.0f}", flush=True)
            figures[f"{label} {mode}"] = {"ratio": fused["ms"] / lin["ms"], "mam_mib": fused["peak_mib"],
                                          "linear_mib": lin["peak_mib"], "b": b, "n": n, "m": m}
    print("\nMAM = MAMLinear (beta = 0) with the fused kernel; 'MAM torch' = the chunked PyTorch fallback;")
    print("MiB = growth of peak RSS over the timed runs (the layer's own activations and gradients).\n")
    head = (f"{'conv 3x3 p1 (B=64)':<22}{'pass':<9}{'Conv ms':>10}{'MAM ms':>9}{'ratio':>7}"
            f"{'Conv MiB':>10}{'MAM MiB':>9}{'output MiB':>11}{'products MiB':>13}")
    print(head)
    print("-" * len(head))
    for label, b, c, h, m in CONV_CASES:
        out_mib = b * m * h * h * 4 / 2**20
        prod_mib = out_mib * c * 9                # B x M x (C*3*3) x positions, float32
        for mode in ("fwd", "fwd+bwd"):
            conv = run("conv", (b, c, h, m), mode)
            fused = run("mamconv", (b, c, h, m), mode)
            print(f"{label:<22}{mode:<9}{conv['ms']:>10.2f}{fused['ms']:>9.2f}{fused['ms'] / conv['ms']:>6.1f}x"
                  f"{conv['peak_mib']:>10.0f}{fused['peak_mib']:>9.0f}{out_mib:>11.1f}{prod_mib:>13.0f}", flush=True)
            figures[f"conv {label} {mode}"] = {"ratio": fused["ms"] / conv["ms"], "mam_mib": fused["peak_mib"],
                                               "conv_mib": conv["peak_mib"], "output_mib": out_mib,
                                               "products_mib": prod_mib}
    print("\nMAM = MAMConv2d (beta = 0): windows unfolded a batch chunk at a time into the fused kernel; "
          "'products MiB' is what materialising every product would take.")
    from pathlib import Path

    Path("build/bench").mkdir(parents=True, exist_ok=True)
    Path("build/bench/mam.json").write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
