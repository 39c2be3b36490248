"""The chaos run's handler: the built-in demo handler, bracketed by a per-process call log.

``handle`` runs the demo handler (one result file per part, ``<batch>-<part:06d>.json``, written
atomically) and appends one ``S`` line before and one ``D`` line after each call to a per-process
file in ``$BATCHCTL_CHAOS_CALLS_DIR``, so redeliveries and duplicates can be counted and set against
what each killed worker had in flight (``chaos_analysis``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from batchctl.worker import demo

CALLS_ENV = "BATCHCTL_CHAOS_CALLS_DIR"
WORK_ENV = "BATCHCTL_CHAOS_PART_S"

_calls: dict[int, int] = {}
_calls_lock = threading.Lock()


def _calls_fd(results_dir: Path) -> int:
    pid = os.getpid()
    with _calls_lock:
        if pid not in _calls:
            folder = Path(os.environ.get(CALLS_ENV) or results_dir.parent / "calls")
            folder.mkdir(parents=True, exist_ok=True)
            wid = os.environ.get("BATCHCTL_WORKER_ID", "by-hand")
            _calls[pid] = os.open(folder / f"{pid}-{wid}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return _calls[pid]


def handle(part: Any) -> None:
    """The demo handler, bracketed by one appended line before (``S``) and after (``D``) the call."""
    fd = _calls_fd(Path(part.results_dir))
    os.write(fd, f"S {part.index} {part.attempt} {time.time():.6f}\n".encode())
    busy = float(os.environ.get(WORK_ENV) or 0)
    if busy:
        time.sleep(busy)  # stands in for real work, so a kill often finds a part in the handler
    demo.handle(part)
    os.write(fd, f"D {part.index} {part.attempt} {time.time():.6f}\n".encode())

