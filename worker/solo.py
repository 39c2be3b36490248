"""A redelivered part runs alone, so a part that kills its worker takes no other part down with it.

A worker killed by its handler (SIGKILL, an OOM kill: exit 137) cannot nack. Everything it held
comes back together once its leases lapse: the part that killed it, and every part it held beside
it (prefetched, running on other slots, or handled but not yet acked). A worker that pulls them
together again and runs them as before dies again with all of them, until Pub/Sub dead-letters
every one: one poison part would fail its neighbours too.

So a part on its second or later delivery (its previous holder died, failed it, or gave it back)
runs alone:

- it waits behind the first deliveries this worker holds (they run first);
- the other redelivered parts waiting beside it are given back (nacked) at once, to run on another
  worker now, while they have deliveries to spare: a nack costs a delivery attempt, which a part
  would lose anyway if this one killed the worker, but attempts are also all that stands between a
  healthy part and the dead-letter topic. Given back with no limit, healthy parts were bounced
  onto the dead-letter topic in the chaos runs (4 of 2,500 locally, 27 of 20,000 on Kubernetes).
  So a part is given back only if two deliveries would remain (``may_give_back``); one nearer its
  last stays held, its lease extended, and runs after this one;
- it starts only once every other part this worker started is handled and acked, and once a
  ``part_started`` event (part, attempt) is confirmed: if the part kills the worker, the launcher
  still knows which delivery it died on, and counts it dead after its last one;
- while it waits and runs, and after a pull that brought a redelivered part, the worker pulls at
  most one part at a time, so it seldom holds two redelivered parts at once.

A part that kills every worker is therefore delivered alone from its second delivery on, and is
dead-lettered after the subscription's max delivery attempts, alone. First deliveries are
untouched: a batch without redeliveries runs exactly as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from batchctl.core.pubsub import Received
from batchctl.worker.drain import DrainTracker
from batchctl.worker.events import Events
from batchctl.worker.lease import Held, Leases
from batchctl.worker.part import part_index
from batchctl.worker.slots import Slots


class Turn(Enum):
    """What a slot does with a redelivered part it was given."""

    LATER = "later"
    """First deliveries are waiting in this worker: queue the part behind them."""
    ALONE = "alone"
    """Give back the other waiting parts, wait until the rest are acked, then run it."""


def redelivered(attempt: int) -> bool:
    """Pub/Sub's delivery attempt (1 on first delivery; 0 or 1 without a dead-letter policy)."""
    return attempt > 1


def may_give_back(attempt: int, max_delivery_attempts: int | None) -> bool:
    """Whether a part on delivery ``attempt`` may be nacked to make room: only while at least two
    deliveries would remain after this one (None: no dead-letter policy, nothing to run out of)."""
    return max_delivery_attempts is None or attempt <= max_delivery_attempts - 2


def turn(*, waiting_first_deliveries: int) -> Turn:
    """When a redelivered part may run: after the first deliveries waiting beside it, alone."""
    return Turn.LATER if waiting_first_deliveries else Turn.ALONE


def pull_size(room: int, *, careful: bool) -> int:
    """How many parts to pull: ``room``, or at most one while redelivered parts are about."""
    return min(room, 1) if careful else room


WAIT_STEP_S = 0.2
"""How often a redelivered part waiting to run alone looks again (and pulls are looked at again)."""
ANNOUNCE_TIMEOUT_S = 10.0
"""Longest wait for ``part_started``'s confirmation; the part runs anyway after it (logged)."""


class Solo:
    """Applies the rules above for one worker: its slots call ``run``, its pull loop ``pull_size``."""

    def __init__(self, leases: Leases, slots: Slots[Held], drain: DrainTracker, events: Events, log: Any) -> None:
        self._leases, self._slots, self._drain = leases, slots, drain
        self._events, self._log = events, log
        self._one_at_a_time = threading.Lock()
        self._pulls_open = threading.Event()
        self._pulls_open.set()
        self.careful = False
        """The last pull brought a redelivered part."""

    def pulled(self, messages: Iterable[Received]) -> None:
        self.careful = any(redelivered(m.delivery_attempt) for m in messages)

    def pull_size(self, room: int) -> int:
        """Parts the pull loop may pull now (waits up to WAIT_STEP_S while a part runs alone: 0)."""
        if not self._pulls_open.wait(WAIT_STEP_S):
            return 0
        return pull_size(room, careful=self.careful)

    def run(self, held: Held, run_part: Callable[[Held], None]) -> None:
        """``run_part(held)`` now (a first delivery), later, or alone (a redelivery)."""
        if not redelivered(held.received.delivery_attempt):
            run_part(held)
            return
        first = [h for h in self._leases.waiting_beside(held) if not redelivered(h.received.delivery_attempt)]
        if turn(waiting_first_deliveries=len(first)) is Turn.LATER:
            self._slots.submit(held)  # behind them, on the same slots
            return
        with self._one_at_a_time:
            self._pulls_open.clear()
            try:
                if self._wait_alone(held):
                    self._announce(held)
                    run_part(held)
            finally:
                self._pulls_open.set()

    def _wait_alone(self, held: Held) -> bool:
        """Give back the parts waiting beside ``held`` that have deliveries to spare, and wait until
        no other part this worker started is unsettled (the rest wait, held); False if ``held``
        itself was given back meanwhile (the worker is stopping)."""
        while not held.claimed:
            self._give_back(self._leases.waiting_beside(held))
            if self._leases.wait_alone(held, timeout=WAIT_STEP_S):
                break
        return not held.claimed

    def _give_back(self, waiting: list[Held]) -> None:
        most = self._drain.policy.max_delivery_attempts
        spare = [h for h in waiting if may_give_back(h.received.delivery_attempt, most)]
        now = time.monotonic()
        for h in self._leases.release(spare):
            self._drain.nacked(h.received.message_id, h.received.delivery_attempt, now=now)

    def _announce(self, held: Held) -> None:
        index, attempt = part_index(held.received.attributes), held.received.delivery_attempt
        if index is None:
            return
        try:
            self._events.confirm(self._events.part_started(index, attempt), timeout_s=ANNOUNCE_TIMEOUT_S)
        except Exception as exc:  # the part still runs: the launcher then learns less, never wrongly
            self._log.warning("event_not_published", event_type="part_started", part=index,
                              error=f"{type(exc).__name__}: {exc}")
