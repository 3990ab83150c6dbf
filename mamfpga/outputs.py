"""Writing outputs safely: atomic files, and output folders mamfpga owns.

A folder mamfpga writes gets a ``.mamfpga`` marker. An existing folder without
the marker that holds anything is the user's, and is never written into.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mamfpga.errors import MamfpgaError

__all__ = ["OutputError", "claim_dir", "atomic_write_text", "atomic_write_bytes", "atomic_write_json", "pyplot",
           "save_figure", "PLOTS_HINT"]

#: what to install for plots (matplotlib is the optional extra "plots")
PLOTS_HINT = "plots need matplotlib: pip install 'mamfpga[plots]'"

MARKER = ".mamfpga"


class OutputError(MamfpgaError):
    """An output cannot be written where the user asked (exit code 2)."""

    exit_code = 2


def claim_dir(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Create ``path`` or reuse it if mamfpga wrote it before; refuse a user's folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a folder; choose another path")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).exists():
        raise OutputError(f"{what} {path} exists and was not written by mamfpga; "
                          "refusing to overwrite it (choose another path or empty it)")
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("written by mamfpga; files here may be replaced by the next run\n")
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib (the optional
    extra ``plots``) is not installed: every plot of mamfpga is then left out, saying so."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """A matplotlib figure as a PNG at ``path``, written atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
