"""The package's floors import one way: foundation → roles → front ends.

- ``batchctl.core`` (foundation) imports no role and no front end;
- the roles ``batchctl.splitter``, ``batchctl.worker``, ``batchctl.launcher`` import the
  foundation only, never each other and never a front end;
- ``batchctl.frontend`` (CLI, demo, Python API) may import anything below it;
- ``batchctl/__init__.py`` is the public façade: it may name front-end objects only lazily
  (inside functions), so that ``import batchctl.worker`` never loads the CLI.

Read from the AST of every module, lazy (function-level) imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"core": 0, "splitter": 1, "worker": 1, "launcher": 1, "frontend": 2}
FOLDERS = {
    "core": ROOT / "batchctl" / "core",
    "splitter": ROOT / "splitter",
    "worker": ROOT / "worker",
    "launcher": ROOT / "launcher",
    "frontend": ROOT / "batchctl" / "frontend",
}


def unit_of(module: str) -> str | None:
    """``batchctl.launcher.state`` → ``launcher``; None for what is outside the layers."""
    parts = module.split(".")
    if parts[0] != "batchctl" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return sorted(found)


def violations(unit: str, path: Path, *, root: Path = ROOT) -> list[str]:
    bad = []
    for line, module in imports_of(path):
        target = unit_of(module)
        if target is None or target == unit:
            continue
        upward = LAYERS[target] > LAYERS[unit]
        sideways = LAYERS[target] == LAYERS[unit] == 1
        if upward or sideways:
            bad.append(f"{path.relative_to(root)}:{line}: {unit} imports {module}")
    return bad


@pytest.mark.parametrize("unit", sorted(FOLDERS))
def test_no_upward_or_sideways_import(unit: str) -> None:
    """No module imports a layer above its own, and no role imports another role."""
    files = sorted(FOLDERS[unit].rglob("*.py"))
    assert files, f"no modules found for {unit}"
    bad = [v for path in files for v in violations(unit, path)]
    assert not bad, "\n".join(bad)


def test_checker_catches_upward_and_sideways_imports(tmp_path: Path) -> None:
    """The checker itself flags a lazy upward import and a role-to-role import."""
    module = tmp_path / "bad.py"
    module.write_text(
        "def f():\n    from batchctl.frontend import cli\n"
        "from batchctl.splitter.submit import submit\n"
        "from batchctl.core.errors import BadInput\n"
    )
    assert violations("core", module, root=tmp_path) == [
        "bad.py:2: core imports batchctl.frontend",
        "bad.py:2: core imports batchctl.frontend.cli",
        "bad.py:3: core imports batchctl.splitter.submit",
        "bad.py:3: core imports batchctl.splitter.submit.submit",
    ]
    assert violations("launcher", module, root=tmp_path) == [
        "bad.py:2: launcher imports batchctl.frontend",
        "bad.py:2: launcher imports batchctl.frontend.cli",
        "bad.py:3: launcher imports batchctl.splitter.submit",
        "bad.py:3: launcher imports batchctl.splitter.submit.submit",
    ]
    assert violations("frontend", module, root=tmp_path) == []


def test_package_init_is_lazy() -> None:
    """``batchctl/__init__.py`` imports nothing from the layers at module level."""
    tree = ast.parse((ROOT / "batchctl" / "__init__.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [getattr(n, "module", None) or n.names[0].name for n in top_level]
    assert not [n for n in names if n and unit_of(n)], names
