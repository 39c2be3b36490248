"""Pub/Sub resources carry labels that billing reports and ``gcloud --filter`` can select by.

Checks, against the real emulator (which stores labels as Pub/Sub does): a batch's work and
dead-letter topics and subscriptions are labelled ``managed-by: batchctl``,
``batchctl-batch-id: <id>`` and ``batchctl-created: <Unix seconds>`` (for ``gc``); the shared
control and events topics and the launcher's subscriptions are labelled ``managed-by: batchctl``
only.
"""

from __future__ import annotations

import time

from batchctl.core import topology
from batchctl.core.pubsub import PubSub
from batchctl.core.topology import BatchTopology


def labels(pubsub: PubSub, name: str, *, topic: bool) -> dict[str, str]:
    if topic:
        return dict(pubsub.publisher.get_topic(request={"topic": pubsub.topic_path(name)}).labels)
    return dict(pubsub.subscriber.get_subscription(request={"subscription": pubsub.subscription_path(name)}).labels)


def test_a_batchs_topics_and_subscriptions_carry_its_labels(pubsub: PubSub) -> None:
    names = pubsub.settings.names
    before = int(time.time())
    topology.create_batch(pubsub, "lab-1", BatchTopology())
    want = {"managed-by": "batchctl", "batchctl-batch-id": "lab-1"}
    for name in (names.work("lab-1"), names.dead("lab-1")):
        for topic in (True, False):
            found = labels(pubsub, name, topic=topic)
            created = int(found.pop("batchctl-created"))
            assert found == want and before <= created <= time.time(), name


def test_shared_topics_and_subscriptions_carry_the_managed_by_label(pubsub: PubSub) -> None:
    names = pubsub.settings.names
    topology.ensure_shared(pubsub)
    for name in (names.requests_topic, names.events_topic, names.requests_dead_letters, names.events_dead_letters):
        assert labels(pubsub, name, topic=True) == {"managed-by": "batchctl"}, name
    for name in (names.requests_subscription, names.events_subscription, names.requests_dead_letters,
                 names.events_dead_letters):
        assert labels(pubsub, name, topic=False) == {"managed-by": "batchctl"}, name
