"""SIGTERM and SIGINT: the first asks the worker to stop, the second ends it at once.

The signal handler only sets plain attributes (no locks: it runs between two
bytecodes of the main thread, which may itself hold a lock). The main thread polls
``requested`` between pulls and in ``wait``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

from batchctl.core.errors import EXIT_FAILED

POLL_S = 0.05


class Shutdown:
    """A stop request with a deadline: ``budget_s`` after the first signal."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.requested = False
        self.cause = ""
        self.deadline: float | None = None

    def request(self, cause: str) -> None:
        """Ask the worker to stop; in-flight parts get until ``deadline`` to finish."""
        if not self.requested:
            self.deadline = time.monotonic() + self.budget_s
            self.cause = cause
            self.requested = True

    def remaining(self) -> float:
        """Seconds left of the budget (the full budget before any request)."""
        if self.deadline is None:
            return self.budget_s
        return max(0.0, self.deadline - time.monotonic())

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on a stop request; True if one came."""
        end = time.monotonic() + seconds
        while not self.requested:
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(POLL_S, left))
        return True

    def install(self) -> None:
        """Handle SIGTERM and SIGINT (only possible on the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            os.write(2, f"batchctl worker: second signal ({name}): exiting now\n".encode())
            os._exit(EXIT_FAILED)
        self.request(name)
