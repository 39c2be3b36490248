"""No log call passes ``event=``: it is structlog's positional event name, and the clash raises
TypeError at run time (in a publish callback, that left a part neither acked nor nacked)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("batchctl", "splitter", "launcher", "worker")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "msg"}


def log_calls_with_event_keyword(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in LEVELS
        and any(k.arg == "event" for k in node.keywords)
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_log_call_passes_event_keyword(package: str) -> None:
    """Every ``log.<level>(...)`` in the package names its event positionally only."""
    offenders = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := log_calls_with_event_keyword(path))
    }
    assert offenders == {}
