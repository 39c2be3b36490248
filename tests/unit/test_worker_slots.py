"""Handler slots.

Checks: a slot whose work raises (even BaseException) reports it and goes on
serving; the free count is right afterwards.
"""

from __future__ import annotations

import threading

from batchctl.worker.slots import Slots


def test_a_slot_outlives_an_exception_and_reports_it() -> None:
    """Item 1 raises, item 2 is still handled by the single slot; on_crash heard of item 1."""
    done: list[int] = []
    crashed: list[tuple[int, str]] = []
    finished = threading.Event()

    def work(item: int) -> None:
        if item == 1:
            raise ValueError("invalid literal for int() with base 10: '²'")
        if item == 2:
            raise SystemExit(3)
        done.append(item)
        finished.set()

    slots: Slots[int] = Slots(1, work, on_crash=lambda item, exc: crashed.append((item, type(exc).__name__)))
    slots.start()
    for item in (1, 2, 3):
        assert slots.wait_free(timeout=5) == 1
        slots.submit(item)
    assert finished.wait(5)
    assert done == [3]
    assert crashed == [(1, "ValueError"), (2, "SystemExit")]
    assert slots.wait_free(timeout=5) == 1


def test_a_failing_crash_report_does_not_end_the_slot() -> None:
    """Even ``on_crash`` raising leaves the slot serving."""
    done = threading.Event()

    def work(item: int) -> None:
        if item == 1:
            raise RuntimeError("bug")
        done.set()

    def report(item: int, exc: BaseException) -> None:
        raise RuntimeError("report bug")

    slots: Slots[int] = Slots(1, work, on_crash=report)
    slots.start()
    slots.submit(1)
    assert slots.wait_free(timeout=5) == 1
    slots.submit(2)
    assert done.wait(5)
