"""How the CLI shows batches: rich tables and a live progress bar on a terminal, plain lines otherwise.

``--json`` output does not come through here. On a terminal (as ``rich`` detects it) ``list``
and ``status`` print ``rich`` tables and ``submit --wait`` / ``demo`` draw a ``rich.progress``
bar; ``NO_COLOR`` (any value) turns colours off, as ``rich`` honours it. When the stream is
not a terminal every view is plain text: one aligned row per batch, one ``key value`` line
per status field, and a progress line per change.
"""

from __future__ import annotations

import sys
from typing import IO, Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

COLUMNS = ("batch_id", "state", "parts_done", "parts_dead", "parts_total", "workers", "created")
STATUS_FIELDS = ("batch_id", "state", "parts_total", "parts_done", "parts_dead", "workers", "created",
                 "finished", "reason")
STATE_STYLES = {"succeeded": "green", "failed": "red", "rejected": "red", "cancelled": "yellow",
                "queued": "cyan", "pending": "cyan", "running": "blue"}


def console(out: TextIO | None) -> Console:
    """A console on ``out``; ``rich`` decides whether it is a terminal and honours ``NO_COLOR``."""
    return Console(file=out, highlight=False)


def cell(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def state_label(status: dict[str, Any]) -> str:
    """The state, with the place in line for a queued batch: ``queued (position 3)``."""
    position = status.get("queue_position")
    return f"{status.get('state')} (position {position})" if position else cell(status.get("state"))


def state_text(status: dict[str, Any]) -> Text:
    return Text(state_label(status), style=STATE_STYLES.get(str(status.get("state")), ""))


def table(rows: list[dict[str, Any]], out: TextIO | None = None) -> None:
    """``batchctl list``: one row per batch, newest first."""
    con = console(out or sys.stdout)
    if not rows:
        con.print("no batches")
        return
    if not con.is_terminal:
        _plain_table(rows, con.file)
        return
    view = Table(*(c.upper() for c in COLUMNS), box=None, header_style="bold")
    for row in rows:
        view.add_row(*(state_text(row) if c == "state" else cell(row.get(c)) for c in COLUMNS))
    con.print(view)


def _plain_table(rows: list[dict[str, Any]], out: IO[str]) -> None:
    cells = [[state_label(r) if c == "state" else cell(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def status_text(status: dict[str, Any], out: TextIO | None = None) -> None:
    """``batchctl status``: one field per line."""
    con = console(out or sys.stdout)
    jobs = ", ".join(status.get("jobs") or ()) or "-"
    if not con.is_terminal:
        for key in STATUS_FIELDS:
            print(f"{key:12} {state_label(status) if key == 'state' else cell(status.get(key))}", file=con.file)
        print(f"{'jobs':12} {jobs}", file=con.file)
        return
    view = Table(box=None, show_header=False)
    view.add_column(style="bold")
    view.add_column()
    for key in STATUS_FIELDS:
        view.add_row(key, state_text(status) if key == "state" else cell(status.get(key)))
    view.add_row("jobs", jobs)
    con.print(view)


class RateColumn(ProgressColumn):
    """Parts done per second, as ``rich`` estimates it from recent updates."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} parts/s" if task.speed else "", style="progress.data.speed")


class ProgressBar:
    """``submit --wait`` and ``demo``: a live ``rich.progress`` bar on a terminal (stderr by default);
    when piped, a line per change (``ID [###x....] done/total done, N dead, N workers, state``)."""

    def __init__(self, out: TextIO | None = None, width: int = 30) -> None:
        self.console = console(out or sys.stderr)
        self.width = width
        self.last = ""
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def update(self, status: dict[str, Any]) -> None:
        if self.console.is_terminal:
            self._live(status)
        else:
            self._line(status)

    def _live(self, status: dict[str, Any]) -> None:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn("{task.completed}/{task.total} done, {task.fields[dead]} dead"),
                TextColumn("{task.fields[workers]} workers"), RateColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[state]}"), console=self.console,
            )
            self.progress.start()
            self.task = self.progress.add_task(str(status["batch_id"]), total=None, dead=0, workers=0, state="")
        assert self.task is not None
        self.progress.update(self.task, total=max(1, int(status["parts_total"])), completed=int(status["parts_done"]),
                             dead=status["parts_dead"], workers=status["workers"], state=state_label(status))

    def _line(self, status: dict[str, Any]) -> None:
        total = max(1, int(status["parts_total"]))
        done, dead = int(status["parts_done"]), int(status["parts_dead"])
        filled = int(self.width * done / total)
        failed = min(self.width - filled, int(self.width * dead / total))
        bar = "#" * filled + "x" * failed + "." * (self.width - filled - failed)
        line = (f"{status['batch_id']} [{bar}] {done}/{total} done, {dead} dead, "
                f"{status['workers']} workers, {state_label(status)}")
        if line != self.last:
            self.last = line
            print(line, file=self.console.file, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
