"""Writing outputs safely: atomic files, and output folders mamfpga owns.

A folder mamfpga writes gets a ``.mamfpga`` marker. An existing folder without
the marker that holds anything is the user's, and is never written into.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from mamfpga.errors import MamfpgaError

__all__ = ["OutputError", "claim_dir", "run_dir", "replaced_whole", "staged_dir", "atomic_write_text", "atomic_write_bytes", "atomic_write_json", "pyplot",
           "save_figure", "PLOTS_HINT"]

#: what to install for plots (matplotlib is the optional extra "plots")
PLOTS_HINT = "plots need matplotlib: pip install 'mamfpga[plots]'"

MARKER = ".mamfpga"


class OutputError(MamfpgaError):
    """An output cannot be written where the user asked (exit code 2)."""

    exit_code = 2


def _refuse_users_folder(path: Path, what: str) -> None:
    """OutputError if ``path`` is a file, or a folder with contents mamfpga did not write."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} exists and is not a folder; choose another path")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).exists():
        raise OutputError(f"{what} {path} exists and was not written by mamfpga; "
                          "refusing to overwrite it (choose another path or empty it)")


def claim_dir(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Create ``path`` or reuse it if mamfpga wrote it before; refuse a user's folder."""
    path = Path(path)
    _refuse_users_folder(path, what)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("written by mamfpga; files here may be replaced by the next run\n")
    return path


@contextmanager
def replaced_whole(path: str | os.PathLike):
    """``with replaced_whole(path):`` the block writes the folder ``path`` anew in place; an
    earlier ``path`` is set aside (a hidden sibling) meanwhile. When the block ends normally the
    earlier folder is deleted; on an error or Ctrl-C the half-written one is, and the earlier one
    is put back as it was."""
    path = Path(path)
    aside = None
    if path.exists():
        aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".previous"))
        os.replace(path, aside / "folder")
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        if aside is not None:
            os.replace(aside / "folder", path)
            shutil.rmtree(aside, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def run_dir(path: str | os.PathLike, *, what: str = "output folder"):
    """``with run_dir(path) as out:`` a long run (``demo``, ``sweep``, ``sweep-hw``) writes its
    files straight into ``out`` = ``path`` (its report names them there), and an error or Ctrl-C
    leaves no half-written folder: a folder this run created is removed, and one an earlier run
    of mamfpga wrote is put back as it was (:func:`replaced_whole`). A user's folder is refused
    as by :func:`claim_dir`."""
    path = Path(path)
    _refuse_users_folder(path, what)
    with replaced_whole(path):
        yield claim_dir(path, what=what)


@contextmanager
def staged_dir(path: str | os.PathLike, *, what: str = "output folder", stale: str | None = None):
    """``with staged_dir(path) as tmp:`` write a folder's files into ``tmp`` (a hidden sibling of
    ``path``); when the block ends normally they take their places in ``path``, else (an error,
    Ctrl-C) ``tmp`` is removed and ``path`` stays as it was: no half-written folder. A new
    ``path`` is one rename; an existing one of mamfpga's (its other files, such as a simulator's
    build, kept) gets each new file by a rename, and loses its files whose names match ``stale``
    (a regular expression) that this run did not write. A user's folder is refused as by
    :func:`claim_dir`."""
    path = Path(path)
    _refuse_users_folder(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        (tmp / MARKER).write_text("written by mamfpga; files here may be replaced by the next run\n")
        yield tmp
        if not path.exists():
            os.rename(tmp, path)
            return
        new = {p.name for p in tmp.iterdir()}
        if stale is not None:
            for old in path.iterdir():
                if old.is_file() and old.name not in new and re.fullmatch(stale, old.name):
                    old.unlink()
        for f in tmp.iterdir():
            if (path / f.name).is_dir() and not (path / f.name).is_symlink():
                shutil.rmtree(path / f.name)
            os.replace(f, path / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
