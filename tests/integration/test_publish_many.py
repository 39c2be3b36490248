"""``PubSub.publish_many`` on the real emulator: every message once, requests within their
limits, flow control bounding what is in flight, and failures that name what they held."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from pytest_mock import MockerFixture

from batchctl.core import pubsub as pubsub_module
from batchctl.core.errors import Unreachable
from batchctl.core.pubsub import PUBLISH_REQUESTS_IN_FLIGHT, PublishFailed, PubSub, ResourceMissing, SubscriptionSpec
from batchctl.core.settings import Settings
from tests.support.pulling import drain

REQUEST_LATENCY_S = 0.05
"""Added to every request by the spy, so that requests overlap whenever flow control lets them."""


@dataclasses.dataclass
class Spy:
    """Wraps the request seam: records every request and what was in flight when it started."""

    real: Any
    requests: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # messages, bytes
    most_in_flight: int = 0
    most_bytes_in_flight: int = 0
    fail_on: int | None = None
    _in_flight: dict[int, int] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def __call__(self, client: PubSub, request: Any) -> Any:
        with self._lock:
            self.requests.append((len(request.messages), request.ByteSize()))
            number = len(self.requests)
            self._in_flight[number] = request.ByteSize()
            self.most_in_flight = max(self.most_in_flight, len(self._in_flight))
            self.most_bytes_in_flight = max(self.most_bytes_in_flight, sum(self._in_flight.values()))
        try:
            time.sleep(REQUEST_LATENCY_S)  # simulated network latency, not synchronisation
            if number == self.fail_on:
                raise gexc.InvalidArgument("injected rejection")
            return self.real(client, request)
        finally:
            with self._lock:
                del self._in_flight[number]


@pytest.fixture
def spy(mocker: MockerFixture) -> Spy:
    spy = Spy(PubSub._send_request)

    def send_request(client: PubSub, request: Any) -> Any:  # a function, so that it binds as a method
        return spy(client, request)

    mocker.patch.object(PubSub, "_send_request", send_request)
    return spy


@pytest.fixture
def small(settings: Settings) -> Iterator[PubSub]:
    """A client with small requests and a small flow-control window, so one test crosses many limits."""
    client = PubSub(settings, max_messages_per_batch=10, flow_bytes=250_000)
    try:
        yield client
    finally:
        client.close()


def topic_with_subscription(client: PubSub, name: str) -> str:
    name = f"{client.settings.prefix}-{name}"
    client.create_topic(name, exist_ok=False)
    client.create_subscription(name, name, SubscriptionSpec(), exist_ok=False)
    return name


def messages(n: int, size: int) -> list[tuple[bytes, dict[str, str]]]:
    return [(f"{i:06d}".encode() + b"x" * (size + i % 7), {"i": str(i), "kind": "test"}) for i in range(n)]


def test_every_message_arrives_once_in_requests_within_their_limits(
    small: PubSub, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pubsub_module, "MAX_REQUEST_BYTES", 100_000)
    name = topic_with_subscription(small, "many")
    sent = messages(95, 1000) + messages(12, 40_000)
    assert small.publish_many(name, sent) == len(sent)
    got = drain(small, name)
    assert sorted((m.data, dict(m.attributes)) for m in got) == sorted(sent)
    assert all(count <= 10 for count, _ in spy.requests)
    assert all(size <= 100_000 for _, size in spy.requests)
    # 9 full by count; then the last 5 small ones and 2 large; then the bytes allow 2 large a request
    assert [count for count, _ in spy.requests] == [10] * 9 + [7] + [2] * 5
    assert 1 < spy.most_in_flight <= PUBLISH_REQUESTS_IN_FLIGHT
    assert spy.most_bytes_in_flight <= 250_000


def test_a_message_larger_than_the_flow_window_still_goes_alone(small: PubSub, spy: Spy) -> None:
    name = topic_with_subscription(small, "big")
    sent = messages(3, 400_000)
    assert small.publish_many(name, sent) == 3
    assert [count for count, _ in spy.requests] == [1, 1, 1]
    assert spy.most_in_flight == 1
    assert sorted(m.data for m in drain(small, name)) == sorted(data for data, _ in sent)


def test_a_rejected_request_names_the_messages_it_held(small: PubSub, spy: Spy) -> None:
    name = topic_with_subscription(small, "reject")
    spy.fail_on = 2
    with pytest.raises(PublishFailed, match=r"publishing parts 10-19 to \S+-reject failed: InvalidArgument"):
        small.publish_many(name, messages(50, 100), what="part")


def test_a_missing_topic_is_named(small: PubSub) -> None:
    with pytest.raises(ResourceMissing, match="topic nowhere does not exist"):
        small.publish_many("nowhere", messages(5, 10))


def test_an_unreachable_endpoint_is_unreachable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", closed)
    monkeypatch.setattr(pubsub_module, "PUBLISH_RETRY", Retry(
        initial=0.1, maximum=0.5, timeout=2.0, predicate=pubsub_module.PUBLISH_RETRY._predicate,
    ))
    client = PubSub(dataclasses.replace(settings, emulator_host=closed))
    try:
        with pytest.raises(Unreachable, match=closed):
            client.publish_many("anything", messages(5, 10))
    finally:
        client.close()
