"""Pub/Sub resources carry labels that billing reports and ``gcloud --filter`` can select by.

Checks, against the real emulator (which stores labels as Pub/Sub does): a batch's work and
dead-letter topics and subscriptions are labelled ``managed-by: batchctl`` and
``batchctl-batch-id: <id>``; the shared control and events topics and the launcher's
subscriptions are labelled ``managed-by: batchctl`` only.
"""

from __future__ import annotations

from batchctl.core import topology
from batchctl.core.pubsub import PubSub
from batchctl.core.topology import BatchTopology


def labels(pubsub: PubSub, name: str, *, topic: bool) -> dict[str, str]:
    if topic:
        return dict(pubsub.publisher.get_topic(request={"topic": pubsub.topic_path(name)}).labels)
    return dict(pubsub.subscriber.get_subscription(request={"subscription": pubsub.subscription_path(name)}).labels)


def test_a_batchs_topics_and_subscriptions_carry_its_labels(pubsub: PubSub) -> None:
    names = pubsub.settings.names
    topology.create_batch(pubsub, "lab-1", BatchTopology())
    want = {"managed-by": "batchctl", "batchctl-batch-id": "lab-1"}
    for name in (names.work("lab-1"), names.dead("lab-1")):
        assert labels(pubsub, name, topic=True) == want, name
        assert labels(pubsub, name, topic=False) == want, name


def test_shared_topics_and_subscriptions_carry_the_managed_by_label(pubsub: PubSub) -> None:
    names = pubsub.settings.names
    topology.ensure_shared(pubsub)
    for name in (names.requests_topic, names.events_topic):
        assert labels(pubsub, name, topic=True) == {"managed-by": "batchctl"}, name
    for name in (names.requests_subscription, names.events_subscription):
        assert labels(pubsub, name, topic=False) == {"managed-by": "batchctl"}, name
