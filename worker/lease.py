"""The parts this worker holds, and the thread that keeps their leases alive.

Every pulled message is ``Held`` here from the pull until its ack or nack has been
sent, so "nothing in flight" (for drain) is exact. A background thread renews the
ack deadline of everything held every ``renew_every_s``, so a part that runs for
hours is not redelivered meanwhile; if the worker dies, renewals stop and Pub/Sub
redelivers the part within ``lease_s``.

Nacks and renewals go through one RPC lock: a renewal can never land after the nack
of the same message and quietly take it back for another lease. Acks need no lock (a
renewal of an acked message changes nothing), so an ack never delays a renewal. Every
call is bounded by ``settle_timeout_s``, well below the lease, so a nack on a slow
network delays renewals by that much at most.

A message's outcome is claimed once (``claim``): by its handler's result, by the
part timeout, or by the worker giving everything back at exit, whichever comes first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from batchctl.core.pubsub import PubSub, Received

MAX_IDS_PER_REQUEST = 1000
"""Ack ids per acknowledge/modifyAckDeadline request, well inside the 512 KB request limit."""
SETTLE_TIMEOUT_S = 5.0
"""Longest an ack, nack or renewal may take, retries included (and at most a third of the lease)."""


@dataclass(eq=False)
class Held:
    """One pulled message, from pull to ack or nack."""

    received: Received
    started_at: float | None = None
    """Monotonic time a slot started its handler (None while it waits for one)."""
    claimed: bool = False
    """An outcome was taken (done, failed, timed out or given back); later ones are ignored."""
    abandoned: bool = False
    """Set when the worker gave the message back while its handler still ran."""
    pulled_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Settled:
    """What one ``settle`` sent: how many acks and nacks went out, and the nacks that failed."""

    acked: int
    nacked: int
    nack_failed: list[Held]


class Leases:
    """Thread-safe registry of held messages plus their lease renewal thread."""

    def __init__(self, pubsub: PubSub, subscription: str, *, lease_s: int, renew_every_s: float, log: Any) -> None:
        self._pubsub = pubsub
        self._subscription = subscription
        self._lease_s = lease_s
        self._renew_every_s = renew_every_s
        self.settle_timeout_s = min(SETTLE_TIMEOUT_S, max(0.5, lease_s / 3))
        self._log = log
        self._held: dict[str, Held] = {}
        self._changed = threading.Condition()
        self._rpc_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- registry --------------------------------------------------------------------
    def add(self, messages: Iterable[Received]) -> list[Held]:
        held = [Held(m) for m in messages]
        with self._changed:
            for h in held:
                self._held[h.received.ack_id] = h
        return held

    def count(self) -> int:
        with self._changed:
            return len(self._held)

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Wait until fewer than ``limit`` messages are held; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._held) < limit, timeout=max(0.0, timeout))

    def claim(self, held: Held) -> bool:
        """Take the message's outcome; False if another one was taken first."""
        with self._changed:
            if held.claimed:
                return False
            held.claimed = True
            return True

    def begin(self, held: Held) -> bool:
        """A slot starts the message's handler; False if its outcome was taken already (given back)."""
        with self._changed:
            if held.claimed:
                return False
            held.started_at = time.monotonic()
            return True

    def waiting_bytes(self) -> int:
        """Bytes of held messages no handler has started yet (the prefetch window's size)."""
        with self._changed:
            return sum(len(h.received.data) for h in self._held.values() if h.started_at is None)

    def give_back_waiting(self) -> int:
        """Nack at once every held message no handler started (prefetched ones): on a stop they go
        back to the queue for another worker instead of waiting out the drain budget."""
        with self._rpc_lock:
            with self._changed:
                waiting = [h for h in self._held.values() if h.started_at is None and not h.claimed]
                for h in waiting:
                    h.claimed = h.abandoned = True
            self._send("nack", waiting)
            self._remove(waiting)
        return len(waiting)

    def waiting_beside(self, held: Held) -> list[Held]:
        """Held messages other than ``held`` that no handler started and no outcome claimed."""
        with self._changed:
            return [h for h in self._held.values() if h is not held and h.started_at is None and not h.claimed]

    def release(self, items: list[Held]) -> list[Held]:
        """Nack these unstarted messages at once (those still unclaimed); returns the ones nacked."""
        with self._rpc_lock:
            with self._changed:
                items = [h for h in items if not h.claimed and h.started_at is None]
                for h in items:
                    h.claimed = h.abandoned = True
            self._send("nack", items)
            self._remove(items)
        return items

    def wait_alone(self, held: Held, timeout: float) -> bool:
        """Wait until no message but ``held`` is started and unsettled (or ``held`` was given back);
        messages held unstarted may stay. False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: held.claimed or all(h is held or h.started_at is None for h in self._held.values()),
                timeout=max(0.0, timeout),
            )

    def overdue(self, *, now: float, limit_s: float) -> list[Held]:
        """Messages whose handler started more than ``limit_s`` ago and has no outcome yet."""
        with self._changed:
            return [
                h for h in self._held.values()
                if not h.claimed and h.started_at is not None and now - h.started_at > limit_s
            ]

    def _remove(self, held: Iterable[Held]) -> None:
        with self._changed:
            for h in held:
                self._held.pop(h.received.ack_id, None)
            self._changed.notify_all()

    # ---- settling --------------------------------------------------------------------
    def settle(self, acks: list[Held], nacks: list[Held]) -> Settled:
        """Ack and nack (skipping abandoned ones). A nack that fails leaves its message leased
        until the lease lapses: it is returned in ``nack_failed`` so drain waits for it."""
        acks = [h for h in acks if not h.abandoned]
        nacks = [h for h in nacks if not h.abandoned]
        self._send("ack", acks)
        with self._rpc_lock:
            failed = self._send("nack", nacks)
            self._remove(acks + nacks)
        return Settled(len(acks), len(nacks), failed)

    def give_back(self, messages: Iterable[Received]) -> None:
        """Nack messages that were pulled but will not be handled (a stop came first)."""
        held = [Held(m) for m in messages]
        if held:
            with self._rpc_lock:
                self._send("nack", held)

    def abandon_all(self) -> int:
        """Nack everything still held and mark it abandoned; a later outcome is then ignored."""
        with self._rpc_lock:
            with self._changed:
                held = list(self._held.values())
                for h in held:
                    h.abandoned = h.claimed = True
            self._send("nack", held)
            self._remove(held)
        return len(held)

    def _send(self, what: str, held: list[Held]) -> list[Held]:
        """One bounded RPC per chunk of ack ids; returns the messages of failed chunks
        (logged: a failed ack or renewal means a later duplicate, never a loss)."""
        failed: list[Held] = []
        for start in range(0, len(held), MAX_IDS_PER_REQUEST):
            chunk = held[start : start + MAX_IDS_PER_REQUEST]
            ids = [h.received.ack_id for h in chunk]
            try:
                if what == "ack":
                    self._pubsub.ack(self._subscription, ids, timeout_s=self.settle_timeout_s)
                elif what == "nack":
                    self._pubsub.nack(self._subscription, ids, timeout_s=self.settle_timeout_s)
                else:
                    self._pubsub.modify_ack_deadline(
                        self._subscription, ids, self._lease_s, timeout_s=self.settle_timeout_s
                    )
            except Exception as exc:  # see above
                self._log.warning(f"{what}_failed", messages=len(chunk), error=f"{type(exc).__name__}: {exc}")
                failed.extend(chunk)
        return failed

    # ---- renewal ---------------------------------------------------------------------
    def renew(self) -> int:
        """Extend the lease of everything held to ``lease_s`` from now; returns how many."""
        with self._rpc_lock:
            with self._changed:
                held = [h for h in self._held.values() if not h.abandoned]
            self._send("renew", held)
        return len(held)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._renew_every_s):
            renewed = self.renew()
            if renewed:
                self._log.debug("leases_renewed", messages=renewed, lease_s=self._lease_s)
