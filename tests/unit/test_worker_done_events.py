"""Aggregated ``part_done`` events on the worker, against a stand-in for the events publisher.

Checks: parts are flushed as one event when ``max_parts`` are pending, or ``flush_s``
after the first; each part is handed back (to be acked) only when the event naming it
is confirmed, and as failed (to be nacked) when the publish fails; stop publishes
what is pending.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import structlog

from batchctl.core.pubsub import Received
from batchctl.worker.done_events import DoneEvents, Pending
from batchctl.worker.lease import Held


class FakeEvents:
    """Records each ``parts_done`` call and returns a future the test resolves."""

    def __init__(self) -> None:
        self.published: list[tuple[list[int], Future[str]]] = []
        self.changed = threading.Event()

    def parts_done(self, parts: list[int]) -> Future[str]:
        future: Future[str] = Future()
        self.published.append((parts, future))
        self.changed.set()
        return future


def held(n: int) -> Held:
    return Held(Received(ack_id=f"a{n}", message_id=f"m{n}", data=b"", attributes={}, delivery_attempt=1))


def make(max_parts: int, flush_s: float) -> tuple[DoneEvents, FakeEvents, list[tuple[list[int], bool]]]:
    fake = FakeEvents()
    handed: list[tuple[list[int], bool]] = []

    def confirmed(batch: Pending, ok: bool) -> None:
        handed.append(([part for _, part in batch], ok))

    done = DoneEvents(fake, confirmed, structlog.get_logger(), max_parts=max_parts, flush_s=flush_s)  # type: ignore[arg-type]
    return done, fake, handed


def test_flushed_by_count_and_acked_only_after_confirmation() -> None:
    """Three parts with max 3: one event at once; nothing handed back until it is confirmed."""
    done, fake, handed = make(max_parts=3, flush_s=60)
    for n in range(3):
        done.add(held(n), n)
    [(parts, future)] = fake.published
    assert parts == [0, 1, 2]
    assert handed == []
    future.set_result("id")
    assert handed == [([0, 1, 2], True)]


def test_flushed_by_age() -> None:
    """Two parts, max 1000, 50 ms window: one event within the window, naming both."""
    done, fake, _ = make(max_parts=1000, flush_s=0.05)
    done.start()
    try:
        done.add(held(0), 0)
        done.add(held(1), 1)
        assert fake.changed.wait(5)
        assert [parts for parts, _ in fake.published] == [[0, 1]]
    finally:
        done.stop()


def test_a_failed_event_hands_its_parts_back_failed() -> None:
    """The publish of the event fails: every part it named comes back not ok (to be nacked)."""
    done, fake, handed = make(max_parts=2, flush_s=60)
    done.add(held(7), 7)
    done.add(held(8), 8)
    fake.published[0][1].set_exception(RuntimeError("injected"))
    assert handed == [([7, 8], False)]


def test_stop_publishes_what_is_pending() -> None:
    """A part added just before stop is not left behind."""
    done, fake, _ = make(max_parts=1000, flush_s=60)
    done.start()
    done.add(held(3), 3)
    done.stop()
    assert [parts for parts, _ in fake.published] == [[3]]
