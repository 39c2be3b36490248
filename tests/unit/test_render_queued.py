"""A queued batch on screen: ``status``, ``list`` and ``submit --wait`` show its place in line.

Checks: ``describe`` of a queued batch carries ``queue_position`` (None in any other state); piped
and on a terminal, ``status``, ``list`` and the progress line say ``queued (position 3)``.
"""

from __future__ import annotations

import io
import re

import pytest

from batchctl.core.messages import BatchRequest
from batchctl.frontend.batches import describe
from batchctl.frontend.render import ProgressBar, status_text, table
from batchctl.launcher.state import QUEUED, RUNNING, BatchState

ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def queued(position: int = 3, state: str = QUEUED) -> dict[str, object]:
    request = BatchRequest("b-q", parts=4, records=4, bytes=4, handler="m:f", created=1.0)
    batch = BatchState(request, state=state, queue_position=position,
                       reason="waiting for workers: the budget of 6 is in use (position 3)")
    return describe(batch, 0)


def test_describe_has_the_position_only_while_queued() -> None:
    """``queue_position`` is the stored place while queued, None once running."""
    assert queued()["queue_position"] == 3
    assert queued(state=RUNNING)["queue_position"] is None


@pytest.mark.parametrize("tty", [False, True])
def test_status_list_and_progress_say_queued_with_position(tty: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every view shows ``queued (position 3)``; ``status`` also shows why."""
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    if tty:
        monkeypatch.setenv("TTY_COMPATIBLE", "1")
        monkeypatch.setenv("COLUMNS", "200")
    status = queued()
    for show in (lambda out: status_text(status, out), lambda out: table([status], out)):
        out = io.StringIO()
        show(out)
        assert "queued (position 3)" in ESCAPE.sub("", out.getvalue())
    out = io.StringIO()
    status_text(status, out)
    assert "budget of 6 is in use" in out.getvalue()
    if not tty:
        out = io.StringIO()
        bar = ProgressBar(out)
        bar.update(status)
        bar.close()
        assert out.getvalue().rstrip().endswith("0 workers, queued (position 3)")
