"""Aggregated ``part_done`` events: one event names every part finished within a short window.

A handled part is added here; an event is published when ``max_parts`` are pending or
``flush_s`` after the first of them, whichever comes first. When Pub/Sub confirms the
event (or refuses it), ``confirmed(batch, ok)`` hands every part it named back to the
settler, which acks them only then (or nacks them): progress stays exact, and a part
costs a share of one event instead of one Pub/Sub message of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from batchctl.worker.events import Events
from batchctl.worker.lease import Held

MAX_PARTS = 1000
"""Parts per event: one publish of ~7 KB; well under the event's limit (``MAX_PARTS_PER_EVENT``)."""
FLUSH_S = 0.2
"""Longest a finished part waits for its event: short next to a part's ack deadline, long enough
that a fast worker's parts share events."""

Pending = list[tuple[Held, int]]


class DoneEvents:
    """Pending finished parts, flushed as one ``part_done`` event by count or by age."""

    def __init__(
        self,
        events: Events,
        confirmed: Callable[[Pending, bool], None],
        log: Any,
        *,
        max_parts: int = MAX_PARTS,
        flush_s: float = FLUSH_S,
    ) -> None:
        self._events = events
        self._confirmed = confirmed
        self._log = log
        self._max_parts = max_parts
        self._flush_s = flush_s
        self._pending: Pending = []
        self._first_at = 0.0
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def add(self, held: Held, part: int) -> None:
        """A part is done; its event goes out with others' within ``flush_s``."""
        with self._changed:
            if not self._pending:
                self._first_at = time.monotonic()
                self._changed.notify_all()
            self._pending.append((held, part))
            batch = self._take() if len(self._pending) >= self._max_parts else None
        if batch:
            self._publish(batch)

    def _take(self) -> Pending:
        batch, self._pending = self._pending, []
        return batch

    def _publish(self, batch: Pending) -> None:
        try:
            future = self._events.parts_done([part for _, part in batch])
        except Exception as exc:  # e.g. the publisher refuses: the parts are redone later, not lost
            self._log.warning("event_not_published", event_type="part_done", parts=len(batch), error=_describe(exc))
            self._confirmed(batch, False)
            return
        future.add_done_callback(lambda f: self._done(batch, f))

    def _done(self, batch: Pending, future: Future[str]) -> None:
        error = None if future.cancelled() else future.exception()
        ok = not future.cancelled() and error is None
        if not ok:
            self._log.warning("event_not_published", event_type="part_done", parts=len(batch), error=_describe(error))
        self._confirmed(batch, ok)

    # ---- the flushing thread -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="done-events", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is pending now and end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._stopping)
                due = self._first_at + self._flush_s
                self._changed.wait_for(lambda: self._stopping or not self._pending, timeout=due - time.monotonic())
                batch = self._take()
                stopping = self._stopping
            if batch:
                self._publish(batch)
            if stopping:
                return


def _describe(error: BaseException | None) -> str:
    return "cancelled" if error is None else f"{type(error).__name__}: {error}"
