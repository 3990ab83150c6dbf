"""One base class for every error mamfpga reports to its user, with the exit code it maps to.

The command line (``mamfpga.cli.main``) catches :class:`MamfpgaError` once and
prints ``mamfpga VERB: error: MESSAGE`` with ``exit_code``: 2 for bad input (a
malformed file, an option out of range, a network the configuration cannot
hold, an output that would overwrite a user's file), 1 for work that ran and
found a problem (a missing tool, a failed synthesis, a design that does not
fit, a board that answered wrong). Every stage raises a subclass; the message
is one line with the numbers.
"""

from __future__ import annotations

import importlib

__all__ = ["MamfpgaError", "UsageError", "MissingExtraError", "require_extra"]


class MamfpgaError(Exception):
    """An error for mamfpga's user: one line, and the process exit code it maps to."""

    exit_code = 1
    #: how the CLI introduces it ("error", or a word that says more, as "does not fit")
    label = "error"


class UsageError(MamfpgaError):
    """Bad input from the user (an option, a file): exit code 2."""

    exit_code = 2


class MissingExtraError(MamfpgaError):
    """A feature needs a package of an optional extra that is not installed (exit code 1)."""


def require_extra(module: str, extra: str, what: str):
    """``module`` imported, or :class:`MissingExtraError` saying which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{what} needs {module.split('.')[0]}: pip install 'mamfpga[{extra}]'") from None
