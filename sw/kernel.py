"""The fused CPU kernel for the MAM max/min reduction (csrc/maxmin.c).

Compiled with the system's C compiler on first use (about a second) into
mamfpga's cache, keyed by the source, the flags and the machine, and loaded
with ctypes (which releases the GIL) after torch: its OpenMP loop then binds
to torch's own libgomp and runs on torch's worker threads, so the two never
fight over the cores. When
no compiler is available, or ``MAMFPGA_KERNEL=torch`` is set, the chunked
PyTorch path of :mod:`mamfpga.sw.mam` is used instead (same results, slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

__all__ = ["available", "maxmin_fused", "reason_unavailable"]

_SRC = Path(__file__).with_name("csrc") / "maxmin.c"
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC", "-fopenmp"]
_lock = threading.Lock()
_lib = None
_why: str | None = None
_TILE_RI = _TILE_RB_V = _TILE_RB_I = 0


def _cpu_id() -> str:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return platform.machine() + flags


def _build() -> Path:
    from mamfpga.toolchain import cache_dir

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc) on PATH")
    src = _SRC.read_bytes()
    key = hashlib.sha256(src + " ".join(_FLAGS).encode() + _cpu_id().encode()).hexdigest()[:16]
    out_dir = cache_dir() / "kernels"
    lib = out_dir / f"maxmin-{key}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".so.tmp")
    os.close(fd)
    try:
        res = subprocess.run([cc, *_FLAGS, "-o", tmp, str(_SRC)], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{cc} failed: {res.stderr.strip()[:500]}")
        os.replace(tmp, lib)            # atomic: parallel builders agree
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _load():
    global _lib, _why
    if _lib is not None or _why is not None:
        return _lib
    with _lock:
        if _lib is not None or _why is not None:
            return _lib
        if os.environ.get("MAMFPGA_KERNEL", "").lower() == "torch":
            _why = "MAMFPGA_KERNEL=torch"
            return None
        try:
            lib = ctypes.CDLL(str(_build()))
            fn = lib.mam_maxmin_f32
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
            tile = lib.mam_tile
            tile.restype = ctypes.c_int
            tile.argtypes = [ctypes.c_int]
            global _TILE_RI, _TILE_RB_V, _TILE_RB_I
            _TILE_RI, _TILE_RB_V, _TILE_RB_I = tile(0), tile(1), tile(2)
            _lib = fn
        except (RuntimeError, OSError) as exc:
            _why = str(exc)
            warnings.warn(f"mamfpga: fused MAM kernel unavailable ({exc}); using the slower PyTorch path",
                          RuntimeWarning, stacklevel=3)
        return _lib


def available() -> bool:
    return _load() is not None


def reason_unavailable() -> str | None:
    _load()
    return _why


def _panels(t: torch.Tensor, rows_per_panel: int) -> torch.Tensor:
    """[R, N] -> zero-padded panels [ceil(R/r), N, r], contiguous."""
    rows, cols = t.shape
    padded = -(-rows // rows_per_panel) * rows_per_panel
    if padded != rows:
        t = torch.cat([t, t.new_zeros(padded - rows, cols)])
    return t.view(padded // rows_per_panel, rows_per_panel, cols).transpose(1, 2).contiguous()


def maxmin_fused(x: torch.Tensor, weight: torch.Tensor, with_indices: bool):
    """(vmax, imax, vmin, imin) for float32 CPU x [B, N], weight [M, N]; indices None when not asked."""
    fn = _load()
    assert fn is not None
    batch, cols = x.shape
    rows = weight.shape[0]
    if cols == 0:
        raise ValueError("a MAM layer needs at least one input")
    rb = _TILE_RB_I if with_indices else _TILE_RB_V
    xp = _panels(x.detach(), rb)
    wp = _panels(weight.detach(), _TILE_RI)
    bp, mp = xp.shape[0] * rb, wp.shape[0] * _TILE_RI
    vmax = torch.empty(bp, mp, dtype=torch.float32)
    vmin = torch.empty(bp, mp, dtype=torch.float32)
    imax = imin = None
    if with_indices:
        imax = torch.empty(bp, mp, dtype=torch.long)
        imin = torch.empty(bp, mp, dtype=torch.long)
    rc = fn(xp.data_ptr(), wp.data_ptr(), bp, cols, mp, vmax.data_ptr(), vmin.data_ptr(),
            imax.data_ptr() if imax is not None else None, imin.data_ptr() if imin is not None else None,
            torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"fused MAM kernel failed (code {rc}) for B={batch}, N={cols}, M={rows}")
    if bp != batch or mp != rows:
        vmax, vmin = vmax[:batch, :rows], vmin[:batch, :rows]
        if with_indices:
            imax, imin = imax[:batch, :rows], imin[:batch, :rows]
    return vmax, imax, vmin, imin
