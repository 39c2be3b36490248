"""The one seam to Pub/Sub: with ``pubsub_policy`` (its terms), the only module that imports the Google client.

Admin calls carry a deadline so an unreachable endpoint becomes ``Unreachable``
(exit 3) within seconds instead of the client's default ten-minute retry.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1 import types
from google.protobuf import duration_pb2
from google.pubsub_v1.services.publisher.client import PublisherClient as ApiPublisherClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
from google.pubsub_v1.types import PublishRequest

from batchctl.core.errors import BadInput, BatchctlError, BatchExists, Unreachable
from batchctl.core.inflight import InFlight, RequestFailed
from batchctl.core.pubsub_policy import (
    _MESSAGE_OVERHEAD_BYTES,
    ADMIN_RETRY,
    ADMIN_TIMEOUT_S,
    MAX_REQUEST_BYTES,
    PUBLISH_ATTEMPT_S,
    PUBLISH_REQUESTS_IN_FLIGHT,
    PUBLISH_RETRY,
    PUBLISH_TIMEOUT_S,
    PULL_RETRYABLE,
    REFUSED,
    SETTLE_RETRYABLE,
    UNREACHABLE_ERRORS,
    PublishFailed,
    PullUnanswered,
    Received,
    ResourceMissing,
    SubscriptionSpec,
    may_have_stored,
)
from batchctl.core.settings import Settings

__all__ = [  # the terms are re-exported: callers import everything Pub/Sub from here
    "ADMIN_RETRY", "ADMIN_TIMEOUT_S", "MAX_REQUEST_BYTES", "PUBLISH_ATTEMPT_S",
    "PUBLISH_REQUESTS_IN_FLIGHT", "PUBLISH_RETRY", "PUBLISH_TIMEOUT_S", "PULL_RETRYABLE", "REFUSED",
    "SETTLE_RETRYABLE", "UNREACHABLE_ERRORS", "PubSub", "PublishFailed", "PullUnanswered", "Received",
    "ResourceMissing", "SubscriptionSpec", "may_have_stored",
]

_PUBLISH_REQUEST_PB = PublishRequest.pb()
"""The raw protobuf class: building a request with it costs microseconds, not the tens a proto-plus wrapper does."""


def _delivery_policy(pubsub: PubSub, spec: SubscriptionSpec) -> dict[str, Any]:
    """The retry policy of ``spec`` (none if its backoff is 0: redelivery at once) and, if it names a
    dead-letter topic, its dead-letter policy."""
    policy: dict[str, Any] = {}
    if spec.max_backoff_s > 0:
        policy["retry_policy"] = {
            "minimum_backoff": duration_pb2.Duration(seconds=spec.min_backoff_s),
            "maximum_backoff": duration_pb2.Duration(seconds=spec.max_backoff_s),
        }
    if spec.dead_letter_topic:
        policy["dead_letter_policy"] = {
            "dead_letter_topic": pubsub.topic_path(spec.dead_letter_topic),
            "max_delivery_attempts": spec.max_delivery_attempts,
        }
    return policy


class PubSub:
    """Pub/Sub for one project: admin calls, a batching publisher, synchronous pull."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_messages_per_batch: int = 100,
        max_latency_s: float = 0.01,
        flow_bytes: int = 16 * 1024 * 1024,
        flow_messages: int = 1000,
    ) -> None:
        if not settings.project:
            raise BadInput("GOOGLE_CLOUD_PROJECT is not set (or pass --project)")
        self.settings = settings
        self.project: str = settings.project
        if settings.emulator_host:
            # The Google client decides emulator-or-not from this variable alone.
            os.environ["PUBSUB_EMULATOR_HOST"] = settings.emulator_host
        self._batch = types.BatchSettings(
            max_bytes=MAX_REQUEST_BYTES, max_latency=max_latency_s, max_messages=max_messages_per_batch
        )
        self._flow = types.PublishFlowControl(
            message_limit=flow_messages,
            byte_limit=flow_bytes,
            limit_exceeded_behavior=types.LimitExceededBehavior.BLOCK,
        )
        self._request_messages = max_messages_per_batch
        self._flow_bytes = flow_bytes
        self._publisher: pubsub_v1.PublisherClient | None = None
        self._subscriber: pubsub_v1.SubscriberClient | None = None
        self._lock = threading.Lock()

    # ---- clients -------------------------------------------------------------------
    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        with self._lock:
            if self._publisher is None:
                self._publisher = pubsub_v1.PublisherClient(
                    batch_settings=self._batch,
                    publisher_options=types.PublisherOptions(flow_control=self._flow),
                )
            return self._publisher

    @property
    def subscriber(self) -> pubsub_v1.SubscriberClient:
        with self._lock:
            if self._subscriber is None:
                self._subscriber = self._new_subscriber()
            return self._subscriber

    def _new_subscriber(self) -> pubsub_v1.SubscriberClient:
        """The subscriber; on the emulator over a channel without gRPC's 4 MB receive limit.

        The client's own emulator channel keeps that limit (its real-Pub/Sub channel lifts it),
        so one message over 4 MB, such as a forged 10 MB request, would fail every pull of its
        subscription and jam it.
        """
        if not self.settings.emulator_host:
            return pubsub_v1.SubscriberClient()
        unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        channel = grpc.insecure_channel(self.settings.emulator_host, options=unlimited)
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None

    def topic_path(self, name: str) -> str:
        return name if name.startswith("projects/") else f"projects/{self.project}/topics/{name}"

    def subscription_path(self, name: str) -> str:
        if name.startswith("projects/"):
            return name
        return f"projects/{self.project}/subscriptions/{name}"

    def _unreachable(self, exc: Exception) -> Unreachable:
        return Unreachable(f"cannot reach Pub/Sub at {self.settings.pubsub_endpoint}: {type(exc).__name__}")

    # ---- admin ---------------------------------------------------------------------
    def _admin(self, call: Any, request: dict[str, Any]) -> Any:
        """One admin call with the admin deadline; unreachable → Unreachable naming the endpoint."""
        try:
            return call(request=request, timeout=ADMIN_TIMEOUT_S, retry=ADMIN_RETRY)
        except UNREACHABLE_ERRORS as exc:
            raise self._unreachable(exc) from exc
        except gexc.InvalidArgument as exc:
            raise BadInput(f"Pub/Sub refused {request}: {exc.message}") from exc

    def _exists(self, call: Any, request: dict[str, Any]) -> bool:
        try:
            self._admin(call, request)
        except gexc.NotFound:
            return False
        return True

    def check_reachable(self) -> None:
        """Raise Unreachable unless Pub/Sub answers within the admin deadline."""
        self.topic_exists(self.settings.names.requests_topic)

    def topic_exists(self, name: str) -> bool:
        return self._exists(self.publisher.get_topic, {"topic": self.topic_path(name)})

    def subscription_exists(self, name: str) -> bool:
        return self._exists(self.subscriber.get_subscription, {"subscription": self.subscription_path(name)})

    def create_topic(self, name: str, *, exist_ok: bool, labels: Mapping[str, str] | None = None) -> bool:
        """Create a topic with ``labels``; True if created. Without ``exist_ok`` an existing one is BatchExists."""
        try:
            self._admin(self.publisher.create_topic, {"name": self.topic_path(name), "labels": dict(labels or {})})
        except gexc.AlreadyExists as exc:
            if exist_ok:
                return False
            raise BatchExists(f"topic {name} already exists: choose another batch id") from exc
        return True

    def create_subscription(self, name: str, topic: str, spec: SubscriptionSpec, *, exist_ok: bool) -> bool:
        """Create a pull subscription exactly as ``spec`` says; True if created."""
        request: dict[str, Any] = {
            "name": self.subscription_path(name),
            "topic": self.topic_path(topic),
            "ack_deadline_seconds": spec.ack_deadline_s,
            "retain_acked_messages": spec.retain_acked,
            "labels": dict(spec.labels),
            **_delivery_policy(self, spec),
        }
        if spec.expiration_ttl_days is not None:
            request["expiration_policy"] = {"ttl": duration_pb2.Duration(seconds=spec.expiration_ttl_days * 86400)}
        try:
            self._admin(self.subscriber.create_subscription, request)
        except gexc.AlreadyExists as exc:
            if exist_ok:
                return False
            raise BatchExists(f"subscription {name} already exists: choose another batch id") from exc
        return True

    def set_delivery_policy(self, name: str, spec: SubscriptionSpec) -> None:
        """Give an existing subscription ``spec``'s dead-letter and retry policies (a retry policy it
        has is removed if ``spec`` has none), in place: what it holds stays (``UpdateSubscription``
        with an update mask; needs ``pubsub.subscriptions.update``)."""
        request = _delivery_policy(self, spec)
        paths = sorted(set(request) | {"retry_policy"})
        request["name"] = self.subscription_path(name)
        try:
            self._admin(self.subscriber.update_subscription, {"subscription": request, "update_mask": {"paths": paths}})
        except gexc.NotFound as exc:
            raise ResourceMissing(f"subscription {name} does not exist") from exc

    def delete_topic(self, name: str) -> None:
        """Delete a topic; a missing one is not an error."""
        with contextlib.suppress(gexc.NotFound):
            self._admin(self.publisher.delete_topic, {"topic": self.topic_path(name)})

    def delete_subscription(self, name: str) -> None:
        """Delete a subscription; a missing one is not an error."""
        with contextlib.suppress(gexc.NotFound):
            self._admin(self.subscriber.delete_subscription, {"subscription": self.subscription_path(name)})

    def subscription_spec(self, name: str) -> SubscriptionSpec:
        """How an existing subscription behaves: ack deadline, dead-letter and retry policies.

        Needs ``pubsub.subscriptions.get``; ResourceMissing if it does not exist.
        """
        try:
            sub = self._admin(self.subscriber.get_subscription, {"subscription": self.subscription_path(name)})
        except gexc.NotFound as exc:
            raise ResourceMissing(f"subscription {name} does not exist") from exc
        dead, retry = sub.dead_letter_policy, sub.retry_policy
        return SubscriptionSpec(
            ack_deadline_s=sub.ack_deadline_seconds,
            dead_letter_topic=dead.dead_letter_topic or None,
            max_delivery_attempts=dead.max_delivery_attempts or 0,
            min_backoff_s=int(retry.minimum_backoff.total_seconds()) if "retry_policy" in sub else 0,
            max_backoff_s=int(retry.maximum_backoff.total_seconds()) if "retry_policy" in sub else 0,
        )

    def list_topics(self) -> list[str]:
        """Short names of every topic in the project."""
        topics = self._admin(self.publisher.list_topics, {"project": f"projects/{self.project}"})
        return [t.name.rsplit("/", 1)[-1] for t in topics]

    def list_subscriptions(self) -> list[str]:
        """Short names of every subscription in the project."""
        subs = self._admin(self.subscriber.list_subscriptions, {"project": f"projects/{self.project}"})
        return [s.name.rsplit("/", 1)[-1] for s in subs]

    def labels_of_all(self, kind: str) -> dict[str, dict[str, str]]:
        """Short name -> labels of every topic (``kind="topic"``) or subscription in the project."""
        project = {"project": f"projects/{self.project}"}
        if kind == "topic":
            found = self._admin(self.publisher.list_topics, project)
        else:
            found = self._admin(self.subscriber.list_subscriptions, project)
        return {r.name.rsplit("/", 1)[-1]: dict(r.labels) for r in found}

    # ---- data ----------------------------------------------------------------------
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> Future[str]:
        """Queue one message on the batching publisher; the future resolves to its message id."""
        return self.publisher.publish(self.topic_path(topic), data, **dict(attributes or {}))

    def publish_many(
        self, topic: str, messages: Iterable[tuple[bytes, Mapping[str, str]]], *, what: str = "message"
    ) -> int:
        """Publish every message, in order, and return how many Pub/Sub confirmed (all of them).

        For a known, bounded stream this beats ``publish`` per message: messages go
        straight into publish requests of the client's own API layer, skipping the
        batching publisher's per-message future, lock and timer. A request holds at
        most ``max_messages_per_batch`` messages and ``MAX_REQUEST_BYTES`` (and never
        more than ``flow_bytes``), unless one message alone is larger. Flow control is
        the same in kind: at most ``PUBLISH_REQUESTS_IN_FLIGHT`` requests and
        ``flow_bytes`` in flight, the oldest awaited first. Each request is retried on
        the codes the client retries; the first one that fails stops the publish with
        ``PublishFailed`` (``ResourceMissing``, ``Unreachable``), naming the messages it
        held by position as ``what``s ("parts 100-199").
        """
        path, max_bytes = self.topic_path(topic), min(MAX_REQUEST_BYTES, self._flow_bytes)
        pipeline = InFlight(self._send_request, max_requests=PUBLISH_REQUESTS_IN_FLIGHT, max_bytes=self._flow_bytes)
        with pipeline as in_flight:
            try:
                request, first, size = _PUBLISH_REQUEST_PB(topic=path), 0, 0
                for position, (data, attributes) in enumerate(messages):
                    grows = len(data) + _MESSAGE_OVERHEAD_BYTES + sum(len(k) + len(v) for k, v in attributes.items())
                    full = len(request.messages) >= self._request_messages or size + grows > max_bytes
                    if request.messages and full:
                        in_flight.send(request, first=first, count=len(request.messages), size=size)
                        request, first, size = _PUBLISH_REQUEST_PB(topic=path), position, 0
                    message = request.messages.add()
                    message.data = data
                    message.attributes.update(attributes)
                    size += grows
                if request.messages:
                    in_flight.send(request, first=first, count=len(request.messages), size=size)
                in_flight.settle(0)
            except RequestFailed as failed:
                first, last = failed.first, failed.first + failed.count - 1
                held = f"{what} {first}" if first == last else f"{what}s {first}-{last}"
                raise self._publish_error(topic, held, failed.cause) from failed.cause
            return in_flight.confirmed

    def _send_request(self, request: Any) -> Any:
        """Send one publish request through the client's API layer, retrying the client's retryable codes."""
        # The batching PublisherClient subclasses the API-layer client and overrides ``publish``.
        return ApiPublisherClient.publish(
            self.publisher, request=PublishRequest.wrap(request), retry=PUBLISH_RETRY, timeout=PUBLISH_ATTEMPT_S
        )

    def _publish_error(self, topic: str, held: str, exc: Exception) -> BatchctlError:
        if isinstance(exc, gexc.NotFound):
            return ResourceMissing(f"topic {topic} does not exist (publishing {held})")
        if isinstance(exc, UNREACHABLE_ERRORS):
            return self._unreachable(exc)
        return PublishFailed(f"publishing {held} to {topic} failed: {type(exc).__name__}: {exc}")

    def confirm(self, future: Future[str], *, topic: str, timeout_s: float = 30.0) -> str:
        """Wait for a publish to be confirmed and return its message id.

        ResourceMissing if the topic does not exist; Unreachable if Pub/Sub does not
        confirm within ``timeout_s``.
        """
        try:
            return future.result(timeout=timeout_s)
        except gexc.NotFound as exc:
            raise ResourceMissing(f"topic {topic} does not exist") from exc
        except (*UNREACHABLE_ERRORS, TimeoutError) as exc:
            raise self._unreachable(exc) from exc

    def pull(self, subscription: str, *, max_messages: int, timeout_s: float = 10.0) -> list[Received]:
        """One synchronous pull; an empty list when nothing came back before ``timeout_s``.

        For callers that only poll. The worker, whose drain rule needs to tell an answered
        empty pull from none at all, uses ``pull_answered``.
        """
        try:
            return self.pull_answered(subscription, max_messages=max_messages, timeout_s=timeout_s)
        except PullUnanswered as exc:
            if exc.timed_out:
                return []
            raise

    def pull_answered(
        self, subscription: str, *, max_messages: int, timeout_s: float, return_immediately: bool = False
    ) -> list[Received]:
        """One synchronous pull that Pub/Sub answered (possibly with nothing).

        ``PullUnanswered`` (an ``Unreachable``) when there was no answer: the deadline
        passed (``timed_out``: the server held an empty pull, or the network stalls),
        or the call failed with a code Pub/Sub asks clients to retry. ``return_immediately``
        asks the server to answer at once even when it has nothing: a timed-out pull
        followed by such a pull that is answered was an empty pull after all.
        """
        request: dict[str, Any] = {"subscription": self.subscription_path(subscription), "max_messages": max_messages}
        if return_immediately:
            request["return_immediately"] = True
        try:
            response = self.subscriber.pull(request=request, timeout=timeout_s, retry=None)
        except gexc.NotFound as exc:
            raise ResourceMissing(f"subscription {subscription} does not exist") from exc
        except PULL_RETRYABLE as exc:
            raise PullUnanswered(
                f"cannot reach Pub/Sub at {self.settings.pubsub_endpoint}: {type(exc).__name__} (a pull got no answer)",
                timed_out=isinstance(exc, gexc.DeadlineExceeded),
            ) from exc
        # Read the raw protobuf: proto-plus wrappers cost ~30 µs of CPU per message here.
        return [
            Received(
                ack_id=m.ack_id,
                message_id=m.message.message_id,
                data=m.message.data,
                attributes=dict(m.message.attributes),
                delivery_attempt=m.delivery_attempt or 1,
            )
            for m in type(response).pb(response).received_messages
        ]

    def ack(self, subscription: str, ack_ids: Sequence[str], *, timeout_s: float = ADMIN_TIMEOUT_S) -> None:
        """Acknowledge pulled messages; the call, retries included, ends within ``timeout_s``."""
        if ack_ids:
            self.subscriber.acknowledge(
                request={"subscription": self.subscription_path(subscription), "ack_ids": list(ack_ids)},
                timeout=timeout_s,
                retry=_bounded_retry(timeout_s),
            )

    def modify_ack_deadline(
        self, subscription: str, ack_ids: Iterable[str], seconds: int, *, timeout_s: float = ADMIN_TIMEOUT_S
    ) -> None:
        """Extend (or with 0, give back) the lease of pulled messages, within ``timeout_s``."""
        ids = list(ack_ids)
        if ids:
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": self.subscription_path(subscription),
                    "ack_ids": ids,
                    "ack_deadline_seconds": seconds,
                },
                timeout=timeout_s,
                retry=_bounded_retry(timeout_s),
            )

    def nack(self, subscription: str, ack_ids: Iterable[str], *, timeout_s: float = ADMIN_TIMEOUT_S) -> None:
        self.modify_ack_deadline(subscription, ack_ids, 0, timeout_s=timeout_s)


def _bounded_retry(timeout_s: float) -> Retry:
    """The client's retry for settle calls (UNAVAILABLE and the like), cut to ``timeout_s`` in all."""
    predicate = if_exception_type(*SETTLE_RETRYABLE)
    return Retry(initial=0.1, maximum=1.0, multiplier=2.0, timeout=timeout_s, predicate=predicate)
