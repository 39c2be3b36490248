"""``batchctl.frontend.render``: what ``list``, ``status``, ``submit --wait`` and ``demo`` print.

Checks: piped (not a terminal) ``list`` prints aligned plain rows with ``-`` for missing
values, ``status`` one ``key value`` line per field, and the progress view a line per
change only; on a terminal (``TTY_COMPATIBLE=1``, as ``rich`` reads it) ``list`` and
``status`` are ``rich`` tables with the state coloured, and ``NO_COLOR`` removes every
colour; the terminal progress view is a ``rich.progress`` bar with parts done and dead,
workers, rate and the batch's state.
"""

from __future__ import annotations

import io
import re

import pytest

from batchctl.frontend.render import ProgressBar, status_text, table

ROW = {"batch_id": "b-1", "state": "failed", "parts_done": 3, "parts_dead": 1, "parts_total": 4,
       "workers": 0, "created": "2026-12-02T08:00:00+00:00", "finished": None, "reason": "", "jobs": ["p-b-1-1"]}
COLOUR = re.compile(r"\x1b\[(3\d|38;)")
ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def piped(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "160")


@pytest.mark.usefixtures("piped")
def test_piped_list_is_plain_aligned_rows() -> None:
    """Header, then one row per batch; a missing value is '-'; no escape codes."""
    out = io.StringIO()
    table([ROW, {**ROW, "batch_id": "b-22", "created": None}], out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["BATCH_ID", "STATE", "PARTS_DONE", "PARTS_DEAD", "PARTS_TOTAL", "WORKERS", "CREATED"]
    assert lines[2].split() == ["b-22", "failed", "3", "1", "4", "0", "-"]
    assert lines[1].index("failed") == lines[0].index("STATE") and "\x1b" not in out.getvalue()


@pytest.mark.usefixtures("piped")
def test_piped_empty_list_says_so() -> None:
    out = io.StringIO()
    table([], out)
    assert out.getvalue() == "no batches\n"


@pytest.mark.usefixtures("piped")
def test_piped_status_is_key_value_lines() -> None:
    out = io.StringIO()
    status_text(ROW, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["batch_id", "b-1"] and lines[-1].split() == ["jobs", "p-b-1-1"]
    assert "finished     -" in lines and "\x1b" not in out.getvalue()


@pytest.mark.usefixtures("terminal")
def test_terminal_list_is_a_rich_table_with_coloured_state() -> None:
    out = io.StringIO()
    table([ROW], out)
    text = out.getvalue()
    assert "BATCH_ID" in text and "b-1" in text and COLOUR.search(text)


@pytest.mark.usefixtures("terminal")
def test_no_color_removes_every_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR on a terminal: the same table, no colour escape codes."""
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    table([ROW], out)
    status_text(ROW, out)
    assert "b-1" in out.getvalue() and not COLOUR.search(out.getvalue())


@pytest.mark.usefixtures("terminal")
def test_terminal_status_is_a_rich_table() -> None:
    out = io.StringIO()
    status_text(ROW, out)
    assert re.search(r"jobs\s+p-b-1-1", ESCAPE.sub("", out.getvalue())) and COLOUR.search(out.getvalue())


@pytest.mark.usefixtures("piped")
def test_piped_progress_prints_a_line_per_change_only() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=10)
    for done in (1, 1, 2):
        bar.update({**ROW, "parts_done": done, "parts_dead": 0, "workers": 2, "state": "running"})
    bar.close()
    assert out.getvalue().splitlines() == [
        "b-1 [##........] 1/4 done, 0 dead, 2 workers, running",
        "b-1 [#####.....] 2/4 done, 0 dead, 2 workers, running",
    ]


@pytest.mark.usefixtures("terminal")
def test_terminal_progress_is_a_rich_bar_with_done_dead_workers_and_state() -> None:
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.update({**ROW, "parts_done": 1, "parts_dead": 0, "workers": 2, "state": "running"})
    bar.update({**ROW, "parts_done": 3, "parts_dead": 1, "workers": 1, "state": "failed"})
    bar.close()
    text = ESCAPE.sub("", out.getvalue())
    assert "━" in text and "3/4 done, 1 dead" in text and "1 workers" in text and "failed" in text
