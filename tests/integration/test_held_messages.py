"""``launcher.held`` on the real emulator: messages the leader holds after a failed save keep their
leases (extended at once and every half ack deadline, a failed extension logged, never raised),
and a held copy of a message delivered again gives way to the new delivery."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pytest_mock import MockerFixture

from batchctl.core.pubsub import PubSub, Received, SubscriptionSpec
from batchctl.launcher.held import HeldMessages
from tests.support.waiting import wait_for


@pytest.fixture
def pulled(pubsub: PubSub, prefix: str) -> tuple[str, list[Received]]:
    """Three messages pulled (leased) from a subscription of this test."""
    name = f"{prefix}-held"
    pubsub.create_topic(name, exist_ok=False)
    pubsub.create_subscription(name, name, SubscriptionSpec(ack_deadline_s=10), exist_ok=False)
    for i in range(3):
        pubsub.publish(name, b"e%d" % i, {}).result(timeout=30)
    got: list[Received] = []
    wait_for(lambda: got.extend(pubsub.pull(name, max_messages=10, timeout_s=1)) or len(got) == 3, timeout=15,
             what="three messages pulled")
    return name, got


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_leases_are_extended_when_held_and_every_half_deadline(pubsub: PubSub, pulled: tuple[str, list[Received]],
                                                               mocker: MockerFixture) -> None:
    name, msgs = pulled
    clock = Clock()
    held = HeldMessages(pubsub, name, deadline_s=20, clock=clock)
    extend = mocker.spy(pubsub, "modify_ack_deadline")
    held.hold(msgs)
    assert [(c.args[0], sorted(c.args[1]), c.args[2]) for c in extend.call_args_list] == [
        (name, sorted(m.ack_id for m in msgs), 20)]
    clock.now += 9.9
    held.keep_leased()
    assert extend.call_count == 1
    clock.now += 0.1
    held.keep_leased()
    assert extend.call_count == 2
    assert len(held) == 3
    assert [m.message_id for m in held.take()] == [m.message_id for m in msgs]
    clock.now += 60
    held.keep_leased()  # nothing held: nothing to extend
    assert extend.call_count == 2


def test_a_new_delivery_replaces_its_held_copy(pubsub: PubSub, pulled: tuple[str, list[Received]]) -> None:
    name, msgs = pulled
    held = HeldMessages(pubsub, name)
    held.hold(msgs)
    again = replace(msgs[1], ack_id=msgs[1].ack_id + "-again", delivery_attempt=2)
    taken = held.take([again])
    assert [(m.message_id, m.delivery_attempt) for m in taken] == [
        (msgs[0].message_id, 1), (msgs[2].message_id, 1), (msgs[1].message_id, 2)]
    assert held.take() == []


def test_a_failed_extension_is_logged_not_raised(pubsub: PubSub, pulled: tuple[str, list[Received]]) -> None:
    _, msgs = pulled
    held = HeldMessages(pubsub, "no-such-subscription")
    held.hold(msgs)  # NotFound from the emulator: the lease lapses, Pub/Sub delivers them again
    assert len(held) == 3
    assert [s for s, _ in held.release()] == ["no-such-subscription"] * 3
