"""Messages taken but not stored yet: the leader holds them and applies them again; it never nacks them.

A save can fail (the API away or throttling, a conflict, the Lease lost) while applying an event
or a request. The message is not the cause, so it is not given back: a nack costs a delivery
attempt (the tenth moves it to the dead-letter topic, so an API outage of a minute under backoff
would dead-letter progress, or a submit), and on the Pub/Sub emulator a message whose third or
later delivery lapses (nacked twice, then leased to a launcher that dies) is not always delivered
again (``bench/emulator_leases.py``; issue 12: the Kubernetes chaos run's progress "handled,
acked, never counted"). Pub/Sub redelivers what a dead subscriber held; the launcher should not
rest on that either way.

So the leader keeps them and, on its next pass that takes messages (after the intake pause),
applies them again, before whatever else came. While held, their leases are extended
(``modifyAckDeadline``) at every failed try and at least every half ack deadline, so Pub/Sub
delivers them to no one else meanwhile. If the leader dies, the leases lapse and Pub/Sub
delivers them again; if it loses the Lease, it gives them back at once (a nack: the next leader
needs them now). One ``HeldMessages`` per subscription (requests, events).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from batchctl.core import logs, topology
from batchctl.core.pubsub import PubSub, Received


class HeldMessages:
    def __init__(self, pubsub: PubSub, subscription: str, *, deadline_s: int = topology.LAUNCHER_ACK_DEADLINE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pubsub, self.subscription, self.deadline_s, self.clock = pubsub, subscription, deadline_s, clock
        self._held: list[Received] = []
        self._extended_at = 0.0
        self.log = logs.get("launcher")

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, msgs: Sequence[Received]) -> None:
        """Keep ``msgs`` for a later pass, their leases extended from now."""
        self._held.extend(msgs)
        self._extend()

    def take(self, fresh: Sequence[Received] = ()) -> list[Received]:
        """Everything held, then ``fresh``; a held copy of a message delivered again (its lease
        lapsed while extending failed) gives way to the new delivery, whose ack id is current."""
        again = {m.message_id for m in fresh}
        held, self._held = self._held, []
        return [m for m in held if m.message_id not in again] + list(fresh)

    def release(self) -> list[tuple[str, Received]]:
        """Everything held, as (subscription, message) for ``Inbox.give_back``."""
        return [(self.subscription, m) for m in self.take()]

    def keep_leased(self) -> None:
        """Extend the held messages' leases if half an ack deadline passed since the last extension
        (a pass can wait out a Retry-After of up to a minute before it takes messages again)."""
        if self._held and self.clock() - self._extended_at >= self.deadline_s / 2:
            self._extend()

    def _extend(self) -> None:
        self._extended_at = self.clock()
        ids = [m.ack_id for m in self._held]
        try:
            for i in range(0, len(ids), 1000):
                self.pubsub.modify_ack_deadline(self.subscription, ids[i : i + 1000], self.deadline_s)
        except Exception as exc:  # a lease that lapses: Pub/Sub delivers the message again (``take``)
            self.log.warning("held_lease_not_extended", subscription=self.subscription, messages=len(ids),
                             error=str(exc))
