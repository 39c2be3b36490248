"""How the CLI shows batches: a table or a progress line on a terminal, JSON for scripts."""

from __future__ import annotations

import sys
from typing import Any, TextIO

COLUMNS = ("batch_id", "state", "parts_done", "parts_dead", "parts_total", "workers", "created")


def table(rows: list[dict[str, Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if not rows:
        print("no batches", file=out)
        return
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)), file=out)


def status_text(status: dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for key in ("batch_id", "state", "parts_total", "parts_done", "parts_dead", "workers", "created",
                "finished", "reason"):
        print(f"{key:12} {status.get(key) if status.get(key) not in (None, '') else '-'}", file=out)
    print(f"{'jobs':12} {', '.join(status['jobs']) or '-'}", file=out)


class ProgressBar:
    """One line redrawn in place on a terminal; a line per change when piped."""

    def __init__(self, out: TextIO | None = None, width: int = 30) -> None:
        self.out, self.width = out or sys.stderr, width
        self.tty = self.out.isatty()
        self.last = ""

    def update(self, status: dict[str, Any]) -> None:
        total = max(1, int(status["parts_total"]))
        done, dead = int(status["parts_done"]), int(status["parts_dead"])
        filled = int(self.width * done / total)
        failed = min(self.width - filled, int(self.width * dead / total))
        bar = "#" * filled + "x" * failed + "." * (self.width - filled - failed)
        line = (f"{status['batch_id']} [{bar}] {done}/{total} done, {dead} dead, "
                f"{status['workers']} workers, {status['state']}")
        if line == self.last:
            return
        self.last = line
        if self.tty:
            self.out.write("\r" + line + "\x1b[K")
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")
            self.out.flush()
