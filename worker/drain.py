"""When is a subscription drained? A pure rule, so it can be tested exhaustively.

A single empty pull proves nothing: Pub/Sub may answer with fewer messages than
exist. So the worker counts *consecutive* empty pulls made while it is waiting for
nothing; a received part or a nack starts the count again. "Waiting for nothing"
means no part in flight, and no part this worker nacked still due back: a nacked
part stays in the subscription, invisible during its retry backoff, so a worker
that counted empty pulls through that backoff would call a non-empty subscription
drained. A nacked part is awaited until it is received again, or until it cannot
come back (its delivery was the last before the dead-letter topic), or until its
backoff has passed with margin (it went to another worker, who awaits it in turn).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from batchctl.core.topology import BatchTopology, back_within

_DEFAULTS = BatchTopology()


@dataclass(frozen=True)
class RetryPolicy:
    """The work subscription's redelivery rules (read from it; the batch topology's defaults otherwise)."""

    min_backoff_s: float = _DEFAULTS.min_backoff_s
    max_backoff_s: float = _DEFAULTS.max_backoff_s
    max_delivery_attempts: int | None = _DEFAULTS.max_delivery_attempts
    """None: no dead-letter policy, every nacked part comes back."""

    def comes_back(self, attempt: int) -> bool:
        """Whether a part nacked on delivery ``attempt`` is redelivered (not dead-lettered)."""
        return self.max_delivery_attempts is None or attempt < self.max_delivery_attempts

    def due_within(self, attempt: int) -> float:
        """Seconds after the nack of delivery ``attempt`` by which the part should be back."""
        return back_within(attempt, min_backoff_s=self.min_backoff_s, max_backoff_s=self.max_backoff_s)


class DrainTracker:
    """Counts consecutive empty pulls while waiting for nothing; thread-safe, time passed in."""

    def __init__(self, needed: int, policy: RetryPolicy | None = None) -> None:
        if needed < 1:
            raise ValueError("needed must be >= 1")
        self.needed = needed
        self.policy = policy or RetryPolicy()
        self._empty = 0
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def empty(self) -> int:
        """Consecutive empty pulls counted so far."""
        return self._empty

    def received(self, message_ids: list[str]) -> None:
        """A pull brought parts: not empty; any of them we were awaiting is back."""
        with self._lock:
            self._empty = 0
            for message_id in message_ids:
                self._due.pop(message_id, None)

    def nacked(self, message_id: str, attempt: int, *, now: float, leased_until: float | None = None) -> None:
        """A part was given back on delivery ``attempt``: start counting again, await it if it returns.

        ``leased_until``: the nack failed, so the part stays leased (invisible) until then,
        and its backoff starts only when that lease lapses.
        """
        with self._lock:
            self._empty = 0
            if self.policy.comes_back(attempt):
                self._due[message_id] = max(now, leased_until or now) + self.policy.due_within(attempt)

    def awaited(self, *, now: float) -> int:
        """Nacked parts still due back at ``now``."""
        with self._lock:
            return self._awaited(now)

    def _awaited(self, now: float) -> int:
        for message_id in [m for m, due in self._due.items() if due <= now]:
            del self._due[message_id]
        return len(self._due)

    def empty_pull(self, *, in_flight: int, now: float) -> bool:
        """Record an empty pull; True once the subscription counts as drained."""
        with self._lock:
            waiting = in_flight + self._awaited(now)
            if waiting == 0:
                self._empty += 1
            return waiting == 0 and self._empty >= self.needed
