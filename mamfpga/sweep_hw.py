"""``mamfpga sweep-hw``: design-space exploration of one network over P, L, widths and boards.

Every point compiles the network (the board's capacity check included),
co-simulates a batch of inputs on Verilator against the golden model, and
builds the board top through yosys and nextpnr (utilisation, Fmax). Points run
in parallel on a local process pool, or on a Dask distributed cluster given its
scheduler's address; each point has its own folder, so they share nothing.
Rows go to a CSV; a Pareto plot shows cycles per inference against LUTs.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["Point", "points", "evaluate_point", "run_points", "write_csv", "pareto", "plot_pareto", "FIELDS"]

FIELDS = ["board", "pes", "lanes", "acc_bits", "delta_bits", "status", "nnz", "cycles_model", "cycles_sim",
          "cycle_bound", "mismatches", "samples", "bram_estimate", "lut", "ff", "bram", "dsp", "lut_avail",
          "fmax_mhz", "latency_us", "inferences_per_s", "seconds", "detail"]


def points(boards, pes, lanes, acc_bits=(None,), delta_bits=(None,)) -> list[dict]:
    return [{"board": b, "pes": p, "lanes": l, "acc_bits": a, "delta_bits": d}
            for b, p, l, a, d in itertools.product(boards, pes, lanes, acc_bits, delta_bits)]


def _name(pt: dict) -> str:
    return (f"{pt['board']}-p{pt['pes']}l{pt['lanes']}"
            f"-a{pt['acc_bits'] or 'auto'}-d{pt['delta_bits'] or 'auto'}")


def evaluate_point(pt: dict, net_path: str, inputs_path: str, root: str, synth: bool = True) -> dict:
    """Compile, co-simulate and synthesize one point; returns its CSV row. Never raises: a point
    that does not fit, or fails, is a row with its status and the reason."""
    from mamfpga.boards.flow import CapacityError, SynthError, synth_board
    from mamfpga.boards.targets import board
    from mamfpga.hw.arch import ArchConfig
    from mamfpga.sim.cosim import cosimulate
    from mamfpga.sw.compiler import CompileError, compile_network, write_build
    from mamfpga.sw.qnet import load_qnet

    t0 = time.monotonic()
    row = {k: None for k in FIELDS}
    row.update(pt)
    try:
        net = load_qnet(net_path)
        brd = board(pt["board"])
        cfg = ArchConfig(pes=pt["pes"], lanes=pt["lanes"], acc_bits=pt["acc_bits"] or 32)
        program = compile_network(net, cfg, board=brd.name, delta_bits=pt["delta_bits"],
                                  acc_bits=pt["acc_bits"])
        row.update(acc_bits=program.config.acc_bits, delta_bits=program.config.delta_bits,
                   nnz=sum(l.nnz for l in program.layers), cycles_model=program.cycles_per_inference,
                   cycle_bound=program.cycle_bound, bram_estimate=program.memory["bram"])
        build = write_build(program, Path(root) / _name(pt), board=brd.name)
        x = np.load(inputs_path)
        cos = cosimulate(program, build, x, simulator="verilator")
        row.update(cycles_sim=max(cos.cycles), mismatches=cos.mismatches, samples=len(x))
        if synth:
            syn = synth_board(build, brd, bitstream=False, retries=0, log=lambda _msg: None)
            if "resources" in syn:
                r = syn["resources"]
                f = syn["fmax_mhz"]
                row.update(lut=r["lut"], ff=r["ff"], bram=r["bram"], dsp=r["dsp"], lut_avail=r["lut_avail"],
                           fmax_mhz=round(f, 2), latency_us=round(program.cycles_per_inference / f, 3),
                           inferences_per_s=round(f * 1e6 / program.cycles_per_inference))
        row["status"] = "ok" if cos.mismatches == 0 and row["cycles_sim"] == row["cycles_model"] else "MISMATCH"
    except (CompileError, CapacityError) as exc:
        row.update(status="does not fit", detail=str(exc))
    except (SynthError, RuntimeError, ValueError, OSError) as exc:
        row.update(status="error", detail=f"{type(exc).__name__}: {exc}"[:500])
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def run_points(pts: list[dict], net_path, inputs_path, root, *, synth: bool = True, jobs: int = 2,
               scheduler: str | None = None, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Evaluate every point, on a local process pool (``jobs`` workers) or on the Dask cluster
    whose scheduler is at ``scheduler``; rows come back in the order of ``pts``."""
    args = (str(net_path), str(inputs_path), str(Path(root).resolve()), synth)
    rows: dict[int, dict] = {}
    if scheduler:
        from dask.distributed import Client, as_completed

        with Client(scheduler, timeout="30s") as client:
            futures = {client.submit(evaluate_point, pt, *args, pure=False): k for k, pt in enumerate(pts)}
            for fut in as_completed(futures):
                rows[futures[fut]] = fut.result()
                if on_row:
                    on_row(rows[futures[fut]])
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(evaluate_point, pt, *args): k for k, pt in enumerate(pts)}
            for fut in as_completed(futures):
                rows[futures[fut]] = fut.result()
                if on_row:
                    on_row(rows[futures[fut]])
    return [rows[k] for k in range(len(pts))]


def write_csv(rows: list[dict], path) -> Path:
    from mamfpga.outputs import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in FIELDS})
    return atomic_write_text(path, buf.getvalue())


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both LUTs and cycles (per board)."""
    done = [r for r in rows if r["status"] == "ok" and r.get("lut") is not None]
    return [r for r in done if not any(o is not r and o["board"] == r["board"] and o["lut"] <= r["lut"]
                                       and o["cycles_model"] <= r["cycles_model"]
                                       and (o["lut"], o["cycles_model"]) != (r["lut"], r["cycles_model"])
                                       for o in done)]


def plot_pareto(rows: list[dict], path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mamfpga.outputs import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    front = pareto(rows)
    for k, b in enumerate(dict.fromkeys(r["board"] for r in rows)):
        pts = [r for r in rows if r["board"] == b and r["status"] == "ok" and r.get("lut") is not None]
        if not pts:
            continue
        colour = plt.cm.tab10(k % 10)
        ax.scatter([r["lut"] for r in pts], [r["cycles_model"] for r in pts], color=colour, s=18, label=b)
        for r in pts:
            ax.annotate(f"P{r['pes']}L{r['lanes']}", (r["lut"], r["cycles_model"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        f = sorted((r["lut"], r["cycles_model"]) for r in front if r["board"] == b)
        ax.step([p[0] for p in f], [p[1] for p in f], where="post", color=colour, lw=1)
    ax.set_xlabel("LUTs (placed)")
    ax.set_ylabel("cycles per inference")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("design space: the line is the Pareto front")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
