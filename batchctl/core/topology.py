"""A batch's Pub/Sub resources: created together, deleted together.

Per batch: work topic + subscription (dead-letter policy to the dead topic) and
dead topic + subscription. Shared: the control (requests) and events topics and
the launcher's subscriptions to them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from batchctl.core import logs
from batchctl.core.pubsub import PubSub, SubscriptionSpec
from batchctl.core.settings import WORK_ACK_DEADLINE_S


@dataclass(frozen=True)
class BatchTopology:
    """How a batch's subscriptions behave; every default is deliberate."""

    ack_deadline_s: int = WORK_ACK_DEADLINE_S
    """Lease of a pulled part before redelivery; workers extend it while they work."""
    max_delivery_attempts: int = 5
    """Deliveries before a part goes to the dead-letter topic (Pub/Sub allows 5..100)."""
    min_backoff_s: int = 1
    """Redelivery delay after a nack: short, since a nack usually means another worker should try."""
    max_backoff_s: int = 60


REDELIVERY_MARGIN = 1.5
"""Pub/Sub's retry backoff is approximate: a nacked part is counted back after this many times its
nominal backoff..."""
REDELIVERY_SLACK_S = 2.0
"""...plus this long."""


def back_within(attempt: int, *, min_backoff_s: float, max_backoff_s: float) -> float:
    """Seconds after the nack of delivery ``attempt`` by which the part is deliverable again, with
    margin: the retry backoff doubles from ``min_backoff_s`` per delivery, up to ``max_backoff_s``.
    The worker awaits its own nacks by it, the launcher the parts its dead-letter check gave back."""
    backoff = min(max_backoff_s, min_backoff_s * 2.0 ** max(0, attempt - 1))
    return backoff * REDELIVERY_MARGIN + REDELIVERY_SLACK_S


def create_batch(pubsub: PubSub, batch_id: str, topology: BatchTopology) -> list[str]:
    """Create the batch's topics and subscriptions; BatchExists if the id is taken.

    Returns what was created, in order, so a caller can undo exactly that. On failure
    part-way, what was created is deleted before the error propagates.
    """
    names = pubsub.settings.names
    work, dead = names.work(batch_id), names.dead(batch_id)
    labels = names.pubsub_labels(batch_id, created=time.time())
    created: list[str] = []
    try:
        pubsub.create_topic(work, exist_ok=False, labels=labels)
        created.append(f"topic:{work}")
        pubsub.create_topic(dead, exist_ok=False, labels=labels)
        created.append(f"topic:{dead}")
        pubsub.create_subscription(
            dead, dead, SubscriptionSpec(ack_deadline_s=60, expiration_ttl_days=None, labels=labels), exist_ok=False
        )
        created.append(f"subscription:{dead}")
        spec = SubscriptionSpec(
            ack_deadline_s=topology.ack_deadline_s,
            dead_letter_topic=dead,
            max_delivery_attempts=topology.max_delivery_attempts,
            min_backoff_s=topology.min_backoff_s,
            max_backoff_s=topology.max_backoff_s,
            labels=labels,
        )
        pubsub.create_subscription(work, work, spec, exist_ok=False)
        created.append(f"subscription:{work}")
    except BaseException:
        undo(pubsub, created)
        raise
    return created


def undo(pubsub: PubSub, created: list[str]) -> list[str]:
    """Delete what ``create_batch`` reported as created, newest first; returns what could not be.

    Every delete is tried, whatever failed before it: the outage that caused a rollback
    often makes one delete fail, and the others may still succeed.
    """
    left: list[str] = []
    for item in reversed(created):
        kind, name = item.split(":", 1)
        try:
            if kind == "subscription":
                pubsub.delete_subscription(name)
            else:
                pubsub.delete_topic(name)
        except Exception:  # reported to the caller by name; the next delete is still tried
            left.append(item)
    return left


def delete_batch(pubsub: PubSub, batch_id: str, *, keep_dead: bool = False) -> None:
    """Delete the batch's resources; missing ones are fine. ``keep_dead`` keeps dead parts for retry."""
    names = pubsub.settings.names
    pubsub.delete_subscription(names.work(batch_id))
    pubsub.delete_topic(names.work(batch_id))
    if not keep_dead:
        pubsub.delete_subscription(names.dead(batch_id))
        pubsub.delete_topic(names.dead(batch_id))


LAUNCHER_ACK_DEADLINE_S = 20
"""The launcher acks requests and events within a tick; if it dies holding some, a successor
gets them after at most this long."""


LAUNCHER_MAX_DELIVERY_ATTEMPTS = 10
"""Deliveries of a control message or event before Pub/Sub moves it to its dead-letter topic: a
message that fails every time (a bug, a permanent error not yet known as one) stops coming back."""


def ensure_shared(pubsub: PubSub) -> None:
    """Create the control and events topics and the launcher's subscriptions if missing.

    Each launcher subscription dead-letters to its own topic (``P-requests-dead-letters``,
    ``P-events-dead-letters``, each with a subscription of that name keeping what lands there
    for inspection) after ``LAUNCHER_MAX_DELIVERY_ATTEMPTS``. They have no retry policy: what a
    launcher gives back (it lost the Lease, or the error may never pass) goes to the next try at
    once, and the emulator, on a subscription with a retry policy, does not always deliver again a
    message whose third or later delivery lapsed (``bench/emulator_leases.py``; issue 12). An
    existing launcher subscription that lacks the dead-letter policy (a deployment from before it
    existed), or has a retry policy, is given this one in place, keeping what it holds; one that
    matches is left as it is.
    """
    names = pubsub.settings.names
    shared = names.pubsub_labels()
    for topic, subscription, dead in (
        (names.requests_topic, names.requests_subscription, names.requests_dead_letters),
        (names.events_topic, names.events_subscription, names.events_dead_letters),
    ):
        pubsub.create_topic(topic, exist_ok=True, labels=shared)
        pubsub.create_topic(dead, exist_ok=True, labels=shared)
        pubsub.create_subscription(
            dead, dead, SubscriptionSpec(ack_deadline_s=60, expiration_ttl_days=None, labels=shared), exist_ok=True
        )
        spec = SubscriptionSpec(
            ack_deadline_s=LAUNCHER_ACK_DEADLINE_S,
            dead_letter_topic=dead,
            max_delivery_attempts=LAUNCHER_MAX_DELIVERY_ATTEMPTS,
            min_backoff_s=0,
            max_backoff_s=0,
            labels=shared,
        )
        if not pubsub.create_subscription(subscription, topic, spec, exist_ok=True):
            _upgrade(pubsub, subscription, spec)


def _upgrade(pubsub: PubSub, subscription: str, spec: SubscriptionSpec) -> None:
    """Give an existing launcher subscription the delivery policy of ``spec`` if its own differs
    (no dead-letter policy, or a retry policy)."""
    now = pubsub.subscription_spec(subscription)
    if now.dead_letter_topic is None or now.max_backoff_s != spec.max_backoff_s:
        pubsub.set_delivery_policy(subscription, spec)
        logs.get("topology").info("delivery_policy_updated", subscription=subscription,
                                  dead_letter_topic=spec.dead_letter_topic, retry_policy=spec.max_backoff_s > 0)
