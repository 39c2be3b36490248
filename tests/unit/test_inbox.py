"""``launcher.inbox``: an empty pull proves every earlier event seen, but after a takeover only once
the previous leader's last pull (which Pub/Sub may still hold, with messages in it) has lapsed:
its pull timeout plus the events subscription's ack deadline (``Launcher._stale_pull_s``)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core.exceptions import PermissionDenied

from batchctl.core import logs, topology
from batchctl.core.errors import Unreachable
from batchctl.core.pubsub import SubscriptionSpec
from batchctl.core.settings import Settings
from batchctl.launcher.inbox import Inbox
from batchctl.launcher.service import Launcher, Tuning
from tests.support.waiting import wait_for


class EmptyPulls:
    """A Pub/Sub whose pulls all come back empty after ``wait_s``."""

    def __init__(self, wait_s: float = 0.01) -> None:
        self.wait_s = wait_s
        self.pulls = 0

    def pull(self, subscription: str, **_: Any) -> list[Any]:
        time.sleep(self.wait_s)
        self.pulls += 1
        return []


def inbox() -> tuple[Inbox, threading.Event, EmptyPulls]:
    stopping, pubsub = threading.Event(), EmptyPulls()
    box = Inbox(pubsub, ("events",), active=lambda: True, wake=threading.Event(),  # type: ignore[arg-type]
                stopping=stopping, pull_timeout_s=0.01, max_messages=10)
    return box, stopping, pubsub


def test_an_empty_pull_is_noted_with_when_it_began() -> None:
    box, stopping, _ = inbox()
    before = time.monotonic()
    box.start()
    try:
        began = wait_for(lambda: box.empty_pull_started("events"), timeout=5, what="an empty pull")
        assert began >= before
    finally:
        stopping.set()
        box.join()


def test_a_new_term_counts_no_empty_pull_that_began_before_until() -> None:
    box, stopping, pubsub = inbox()
    until = time.monotonic() + 1.0
    box.forget_empty_pulls(until=until)
    box.start()
    try:
        wait_for(lambda: pubsub.pulls >= 3, timeout=5, what="empty pulls before until")
        assert box.empty_pull_started("events") == 0.0 and time.monotonic() < until
        assert wait_for(lambda: box.empty_pull_started("events"), timeout=5, what="a counted empty pull") >= until
    finally:
        stopping.set()
        box.join()


class NoSpec:
    """A Pub/Sub that refuses to describe a subscription (as without ``pubsub.subscriptions.get``)."""

    def __init__(self, error: Exception | None, ack_deadline_s: int = 33) -> None:
        self.error, self.ack_deadline_s = error, ack_deadline_s

    def subscription_spec(self, name: str) -> SubscriptionSpec:
        if self.error is not None:
            raise self.error
        return SubscriptionSpec(ack_deadline_s=self.ack_deadline_s)


@pytest.mark.parametrize("error", [None, PermissionDenied("no subscriptions.get"), Unreachable("Pub/Sub away")])
def test_a_takeover_waits_the_previous_pull_timeout_plus_the_events_ack_deadline(error: Exception | None) -> None:
    """The events subscription's own deadline when it can be read; else the shared default, never an error
    (a takeover must not depend on it)."""
    launcher = SimpleNamespace(pubsub=NoSpec(error), settings=Settings.from_env({"BATCHCTL_PREFIX": "p"}),
                               tuning=Tuning(pull_timeout_s=5.0), log=logs.get("test"))
    expected = 5.0 + (33 if error is None else topology.LAUNCHER_ACK_DEADLINE_S)
    assert Launcher._stale_pull_s(launcher) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("inherited", "waits"), [(True, True), (False, False)])
def test_a_takeover_waits_only_when_it_inherits_a_holders_pulls(inherited: bool, waits: bool) -> None:
    """After a clean release (or a new Lease) there is no pending pull to wait out: the term counts
    empty pulls at once; after a holder that died, one pull timeout plus the ack deadline later."""
    floors: list[float] = []
    launcher = SimpleNamespace(
        pubsub=NoSpec(None), settings=Settings.from_env({"BATCHCTL_PREFIX": "p"}), tuning=Tuning(pull_timeout_s=5.0),
        log=logs.get("test"), elector=SimpleNamespace(inherited=inherited), batches={}, _tries={}, _not_before={},
        store=SimpleNamespace(load_unsettled=list), reconciler=SimpleNamespace(new_term=lambda: None),
        inbox=SimpleNamespace(forget_empty_pulls=lambda until: floors.append(until) or None),
    )
    launcher._stale_pull_s = lambda: Launcher._stale_pull_s(launcher)  # type: ignore[arg-type]
    before = time.monotonic()
    Launcher._take_over(launcher)  # type: ignore[arg-type]
    (floor,) = floors
    assert (floor - before >= 38.0) is waits and floor - before < 40.0
