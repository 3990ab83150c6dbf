"""Progress on the long steps (place and route, synthesis, co-simulation, sweep points).

Bars and spinners go to stderr through tqdm and say what they wait for;
:data:`QUIET` (the CLI's ``-q``) silences them all, as does an stderr that is
not a terminal unless ``MAMFPGA_PROGRESS=1``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = ["QUIET", "enabled", "bar", "waiting", "last_line"]

#: set by ``mamfpga -q``: no progress output at all
QUIET = False


def enabled() -> bool:
    if QUIET:
        return False
    if os.environ.get("MAMFPGA_PROGRESS") is not None:
        return os.environ["MAMFPGA_PROGRESS"] not in ("", "0")
    return sys.stderr.isatty()


def bar(total: int | None, desc: str, unit: str = "it"):
    """A tqdm bar on stderr (disabled when progress is off)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled(), leave=False,
                dynamic_ncols=True)


@contextlib.contextmanager
def waiting(desc: str, poll: Callable[[], tuple[int | None, str | None]] | None = None,
            total: int | None = None, unit: str = "it", every: float = 0.5) -> Iterator[None]:
    """A bar (``total`` known) or a spinner with the time elapsed while the body runs (a
    subprocess, a simulation); ``poll()`` returns (done so far, what it is doing now), either None."""
    if not enabled():
        yield
        return
    stop = threading.Event()
    with bar(total, desc, unit) as b:
        def watch():
            while not stop.wait(every):
                done, doing = poll() if poll else (None, None)
                if done is not None and done > b.n:
                    b.update(done - b.n)
                if doing:
                    b.set_postfix_str(doing[:60], refresh=False)
                b.refresh()
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()


def last_line(path, contains: str) -> Callable[[], tuple[None, str | None]]:
    """A ``poll`` for :func:`waiting` that shows the last line of a tool's log containing ``contains``
    (yosys: "Executing", nextpnr: "Info:")."""
    def poll():
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 8192))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return None, None
        for ln in reversed(lines):
            if contains in ln:
                return None, ln.split(contains, 1)[1].strip(" .:")
        return None, None
    return poll
