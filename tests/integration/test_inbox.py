"""``launcher.inbox`` and a takeover's wait, on the real emulator.

An empty pull (of an empty subscription, short pull timeout) is noted with when it began; a new
term counts no empty pull that began before ``until``. A takeover waits the previous leader's pull
timeout plus the events subscription's own ack deadline (read from it), or the shared default when
it cannot be read (errors injected at ``subscription_spec``), never failing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core.exceptions import PermissionDenied
from pytest_mock import MockerFixture

from batchctl.core import logs, topology
from batchctl.core.errors import Unreachable
from batchctl.core.pubsub import PubSub, SubscriptionSpec
from batchctl.core.settings import Settings
from batchctl.launcher.inbox import Inbox
from batchctl.launcher.service import Launcher, Tuning
from tests.support.waiting import wait_for

PULL_TIMEOUT_S = 0.2


@pytest.fixture
def empty(pubsub: PubSub, prefix: str) -> str:
    """An empty subscription of this test."""
    name = f"{prefix}-quiet"
    pubsub.create_topic(name, exist_ok=False)
    pubsub.create_subscription(name, name, SubscriptionSpec(ack_deadline_s=10), exist_ok=False)
    return name


@pytest.fixture
def inbox(pubsub: PubSub, empty: str) -> Iterator[Inbox]:
    """An inbox on ``empty`` (not started); stopped at the end."""
    box = Inbox(pubsub, (empty,), active=lambda: True, wake=threading.Event(), stopping=threading.Event(),
                pull_timeout_s=PULL_TIMEOUT_S, max_messages=10)
    try:
        yield box
    finally:
        box.stopping.set()
        box.join()


@pytest.mark.timeout(20)
def test_an_empty_pull_is_noted_with_when_it_began(
    inbox: Inbox, empty: str, pubsub: PubSub, mocker: MockerFixture
) -> None:
    """The time noted is when a pull began (the inbox waits 0.05 s after an empty pull before the next
    one, so a pull's end would be noted well before any pull's start)."""
    starts: list[float] = []
    pull = pubsub.pull

    def timed(*args: Any, **kwargs: Any) -> Any:
        starts.append(time.monotonic())
        return pull(*args, **kwargs)

    mocker.patch.object(pubsub, "pull", side_effect=timed)
    before = time.monotonic()
    inbox.start()
    began = wait_for(lambda: inbox.empty_pull_started(empty), timeout=5, what="an empty pull")
    assert before <= began <= time.monotonic()
    assert any(0 <= s - began < 0.025 for s in starts), f"noted {began}, pulls began at {starts}"


@pytest.mark.timeout(20)
def test_a_new_term_counts_no_empty_pull_that_began_before_until(
    inbox: Inbox, empty: str, pubsub: PubSub, mocker: MockerFixture
) -> None:
    pulls = mocker.spy(pubsub, "pull")
    until = time.monotonic() + 2.0
    inbox.forget_empty_pulls(until=until)
    inbox.start()
    wait_for(lambda: pulls.call_count >= 3, timeout=5, what="empty pulls before until")
    assert inbox.empty_pull_started(empty) == 0.0 and time.monotonic() < until
    assert wait_for(lambda: inbox.empty_pull_started(empty), timeout=5, what="a counted empty pull") >= until


@pytest.mark.timeout(20)
@pytest.mark.parametrize("error", [None, PermissionDenied("no subscriptions.get"), Unreachable("Pub/Sub away")])
def test_a_takeover_waits_the_previous_pull_timeout_plus_the_events_ack_deadline(
    pubsub: PubSub, settings: Settings, mocker: MockerFixture, error: Exception | None
) -> None:
    """The events subscription's own deadline (33 s) when it can be read; else the shared default, never an
    error (a takeover must not depend on it)."""
    names = settings.names
    pubsub.create_topic(names.events_topic, exist_ok=False)
    pubsub.create_subscription(names.events_subscription, names.events_topic, SubscriptionSpec(ack_deadline_s=33),
                               exist_ok=False)
    if error is not None:
        mocker.patch.object(pubsub, "subscription_spec", side_effect=error)
    launcher = SimpleNamespace(pubsub=pubsub, settings=settings, tuning=Tuning(pull_timeout_s=5.0),
                               log=logs.get("test"))
    expected = 5.0 + (33 if error is None else topology.LAUNCHER_ACK_DEADLINE_S)
    assert Launcher._stale_pull_s(launcher) == expected  # type: ignore[arg-type]
