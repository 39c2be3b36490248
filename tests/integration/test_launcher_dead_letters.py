"""The launcher's requests and events subscriptions dead-letter, on the real Pub/Sub emulator.

Checks: each has a dead-letter policy to its own topic (``P-requests-dead-letters``,
``P-events-dead-letters``, names gc never takes for a batch's), after 10 deliveries; a control
message given back on every delivery stops coming back and lands, intact, on the dead-letter
subscription (before: it came back for the 7 days of retention, issue 18, finding 8).
"""

from __future__ import annotations

import time

from batchctl.core import topology
from batchctl.core.messages import Control, encode_control
from batchctl.core.pubsub import PubSub, SubscriptionSpec
from batchctl.launcher.gc import batch_of


def assert_dead_letter_policies(pubsub: PubSub) -> list[tuple[str, str]]:
    """The launcher's two subscriptions each dead-letter to their own topic after 10 deliveries;
    returns the (subscription, dead-letter topic) pairs."""
    names = pubsub.settings.names
    pairs = [(names.requests_subscription, names.requests_dead_letters),
             (names.events_subscription, names.events_dead_letters)]
    for sub, dead in pairs:
        spec = pubsub.subscription_spec(sub)
        assert spec.dead_letter_topic == pubsub.topic_path(dead), sub
        assert spec.max_delivery_attempts == topology.LAUNCHER_MAX_DELIVERY_ATTEMPTS
    return pairs


def test_launcher_subscriptions_dead_letter_to_their_own_topics(pubsub: PubSub) -> None:
    names = pubsub.settings.names
    topology.ensure_shared(pubsub)
    for _, dead in assert_dead_letter_policies(pubsub):
        assert pubsub.subscription_spec(dead).dead_letter_topic is None
        assert batch_of(dead, names.prefix) is None, f"gc would take {dead} for a batch's"


def test_a_poison_control_message_stops_coming_back(pubsub: PubSub) -> None:
    """Given back on every delivery (what the launcher does with a failing message), it is delivered
    at most 10 times, then found on ``P-requests-dead-letters``."""
    names = pubsub.settings.names
    topology.ensure_shared(pubsub)  # no retry policy: each nack is delivered again at once
    pubsub.publish(names.requests_topic, *encode_control(Control("retry", "poison"))).result(timeout=30)
    deliveries, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        msgs = pubsub.pull(names.requests_subscription, max_messages=10, timeout_s=0.3)
        deliveries += len(msgs)
        assert deliveries <= topology.LAUNCHER_MAX_DELIVERY_ATTEMPTS, f"delivered {deliveries} times"
        if msgs:
            pubsub.nack(names.requests_subscription, [m.ack_id for m in msgs])
        elif dead := pubsub.pull(names.requests_dead_letters, max_messages=10, timeout_s=0.2):
            break
    else:
        raise AssertionError(f"not dead-lettered after {deliveries} deliveries")
    assert [m.data for m in dead] == [encode_control(Control("retry", "poison"))[0]]
    assert deliveries == topology.LAUNCHER_MAX_DELIVERY_ATTEMPTS


def test_an_existing_subscription_without_the_policy_gets_it(pubsub: PubSub) -> None:
    """A deployment from before the policy existed has its requests and events subscriptions with
    no dead-letter policy and a retry policy; the launcher's start gives them the policy (and takes
    the retry policy away) in place, keeping what they hold (issue 18, finding 8; issue 12)."""
    names = pubsub.settings.names
    for topic, sub in ((names.requests_topic, names.requests_subscription),
                       (names.events_topic, names.events_subscription)):
        pubsub.create_topic(topic, exist_ok=True)
        pubsub.create_subscription(sub, topic, SubscriptionSpec(ack_deadline_s=20), exist_ok=False)
        assert pubsub.subscription_spec(sub).dead_letter_topic is None
    pubsub.publish(names.requests_topic, *encode_control(Control("retry", "kept"))).result(timeout=30)
    topology.ensure_shared(pubsub)
    for sub, _ in assert_dead_letter_policies(pubsub):
        spec = pubsub.subscription_spec(sub)
        assert (spec.min_backoff_s, spec.max_backoff_s) == (0, 0)
    held = pubsub.pull(names.requests_subscription, max_messages=10, timeout_s=5)
    assert [m.data for m in held] == [encode_control(Control("retry", "kept"))[0]]


def test_an_existing_subscription_with_a_retry_policy_loses_it(pubsub: PubSub) -> None:
    """Stop 21's launcher subscriptions had a retry policy (1 to 10 s); the launcher's start takes
    it away, the dead-letter policy kept (on the emulator a retry policy loses some messages whose
    lease lapsed: bench/emulator_leases.py)."""
    names = pubsub.settings.names
    for topic, sub, dead in ((names.requests_topic, names.requests_subscription, names.requests_dead_letters),
                             (names.events_topic, names.events_subscription, names.events_dead_letters)):
        pubsub.create_topic(topic, exist_ok=True)
        pubsub.create_topic(dead, exist_ok=True)
        spec = SubscriptionSpec(ack_deadline_s=20, dead_letter_topic=dead, max_delivery_attempts=10,
                                min_backoff_s=1, max_backoff_s=10)
        pubsub.create_subscription(sub, topic, spec, exist_ok=False)
    topology.ensure_shared(pubsub)
    for sub, _ in assert_dead_letter_policies(pubsub):
        spec = pubsub.subscription_spec(sub)
        assert (spec.min_backoff_s, spec.max_backoff_s) == (0, 0)
