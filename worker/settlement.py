"""Settling a handled part: publish its outcome event, then ack (done) or nack (failed).

A handler slot hands its outcome over and is free at once; this module finishes the
part off the slot's time. ``part_done`` is published (aggregated: one event names the
parts finished within ~200 ms, see ``done_events``), and only when Pub/Sub has
confirmed the event naming it is the part acked (if the event cannot be published, the part is
nacked and done again later: a duplicate, never a lost count). Acks and nacks that
pile up meanwhile go out together, one request per kind.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from batchctl.worker.done_events import DoneEvents, Pending
from batchctl.worker.drain import DrainTracker
from batchctl.worker.events import Events
from batchctl.worker.lease import Held, Leases

MAX_BATCH = 1000


@dataclass
class Tally:
    """What this worker settled; read at exit for the log and the bench."""

    done: int = 0
    failed: int = 0
    first_pull_at: float | None = None
    """Wall-clock time of the first part received."""
    last_ack_at: float | None = None
    """Wall-clock time the last ack was sent."""
    cpu_at_first_pull: float | None = None
    """Process CPU seconds (``time.process_time``) when the first part was received."""
    cpu_at_last_ack: float | None = None
    """Process CPU seconds when the last ack was sent: with the above, the drain's CPU without startup."""


class Settler:
    """One thread that acks and nacks handed-over outcomes in batches."""

    def __init__(self, leases: Leases, events: Events, drain: DrainTracker, log: Any, *, hold_s: float) -> None:
        self._leases = leases
        self._hold_s = hold_s
        """How long a message whose nack failed may stay leased (its lease, or the subscription's deadline)."""
        self._events = events
        self._drain = drain
        self._log = log
        self._queue: queue.SimpleQueue[tuple[Held, bool] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._done_events = DoneEvents(events, self._confirmed_many, log)
        self.tally = Tally()

    def done(self, held: Held, part: int, attempt: int) -> None:
        """The handler returned: ``part_done`` goes out with others' soon; the ack follows its confirmation."""
        if not held.abandoned:
            self._done_events.add(held, part)

    def _confirmed_many(self, batch: Pending, ok: bool) -> None:
        for held, _ in batch:
            self._queue.put((held, ok))

    def failed(self, held: Held, part: int | None, attempt: int, reason: str) -> None:
        """The handler raised or the part was rejected: publish ``part_failed`` and nack."""
        if held.abandoned:
            return
        if part is not None:
            try:
                future = self._events.part_failed(part, attempt, reason)
                future.add_done_callback(lambda f: self._check_event(f, part, "part_failed"))
            except Exception as exc:  # the nack below matters more than the event
                self._log.warning("event_not_published", event_type="part_failed", part=part, error=_describe(exc))
        self._queue.put((held, False))

    def _check_event(self, future: Future[str], part: int, kind: str) -> bool:
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            self._log.warning("event_not_published", event_type=kind, part=part, error=_describe(error))
            return False
        return True

    # ---- thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._done_events.start()
        self._thread = threading.Thread(target=self._run, name="settler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Publish the pending ``part_done`` event, settle what is queued, then end the thread."""
        self._done_events.stop()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            outcomes = [item for item in batch if item is not None]
            if outcomes:
                self._settle(outcomes)
            if len(outcomes) < len(batch):
                return

    def _next_batch(self) -> list[tuple[Held, bool] | None]:
        batch = [self._queue.get()]
        while len(batch) < MAX_BATCH and batch[-1] is not None:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _settle(self, outcomes: list[tuple[Held, bool]]) -> None:
        acks = [held for held, ok in outcomes if ok]
        nacks = [held for held, ok in outcomes if not ok]
        now = time.monotonic()
        for held in nacks:  # before the nack: while it is held, no empty pull counts
            self._drain.nacked(held.received.message_id, held.received.delivery_attempt, now=now)
        settled = self._leases.settle(acks, nacks)
        for held in settled.nack_failed:  # still leased to us, invisible, until its lease lapses
            received = held.received
            self._drain.nacked(received.message_id, received.delivery_attempt, now=now, leased_until=now + self._hold_s)
        acked, nacked = settled.acked, settled.nacked
        self.tally.failed += nacked
        if acked:
            self.tally.done += acked
            self.tally.last_ack_at = time.time()
            self.tally.cpu_at_last_ack = time.process_time()
        self._log.debug("settled", acked=acked, nacked=nacked)


def _describe(error: BaseException | None) -> str:
    return "cancelled" if error is None else f"{type(error).__name__}: {error}"
