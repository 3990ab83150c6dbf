"""Every performance figure of DESIGN.md in one table, from the JSON the bench scripts wrote
into build/bench/ (run scripts/bench first). Usage: .venv/bin/python scripts/bench_summary.py"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path("build/bench")


def main():
    def load(name):
        path = OUT / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    comp, area, mam, brd, conv = load("compile"), load("pe_area"), load("mam"), load("board"), load("conv")
    scale = load("scale")
    rows = []

    def row(figure, target, measured, ok):
        rows.append((figure, target, measured, "yes" if ok else "NO"))

    if scale:
        # DESIGN.md's figure: every (P, L) with P x L <= 16, dense and conv networks, each point at
        # the fastest configuration whose block RAMs fit the ECP5-85F (scripts/bench_scale.py)
        row("cycles / per-layer bound, every P x L <= 16 fitting the ECP5-85F (points within)", "<= 1.10",
            "; ".join(f"{name} {f['within']}/{f['fitting']}"
                      + (f" (worst {max(v['ratio'] for v in f['points'].values()):.3f})" if f["within"] < f["fitting"]
                         else "") for name, f in scale.items()),
            all(f["within"] == f["fitting"] for f in scale.values()))
    if comp:
        cf = comp["configs"]
        ratios = [c["model"] / c["bound"] for c in cf]
        row("the same, digits network, default compile (banked, own words)", "<= 1.10",
            ", ".join(f"{c['model'] / c['bound']:.3f} (P{c['pes']}L{c['lanes']})" for c in cf), max(ratios) <= 1.10)
        row("compiler cycle model vs simulated", "equal",
            ", ".join("equal" if c["sim_cycles"] == [c["model"]] else f"{c['sim_cycles']} vs {c['model']}" for c in cf),
            all(c["sim_cycles"] == [c["model"]] for c in cf))
        row("weight memory bits per nonzero", "<= 16", ", ".join(f"{c['bits_per_nnz']:.1f}" for c in cf),
            max(c["bits_per_nnz"] for c in cf) <= 16)
        if "narrow" in comp:
            # the uniform widths, narrowest last; a mixed network (its middle layer narrower, an
            # extension memory for the wider ones) is shown beside them, not in the ordering
            nw = [c for c in comp["narrow"] if "/" not in c["bits"]]
            mixed = [c for c in comp["narrow"] if "/" in c["bits"]]
            row("weight bits per nonzero at 8 / 4 / 2-bit weights", "fewer with fewer bits",
                " / ".join(f"{c['bits_per_nnz']:.1f}" for c in nw)
                + "".join(f"; {c['bits']} bits: {c['bits_per_nnz']:.1f}" for c in mixed),
                all(a["bits_per_nnz"] > b["bits_per_nnz"] for a, b in zip(nw, nw[1:])))
        row("PE load balance, max / mean nnz", "<= 1.05", ", ".join(f"{c['balance']:.3f}" for c in cf),
            max(c["balance"] for c in cf) <= 1.05)
        row("co-simulation of the 540-sample test set", "< 60 s",
            ", ".join(f"{c['sim_seconds']:.1f} s" for c in cf) + f"; {sum(c['mismatches'] for c in cf)} mismatches",
            max(c["sim_seconds"] for c in cf) < 60 and all(c["mismatches"] == 0 for c in cf))
        if "compile_1m_s" in comp:
            row("compile a million nonzero weights / refuse what cannot fit", "seconds / < 1 s",
                f"{comp['compile_1m_s']:.1f} s for {comp['compile_1m_nnz']:,} / {comp['refuse_1m_s'] * 1000:.0f} ms",
                comp["compile_1m_s"] < 30 and comp["refuse_1m_s"] < 1)
    if conv:
        cf = conv["configs"]
        row("the same, MNIST CNN, each activation memory and row packing (model = simulated)", "<= 1.10",
            ", ".join(f"{c['model'] / c['bound']:.3f} (P{c['pes']}L{c['lanes']}"
                      f"{' copies' if c.get('lane_copies') else ''})" for c in cf),
            max(c["model"] / c["bound"] for c in cf) <= 1.10)
    rob = load("robustness")
    if rob:
        errs = [(r["lc_placed"] - r["lc_estimate"]) / r["lc_estimate"] for r in rob if r["lc_placed"] and r["lc_estimate"]]
        ok = all(r["met"] and r["bitstream"] for r in rob)
        row("fit estimate (logic cells) vs placed, robustness networks", "within margin, never over",
            f"placed {min(errs):+.1%} .. {max(errs):+.1%} of the estimate; "
            f"{sum(r['met'] and r['bitstream'] for r in rob)}/{len(rob)} with a bitstream, timing met",
            ok and max(errs) <= 0)
    if brd:
        ice, ecp = brd["icebreaker"], brd["ulx3s-85f"]
        row("Fmax of the demo design, iCE40UP5K / ECP5-85F", ">= 48 / >= 150 MHz",
            f"{ice['fmax_mhz']:.1f} / {ecp['fmax_mhz']:.1f} MHz", ice["fmax_mhz"] >= 48 and ecp["fmax_mhz"] >= 150)
    if area:
        row("MAM PE LUTs / MAC PE LUTs (L = 1, 2, 4)", "<= 1.3",
            ", ".join(f"{k} {v:.3f}" for k, v in area.items()), max(area.values()) <= 1.3)
    if mam:
        f = mam.get("1024x1024 fwd")
        if f:
            full = f["b"] * f["n"] * f["m"] * 4 / 2**20
            row("MAM forward / nn.Linear, 1024x1024, B=256", "<= 3x, memory not B*M*N",
                f"{f['ratio']:.1f}x; +{f['mam_mib']:.0f} MiB (B*M*N floats: {full:.0f} MiB)",
                f["ratio"] <= 3 and f["mam_mib"] < full / 4)
    if brd:
        row("mamfpga demo, warm caches", "< 3 min", f"{brd['demo_warm_s']:.0f} s", brd["demo_warm_s"] < 180)
        placed = brd.get("placed_sim") or {}
        if placed:
            row("the demo network's placed design through its UART, every test sample", "0 wrong, cycles = model",
                "; ".join(f"{b}: {f['mismatches']} of {f['samples']} wrong, {'/'.join(map(str, f['cycles_placed']))} "
                          f"cycles (model {f['cycles_model']}), {f['seconds']:.0f} s" for b, f in placed.items()),
                all(f["mismatches"] == 0 and f["cycles_placed"] == [f["cycles_model"]] and not f["protocol_problems"]
                    for f in placed.values()))
    w = max(len(r[0]) for r in rows)
    t = max(len(r[1]) for r in rows)
    m = max(len(r[2]) for r in rows)
    print(f"{'figure':<{w}}  {'target':<{t}}  {'measured':<{m}}  met")
    print("-" * (w + t + m + 9))
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:<{t}}  {r[2]:<{m}}  {r[3]}")
    missing = [n for n, d in (("compile", comp), ("pe_area", area), ("mam", mam), ("board", brd)) if d is None]
    if missing:
        print(f"\n(no figures yet from: {', '.join(missing)})")


if __name__ == "__main__":
    main()
