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
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as cf_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mamfpga import progress, stages
from mamfpga.boards.fit import NoFitError
from mamfpga.boards.flow import CapacityError
from mamfpga.boards.targets import BOARDS
from mamfpga.compile import CompileError
from mamfpga.compile.arch import not_powers_of_two
from mamfpga.errors import MamfpgaError, UsageError, require_extra
from mamfpga.outputs import PLOTS_HINT, atomic_write_text, pyplot, save_figure

__all__ = ["points", "evaluate_point", "run_points", "sweep", "Sweep", "write_csv", "read_csv", "pareto", "plot_pareto",
           "compare", "FIELDS", "HEADER", "row_lines", "SweepError"]


class SweepError(MamfpgaError):
    """The sweep could not run (its cluster is unreachable)."""


FIELDS = ["board", "pes", "lanes", "act_memory", "acc_bits", "delta_bits", "status", "nnz", "cycles_model", "cycles_sim",
          "cycles_bound", "mismatches", "samples", "bram_estimate", "lut", "ff", "bram", "dsp", "lut_avail",
          "fmax_mhz", "latency_us", "inferences_per_s", "seconds", "detail"]


def points(boards, pes, lanes, acc_bits=(None,), delta_bits=(None,), act_memory=("banked",)) -> list[dict]:
    """Every (board, P, L, activation memory, acc_bits, delta_bits) point (a copy per lane only with
    two or more lanes), or a :class:`UsageError` naming what is wrong."""
    unknown = [b for b in boards if b not in BOARDS]
    if unknown:
        raise UsageError(f"unknown board(s) {', '.join(unknown)}; known: {', '.join(BOARDS)}")
    for name, values in (("pes", pes), ("lanes", lanes)):
        if not_powers_of_two(values):
            raise UsageError(f"--{name} must be powers of two, not {not_powers_of_two(values)}")
    bad = [m for m in act_memory if m not in ("banked", "copies")]
    if bad:
        raise UsageError(f"--act-memory takes banked and copies, not {', '.join(bad)}")
    return [{"board": b, "pes": p, "lanes": l, "act_memory": m, "acc_bits": a, "delta_bits": d}
            for b, p, l, m, a, d in itertools.product(boards, pes, lanes, act_memory, acc_bits, delta_bits)
            if not (m == "copies" and l == 1)]


def _name(pt: dict) -> str:
    return (f"{pt['board']}-p{pt['pes']}l{pt['lanes']}{'-copies' if pt.get('act_memory') == 'copies' else ''}"
            f"-a{pt['acc_bits'] or 'auto'}-d{pt['delta_bits'] or 'auto'}")


def evaluate_point(pt: dict, net_path: str, inputs_path: str, root: str, synth: bool = True) -> dict:
    """Compile, co-simulate and synthesize one point; returns its CSV row. Never raises: a point
    that does not fit, or fails, is a row with its status and the reason."""
    t0 = time.monotonic()
    row = {k: None for k in FIELDS}
    row.update(pt)
    try:
        c = stages.compile_for(stages.load_qnet(net_path), pes=pt["pes"], lanes=pt["lanes"], board=pt["board"],
                               acc_bits=pt["acc_bits"], delta_bits=pt["delta_bits"],
                               lane_copies=pt.get("act_memory") == "copies")
        program = c.program
        row.update(acc_bits=program.config.acc_bits, delta_bits=program.config.delta_bits,
                   nnz=sum(l.nnz for l in program.layers), cycles_model=program.cycles_model,
                   cycles_bound=program.cycles_bound, bram_estimate=program.memory["bram"])
        build = stages.emit(c, Path(root) / _name(pt), board=pt["board"])
        x = np.load(inputs_path)
        cos = stages.cosimulate(program, build, x)
        row.update(cycles_sim=max(cos.cycles), mismatches=cos.mismatches, samples=len(x))
        if synth:
            syn = stages.synthesize(build, pt["board"], log=lambda _msg: None, seeds=1, retries=0)
            if syn.resources:
                r, f = syn.resources, syn.fmax_mhz
                row.update(lut=r["lut"], ff=r["ff"], bram=r["bram"], dsp=r["dsp"], lut_avail=r["lut_avail"],
                           fmax_mhz=round(f, 2), latency_us=round(program.cycles_model / f, 3),
                           inferences_per_s=round(f * 1e6 / program.cycles_model))
        row["status"] = "ok" if cos.mismatches == 0 and row["cycles_sim"] == row["cycles_model"] else "MISMATCH"
    except (CompileError, CapacityError, NoFitError) as exc:
        row.update(status="does not fit", detail=str(exc))
    except (MamfpgaError, RuntimeError, ValueError, OSError) as exc:
        row.update(status="error", detail=f"{type(exc).__name__}: {exc}"[:500])
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def run_points(pts: list[dict], net_path, inputs_path, root, *, synth: bool = True, jobs: int = 2,
               scheduler: str | None = None, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Evaluate every point, on a local process pool (``jobs`` workers) or on the Dask cluster
    whose scheduler is at ``scheduler``; rows come back in the order of ``pts``, each shown
    to ``on_row`` as it arrives, under a progress bar of the points done."""
    args = (str(net_path), str(inputs_path), str(Path(root).resolve()), synth)
    rows: dict[int, dict] = {}
    where = "on the Dask cluster" if scheduler else f"on {jobs} processes"
    with progress.bar(len(pts), f"sweep-hw points ({where})", unit="point") as bar:
        def arrived(k, row):
            rows[k] = row
            bar.clear()
            if on_row:
                on_row(row)
            bar.update(1)

        if scheduler:
            dd = require_extra("dask.distributed", "cluster", "--scheduler (a Dask cluster)")
            Client, as_completed = dd.Client, dd.as_completed
            try:
                with Client(scheduler, timeout="30s") as client:
                    futures = {client.submit(evaluate_point, pt, *args, pure=False): k for k, pt in enumerate(pts)}
                    for fut in as_completed(futures):
                        arrived(futures[fut], fut.result())
            except OSError as exc:
                raise SweepError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
        else:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(evaluate_point, pt, *args): k for k, pt in enumerate(pts)}
                for fut in cf_completed(futures):
                    arrived(futures[fut], fut.result())
    return [rows[k] for k in range(len(pts))]


HEADER = (f"{'board':<11}{'P':>3}{'L':>3}{'act':>7}{'acc':>5}{'dlt':>4} {'status':<13}{'cycles':>7}{'LUT':>7}{'FF':>7}"
          f"{'BRAM':>5}{'DSP':>4}{'Fmax':>7}{'us':>8}{'s':>6}")


def row_lines(r: dict) -> list[str]:
    """A row under :data:`HEADER`, and the first line of why it failed, if it did."""
    def f(v, spec=""):
        return "-" if v is None else format(v, spec)

    out = [f"{r['board']:<11}{r['pes']:>3}{r['lanes']:>3}{r.get('act_memory') or 'banked':>7}{f(r['acc_bits']):>5}{f(r['delta_bits']):>4} "
           f"{r['status']:<13}{f(r['cycles_sim']):>7}{f(r['lut']):>7}{f(r['ff']):>7}{f(r['bram']):>5}"
           f"{f(r['dsp']):>4}{f(r['fmax_mhz'], '.1f'):>7}{f(r['latency_us'], '.2f'):>8}{r['seconds']:>6.0f}"]
    if r["status"] != "ok" and r.get("detail"):
        out.append(f"    {r['detail'].splitlines()[0][:150]}")
    return out


@dataclass
class Sweep:
    rows: list[dict]
    front: list[dict]                  # the Pareto front (cycles against LUTs), when synthesized
    written: list[Path]                # the CSV, the plot


def sweep(pts: list[dict], net_path, x: np.ndarray, out: Path, *, synth: bool = True, jobs: int = 2,
          scheduler: str | None = None, on_row: Callable[[dict], None] | None = None,
          baseline: list[dict] | None = None) -> Sweep:
    """Every point on the inputs ``x`` (int8), into ``out``: points/, inputs.npy,
    sweep_hw.csv and, when synthesized, pareto.png (with ``baseline``'s rows, an earlier sweep's
    :func:`read_csv`, drawn beside them: the gain of a change, on the same points)."""
    np.save(out / "inputs.npy", x)
    rows = run_points(pts, net_path, out / "inputs.npy", out / "points", synth=synth, jobs=jobs,
                      scheduler=scheduler, on_row=on_row)
    written = [write_csv(rows, out / "sweep_hw.csv")]
    front = []
    if synth and any(r.get("lut") is not None for r in rows):
        png = plot_pareto(rows, out / "pareto.png", baseline=baseline)
        written.append(png if png else f"no pareto.png ({PLOTS_HINT})")
        front = pareto(rows)
    return Sweep(rows, front, written)


def write_csv(rows: list[dict], path) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in FIELDS})
    return atomic_write_text(path, buf.getvalue())


_INT_FIELDS = {"pes", "lanes", "acc_bits", "delta_bits", "nnz", "cycles_model", "cycles_sim", "cycles_bound",
               "mismatches", "samples", "bram_estimate", "lut", "ff", "bram", "dsp", "lut_avail", "inferences_per_s"}
_FLOAT_FIELDS = {"fmax_mhz", "latency_us", "seconds"}


def read_csv(path) -> list[dict]:
    """The rows of a ``sweep_hw.csv`` (an earlier sweep, as a baseline), with their numbers as
    numbers and empty fields as None; a file that is not one is a :class:`UsageError` naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--baseline {path}: cannot read it ({exc.__class__.__name__})") from None
    reader = csv.DictReader(io.StringIO(text))
    need = {"board", "pes", "lanes", "status", "cycles_model", "lut"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        missing = sorted(need - set(reader.fieldnames or []))
        raise UsageError(f"--baseline {path}: not a sweep_hw.csv (no column {', '.join(missing)})")
    rows = []
    for n, raw in enumerate(reader, start=2):
        row = {k: raw.get(k) for k in FIELDS}
        for k, v in row.items():
            if v is None or v == "":
                row[k] = None
            elif k in _INT_FIELDS or k in _FLOAT_FIELDS:
                try:
                    row[k] = int(v) if k in _INT_FIELDS else float(v)
                except ValueError:
                    raise UsageError(f"--baseline {path}: line {n}: {k} is {v!r}, not a number") from None
        row["act_memory"] = row.get("act_memory") or "banked"
        rows.append(row)
    return rows


def _key(r: dict) -> tuple:
    """A point's (board, P, L, activation memory): its identity across two sweeps."""
    return r["board"], r["pes"], r["lanes"], r.get("act_memory") or "banked"


def _match(r: dict, baseline: list[dict]) -> dict | None:
    """The baseline's completed row for the point of ``r``: the one with the same widths (the
    CSV holds the widths each point used), else the only one of that (board, P, L, memory)."""
    same = [b for b in baseline if b["status"] == "ok" and _key(b) == _key(r)]
    exact = [b for b in same if (b.get("acc_bits"), b.get("delta_bits")) == (r.get("acc_bits"), r.get("delta_bits"))]
    return exact[0] if exact else same[0] if len(same) == 1 else None


def compare(rows: list[dict], baseline: list[dict]) -> list[str]:
    """One line per point both sweeps completed: cycles, Fmax and inferences a second, the
    baseline's then this one's, and the throughput ratio."""
    lines = []
    for r in rows:
        b = _match(r, baseline) if r["status"] == "ok" else None
        if b is None:
            continue
        line = f"{r['board']} P{r['pes']}L{r['lanes']} {r.get('act_memory') or 'banked'}: " \
               f"cycles {b['cycles_model']} -> {r['cycles_model']}"
        if r.get("fmax_mhz") is not None and b.get("fmax_mhz") is not None:
            line += f", Fmax {b['fmax_mhz']:.1f} -> {r['fmax_mhz']:.1f} MHz"
        if r.get("lut") is not None and b.get("lut") is not None:
            line += f", LUT {b['lut']} -> {r['lut']}"
        if r.get("inferences_per_s") and b.get("inferences_per_s"):
            line += (f", inferences/s {b['inferences_per_s']:,} -> {r['inferences_per_s']:,} "
                     f"({r['inferences_per_s'] / b['inferences_per_s']:.2f}x)")
        lines.append(line)
    return lines


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both LUTs and cycles (per board)."""
    done = [r for r in rows if r["status"] == "ok" and r.get("lut") is not None]
    return [r for r in done if not any(o is not r and o["board"] == r["board"] and o["lut"] <= r["lut"]
                                       and o["cycles_model"] <= r["cycles_model"]
                                       and (o["lut"], o["cycles_model"]) != (r["lut"], r["cycles_model"])
                                       for o in done)]


def plot_pareto(rows: list[dict], path, baseline: list[dict] | None = None) -> Path | None:
    """Cycles per inference against LUTs, each board's Pareto front a line; a baseline sweep's
    points hollow and its fronts dashed, in the board's colour (None: no matplotlib)."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    front = pareto(rows)
    old_front = pareto(baseline or [])
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
        old = [r for r in baseline or [] if r["board"] == b and r["status"] == "ok" and r.get("lut") is not None]
        if old:
            ax.scatter([r["lut"] for r in old], [r["cycles_model"] for r in old], s=18, facecolors="none",
                       edgecolors=colour, label=f"{b} (baseline)")
            f = sorted((r["lut"], r["cycles_model"]) for r in old_front if r["board"] == b)
            ax.step([p[0] for p in f], [p[1] for p in f], where="post", color=colour, lw=1, ls="--")
    ax.set_xlabel("LUTs (placed)")
    ax.set_ylabel("cycles per inference")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("design space: the line is the Pareto front" + (", dashed the baseline's" if baseline else ""))
    return save_figure(fig, path)
