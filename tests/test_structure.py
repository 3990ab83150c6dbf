"""The package's layering: imports run one way, sw -> compile -> hw -> sim, boards -> the pipeline
(mamfpga.stages) and the CLI. Checked on every import statement of the product, those inside
functions included."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: utilities every layer may use: errors, atomic outputs, tool paths, progress bars
BASE = {"mamfpga.errors", "mamfpga.outputs", "mamfpga.toolchain", "mamfpga.progress"}
#: folder -> the mamfpga packages its modules may import (besides BASE and itself)
ALLOWED = {
    "sw": set(),
    "compile": {"mamfpga.sw"},
    "hw": {"mamfpga.sw", "mamfpga.compile"},
    "sim": {"mamfpga.sw", "mamfpga.compile", "mamfpga.hw", "mamfpga.boards"},
    "boards": {"mamfpga.sw", "mamfpga.compile", "mamfpga.hw", "mamfpga.report"},
}
OWN = {"sw": "mamfpga.sw", "compile": "mamfpga.compile", "hw": "mamfpga.hw", "sim": "mamfpga.sim",
       "boards": "mamfpga.boards"}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mamfpga":
                for a in node.names:
                    yield node.lineno, f"mamfpga.{a.name}"
            else:
                yield node.lineno, node.module


def _allowed(name: str, folder: str) -> bool:
    if not name.startswith("mamfpga"):
        return True
    ok = BASE | ALLOWED[folder] | {OWN[folder]}
    return any(name == p or name.startswith(p + ".") for p in ok)


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_run_one_way(folder):
    bad = [f"{path.relative_to(ROOT)}:{line}: {name}"
           for path in sorted((ROOT / folder).rglob("*.py"))
           for line, name in _imports(path) if not _allowed(name, folder)]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_rule_catches_a_back_reference(tmp_path):
    """The check itself: a compiler module importing the board flow is refused."""
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from mamfpga.boards.targets import board_device\n")
    assert [n for _, n in _imports(f) if not _allowed(n, "compile")] == ["mamfpga.boards.targets"]
    assert _allowed("mamfpga.sw.qnet", "compile") and not _allowed("mamfpga.hw.pe", "compile")
