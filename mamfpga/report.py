"""The report of a build: one typed schema, one builder per stage, one renderer.

A build folder's ``report.json`` (format ``mamfpga.report/1``) has a section per
stage that ran on it, each written by that stage's builder:

- ``compile``: :meth:`CompileFigures.of` (the program: configuration, layers, cycle model, memory);
- ``sim``: :meth:`SimFigures.of` (the co-simulation: samples, mismatches, cycles counted);
- ``synth``: :class:`SynthFigures`, which the board flow fills (resources, Fmax, clock, bitstream);
- ``placed_sim``: :class:`PlacedSimFigures`, the placed and routed design simulated behind its UART;
- ``board_run``: :class:`BoardRunFigures`, from ``mamfpga run`` on a real board;
- ``demo``: :class:`DemoFigures`, what the demo adds (accuracies, sparsity, the dense comparison).

Every figure has one name wherever it appears (manifest, report, sweep CSV):
``cycles_model`` the cycle model's count, ``cycles_bound`` its lower bound,
``cycles_sim`` what co-simulation counted, ``cycles_placed`` what the placed
design counted, ``cycles_board`` what the board counted; per layer and per
inference alike. :func:`render` turns any report,
or one section of it, into the lines the CLI prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mamfpga.compile.build import balance
from mamfpga.errors import MamfpgaError
from mamfpga.outputs import atomic_write_json

__all__ = ["REPORT_FORMAT", "LayerFigures", "CompileFigures", "SimFigures", "SynthFigures", "PlacedSimFigures",
           "BoardRunFigures", "DemoFigures", "Report", "ReportError", "render", "render_compile", "render_sim",
           "render_synth", "render_placed_sim", "render_board_run", "render_demo"]

REPORT_FORMAT = "mamfpga.report/1"


class ReportError(MamfpgaError):
    """A report.json that cannot be read (exit code 2)."""

    exit_code = 2


def _fits(v, hint) -> bool:
    """Whether a JSON value has the type a field is annotated with (list and dict elements are
    not looked into)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(v, a) for a in typing.get_args(hint))
    if hint is type(None):
        return v is None
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint in (str, bool):
        return isinstance(v, hint)
    if (origin or hint) in (list, dict):
        return isinstance(v, origin or hint)
    return True


def _from_dict(cls, d: dict | None):
    """``cls`` from its JSON form, keeping only the fields it has (None stays None); a field of
    the wrong type is a :class:`ReportError` naming it."""
    import typing

    if d is None:
        return None
    if not isinstance(d, dict):
        raise ReportError(f"a {cls.__name__} record is {type(d).__name__}, not an object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for k, v in d.items():
        if k in names and not _fits(v, hints[k]):
            raise ReportError(f"{cls.__name__}.{k} is {v!r}, not {hints[k]}")
    return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- sections

@dataclass
class LayerFigures:
    mode: str
    kind: str                         # "row-parallel" or "column-split"
    rows: int
    cols: int
    nnz: int
    cycles_model: int                 # from its start to the next layer's (the last: to its first output)
    cycles_bound: int
    overlap: int = 0                  # cycles the next layer (the last: the outputs) starts before its last write


@dataclass
class CompileFigures:
    pes: int
    lanes: int
    acc_bits: int
    delta_bits: int
    split: str
    layers: list[LayerFigures]
    nnz: int
    cycles_model: int
    cycles_bound: int
    bram_estimate: int | None         # block RAMs of the accelerator's memories, on the build's device
    weight_bits_per_nnz: float | None
    balance_nnz: float                # max / mean nonzeros per PE, over the network
    sizes_before: list[int]           # layer widths before and after dead-neuron elimination
    sizes_after: list[int]
    choice: dict | None = None        # how the configuration was chosen (mamfpga.boards.fit.Choice.record)
    lane_copies: bool = False         # each lane its own copy of the activations (else banked)
    pack_rows: bool = False           # rows share words (ArchConfig.pack_rows)

    @classmethod
    def of(cls, program, choice: dict | None = None) -> "CompileFigures":
        cfg, mem, e = program.config, program.memory, program.eliminated
        return cls(cfg.pes, cfg.lanes, cfg.acc_bits, cfg.delta_bits, program.split,
                   [LayerFigures(l.mode, "column-split" if l.split else "row-parallel", l.rows, l.cols, l.nnz,
                                 l.cycles_model, l.cycles_bound, l.overlap) for l in program.layers],
                   sum(l.nnz for l in program.layers), program.cycles_model, program.cycles_bound,
                   mem.get("bram"), mem.get("weight_bits_per_nnz"), balance(program)["nnz"],
                   list(e.get("sizes_before", [])), list(e.get("sizes_after", [])), choice, cfg.lane_copies,
                   cfg.packs)

    @classmethod
    def from_json(cls, d: dict | None):
        c = _from_dict(cls, d)
        if c is not None:
            c.layers = [_from_dict(LayerFigures, l) for l in c.layers]
        return c


@dataclass
class SimFigures:
    simulator: str
    samples: int
    mismatches: int
    cycles_sim: list[int]             # the distinct counts per inference, first input to last output beat
    layer_cycles_sim: list[int]       # per layer, first sample
    first_mismatch: dict | None = None

    @classmethod
    def of(cls, cos) -> "SimFigures":
        """From a :class:`mamfpga.sim.cosim.CosimResult`."""
        return cls(cos.simulator, len(cos.outputs), cos.mismatches, sorted(set(cos.cycles)),
                   list(cos.layer_cycles), cos.first_mismatch)


@dataclass
class SynthFigures:
    board: str
    device: str
    clock: dict                       # oscillator_mhz, mhz (built at), pll
    host_link: dict                   # baud, divisor, build_id
    bram_estimate: int | None = None  # the compiler's count for the accelerator's memories
    export_only: str | None = None    # no open flow: where the vendor project was written
    estimate: dict | None = None      # the fit check's needs of the synthesized design
    resources: dict | None = None     # placed: lut, ff, bram, dsp and what the device has of each
    fmax_mhz: float | None = None
    critical_path: dict | None = None
    timing_met: bool | None = None
    latency_us: float | None = None
    inferences_per_s: float | None = None
    synth_seconds: float | None = None
    attempts: list[dict] = field(default_factory=list)
    target_mhz: float | None = None
    bitstream: str | None = None


@dataclass
class PlacedSimFigures:
    board: str
    netlist: str                      # which netlist ran (mamfpga.boards.placed.NETLIST_KIND)
    clock: str                        # how the clock reaches it (the PLL replaced by its output clock)
    baud: int
    divisor: int
    samples: int
    mismatches: int                   # samples answered wrongly or not at all
    cycles_placed: list[int]          # the distinct counts the placed design reported
    cycles_model: int
    build_id: str                     # as the design answered '?'
    protocol_problems: list[str]      # host link checks that failed (none, when right)
    seconds: float                    # the simulation (the model's build included)
    cells: dict                       # cell type -> count in the routed netlist


@dataclass
class BoardRunFigures:
    port: str
    baud: int
    samples: int
    mismatches: int
    cycles_board: list[int]           # the distinct counts the board reported
    cycles_model: int
    seconds: float
    accuracy: float | None = None
    golden_accuracy: float | None = None
    first_mismatch: dict | None = None
    retries: int = 0                  # requests sent again (an answer lost, refused or failing its CRC)


@dataclass
class DemoFigures:
    accuracy: dict                    # dense_mam, float, quantized, hardware, kept, classifier_kept, chosen
    sparsity: float
    nnz: int
    weights: int
    one_shot_curve: list[dict]
    dense_mac: dict                   # the same network dense and MAC: what it would need
    fallbacks: int = 0
    lint_warnings: list[str] = field(default_factory=list)
    # FLOPs of one inference (mamfpga.sw.flops): the pruned float network against the same dense
    flops: dict = field(default_factory=dict)


@dataclass
class Report:
    board: str | None = None
    device: str | None = None
    compile: CompileFigures | None = None
    sim: SimFigures | None = None
    synth: SynthFigures | None = None
    board_run: BoardRunFigures | None = None
    demo: DemoFigures | None = None
    placed_sim: PlacedSimFigures | None = None

    def to_json(self) -> dict:
        return {"format": REPORT_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict) -> "Report":
        if d.get("format") != REPORT_FORMAT:
            raise ReportError(f"report format {d.get('format')!r}, this mamfpga reads {REPORT_FORMAT!r}")
        from mamfpga.boards.targets import BOARDS
        from mamfpga.compile.device import DEVICES

        if d.get("board") is not None and d.get("board") not in BOARDS:
            raise ReportError(f"board {d.get('board')!r} is not a known board")
        if d.get("device") is not None and d.get("device") not in {dev.name for dev in DEVICES.values()}:
            raise ReportError(f"device {d.get('device')!r} is not a known device")
        return cls(d.get("board"), d.get("device"), CompileFigures.from_json(d.get("compile")),
                   _from_dict(SimFigures, d.get("sim")), _from_dict(SynthFigures, d.get("synth")),
                   _from_dict(BoardRunFigures, d.get("board_run")), _from_dict(DemoFigures, d.get("demo")),
                   _from_dict(PlacedSimFigures, d.get("placed_sim")))

    @classmethod
    def load(cls, build: str | Path) -> "Report":
        """The report of a build folder (an empty one when none was written yet)."""
        path = Path(build) / "report.json"
        if not path.is_file():
            return cls()
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ReportError(f"{path}: damaged report ({exc})") from None
        except ReportError as exc:
            raise ReportError(f"{path}: {exc}") from None

    def save(self, *paths: str | Path) -> None:
        """Write the report to each ``path`` (a build folder's report.json, an output folder's), atomically."""
        for p in paths:
            p = Path(p)
            atomic_write_json(p / "report.json" if p.is_dir() else p, self.to_json())


# --------------------------------------------------------------------------- the renderer

def _slash(values) -> str:
    return "/".join(map(str, values)) if values else "-"


def render_compile(c: CompileFigures, sim: SimFigures | None = None, board: str | None = None) -> list[str]:
    out = [f"P={c.pes} PEs x L={c.lanes} lanes (activations {'copied per lane' if c.lane_copies else 'banked'}"
           f"{', rows sharing words' if c.pack_rows else ''}), "
           f"{c.acc_bits}-bit accumulators, {c.delta_bits}-bit column deltas, "
           f"split {c.split}" + (f", board {board}" if board else "")]
    if c.choice:
        n = c.choice.get("needs") or {}
        out.append(f"configuration chosen as the {c.choice['by']} ({len(c.choice['tried']) - 1} faster ones do "
                   "not fit)" + (f"; estimate {n['lc']} logic cells, {n['bram']} block RAMs, {n['dsp']} DSPs"
                                 if n else ""))
    if c.sizes_before != c.sizes_after:
        out.append(f"dead rows/columns eliminated: {' -> '.join(map(str, c.sizes_before))}  to  "
                   f"{' -> '.join(map(str, c.sizes_after))}")
    measured = sim.layer_cycles_sim if sim else []
    # model: cycles from the layer's start to the next one's; overlap: how much earlier that is
    # than the layer's last write (mamfpga.compile.schedule)
    out.append(f"{'layer':<6}{'mode':<5}{'kind':<14}{'rows':>6}{'cols':>6}{'nnz':>7}{'model':>7}{'bound':>7}"
               f"{'overlap':>8}" + (f"{'sim':>7}" if measured else ""))
    for k, l in enumerate(c.layers):
        out.append(f"{k:<6}{l.mode:<5}{l.kind:<14}{l.rows:>6}{l.cols:>6}{l.nnz:>7}{l.cycles_model:>7}"
                   f"{l.cycles_bound:>7}{l.overlap:>8}" + (f"{measured[k]:>7}" if measured else ""))
    out.append(f"cycles per inference {c.cycles_model} (model; bound {c.cycles_bound}, ratio "
               f"{c.cycles_model / c.cycles_bound:.3f}); PE balance max/mean nnz {c.balance_nnz:.3f}"
               + (f"; weight memory {c.weight_bits_per_nnz:.1f} bits per nonzero" if c.weight_bits_per_nnz else "")
               + (f"; {c.bram_estimate} block RAMs" if c.bram_estimate is not None else ""))
    return out


def render_sim(s: SimFigures, cycles_model: int | None = None) -> list[str]:
    agree = "" if cycles_model is None else (f" (model {cycles_model}: " + (
        "equal)" if s.cycles_sim == [cycles_model] else "DIFFERENT)"))
    return [f"co-simulation on {s.simulator}: {s.samples} samples, {s.mismatches} mismatching; cycles per "
            f"inference {_slash(s.cycles_sim)}{agree}"]


def render_synth(s: SynthFigures) -> list[str]:
    if s.export_only:
        return [f"{s.board} ({s.device}): exported for the vendor's tools in {s.export_only}"]
    out = [f"{s.board} ({s.device}): clock {s.clock['mhz']:g} MHz from a {s.clock['oscillator_mhz']:g} MHz "
           f"oscillator, host link {s.host_link['baud']} baud, build {s.host_link['build_id']}"]
    if s.resources:
        r = s.resources
        out.append(f"{'resource':<10}{'used':>8}{'available':>11}{'use':>7}")
        for key, name in (("lut", "LUT"), ("ff", "FF"), ("bram", "BRAM"), ("dsp", "DSP")):
            used, avail = r[key], r[f"{key}_avail"]
            out.append(f"{name:<10}{used:>8}{avail:>11}{used / avail:>7.0%}")
    if s.fmax_mhz is not None:
        clk = s.clock["mhz"]
        out.append(f"Fmax {s.fmax_mhz:.1f} MHz; clock {clk:g} MHz ({'met' if s.timing_met else 'NOT met'})"
                   + (f", target {s.target_mhz:g} MHz" if s.target_mhz and s.target_mhz != clk else ""))
    cp = s.critical_path
    if cp:
        out.append(f"critical path {cp['ns']:.1f} ns ({cp['logic_ns']:.1f} logic, {cp['routing_ns']:.1f} routing): "
                   f"{cp['from']} -> {cp['to']}")
    if s.latency_us is not None:
        out.append(f"latency {s.latency_us:.1f} us per inference, {s.inferences_per_s:,.0f} inferences/s")
    if s.bitstream:
        out.append(f"bitstream: {s.bitstream}")
    return out


def render_placed_sim(p: PlacedSimFigures) -> list[str]:
    agree = "equal" if p.cycles_placed == [p.cycles_model] else "DIFFERENT"
    return [f"placed and routed {p.board} design ({p.netlist}; {p.clock}): {p.samples} samples through its UART at "
            f"{p.baud} baud ({p.divisor} cycles a bit), {p.mismatches} mismatching; cycles per inference "
            f"{_slash(p.cycles_placed)} (model {p.cycles_model}: {agree}); build {p.build_id}; "
            f"host link checks {'passed' if not p.protocol_problems else 'FAILED: ' + '; '.join(p.protocol_problems)}"
            f"; {p.seconds:.0f} s"]


def render_board_run(r: BoardRunFigures) -> list[str]:
    out = [f"on the board ({r.port}, {r.baud} baud): {r.samples} inferences in {r.seconds:.2f} s, "
           f"{r.mismatches} differ from the golden model",
           f"cycles per inference on the board: {_slash(r.cycles_board)} (model {r.cycles_model})"]
    if r.accuracy is not None:
        out.append(f"accuracy: board {r.accuracy:.4f}, golden model {r.golden_accuracy:.4f}")
    return out


def render_demo(d: DemoFigures, r: Report) -> list[str]:
    a, dense, c, s, syn = d.accuracy, d.dense_mac, r.compile, r.sim, r.synth
    rows = [("accuracy: float / quantized / hardware", f"{a['float']:.4f} / {a['quantized']:.4f} / "
                                                       f"{a['hardware']:.4f}  (dense MAM {a['dense_mam']:.4f})"),
            ("sparsity, nonzero weights", f"{d.sparsity:.2%} of {d.weights} weights are zero; {d.nnz} nonzero "
                                          f"({a['kept']:.1%} of the hidden layers kept, {a['classifier_kept']:.0%} "
                                          "of the classifier, then simplified)")]
    if d.flops:
        rows.append(("FLOPs per inference", f"{d.flops['flops']:,} against {d.flops['flops_dense']:,} dense: "
                                            f"{d.flops['saved']:.2%} saved (2 a MAC weight, 3 a MAM weight)"))
    if c and s:
        label = (c.choice or {}).get("chosen", f"P={c.pes} L={c.lanes}")
        rows.append(("cycles per inference", f"{_slash(s.cycles_sim)} simulated "
                                             f"{'=' if s.cycles_sim == [c.cycles_model] else '!='} model "
                                             f"(bound {c.cycles_bound}), {label}, chosen to fit"))
        rows.append((f"RTL vs golden, {s.samples} samples", f"{s.mismatches} mismatches"))
    if syn and syn.resources:
        clk, res = syn.clock["mhz"], syn.resources
        rows += [("Fmax (nextpnr)", f"{syn.fmax_mhz:.1f} MHz; built at {clk:g} MHz"
                                    f" ({'timing met' if syn.timing_met else 'timing NOT met'})"),
                 ("latency, throughput", f"{syn.latency_us:.1f} us per inference, "
                                         f"{syn.inferences_per_s:,.0f} inferences/s at {clk:g} MHz"),
                 (f"{syn.device} (placed)", f"{res['lut']}/{res['lut_avail']} LUT, {res['ff']}/{res['ff_avail']} FF, "
                                            f"{res['bram']}/{res['bram_avail']} BRAM, "
                                            f"{res['dsp']}/{res['dsp_avail']} DSP"),
                 ("bitstream", syn.bitstream or "none (timing not met)")]
    rows.append(("the same network dense and MAC", f"{dense['bram']} BRAM needed ({dense['bram_compiled']} after "
                                                   f"int8 rounding and CSR) of {dense['bram_avail']}: "
                                                   f"{'fits' if dense['fits'] else 'does not fit'}"))
    return [f"{k:<40}{v}" for k, v in rows]


def render(r: Report) -> list[str]:
    """Every section the report has, in the order of the flow."""
    out = []
    if r.compile:
        out += render_compile(r.compile, r.sim, r.board)
    if r.sim:
        out += render_sim(r.sim, r.compile.cycles_model if r.compile else None)
    else:
        out.append("co-simulation: not run (mamfpga sim BUILD --inputs X.npy --outputs Y.npy)")
    if r.synth:
        out += render_synth(r.synth)
    if r.placed_sim:
        out += render_placed_sim(r.placed_sim)
    if r.board_run:
        out += render_board_run(r.board_run)
    if r.demo:
        out += [""] + render_demo(r.demo, r)
    return out
