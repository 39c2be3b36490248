"""The stop request behind SIGTERM/SIGINT (the signals themselves are tested in tests/e2e).

Checks: the budget starts at the first request; a second request keeps the first
deadline; ``wait`` returns early on a request and on time otherwise.
"""

from __future__ import annotations

import threading
import time

from batchctl.worker.shutdown import Shutdown


def test_budget_runs_from_the_first_request() -> None:
    """Before a request the full budget remains; after it, the deadline is fixed."""
    shutdown = Shutdown(5.0)
    assert shutdown.remaining() == 5.0
    shutdown.request("SIGTERM")
    deadline = shutdown.deadline
    shutdown.request("SIGINT")
    assert (shutdown.requested, shutdown.cause, shutdown.deadline) == (True, "SIGTERM", deadline)
    assert 4.0 < shutdown.remaining() <= 5.0


def test_wait_times_out_without_a_request() -> None:
    """No request: wait sleeps its time and says False."""
    started = time.monotonic()
    assert Shutdown(1.0).wait(0.1) is False
    assert time.monotonic() - started >= 0.1


def test_wait_wakes_on_a_request() -> None:
    """A request from another thread ends a long wait early."""
    shutdown = Shutdown(1.0)
    timer = threading.Timer(0.05, shutdown.request, args=("SIGTERM",))
    timer.start()
    started = time.monotonic()
    assert shutdown.wait(10) is True
    assert time.monotonic() - started < 2
    timer.join()
