"""Publish a batch's parts: one message per part, every future awaited, errors surfaced.

The client's own batching and flow control (see ``batchctl.pubsub.PubSub``) bound
memory; here the outstanding futures are bounded too and checked as they finish,
so the first failure stops the publish instead of being found at the end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from batchctl.errors import BatchctlError
from batchctl.pubsub import PubSub
from splitter.partitioner import Part

MAX_OUTSTANDING = 2000
PUBLISH_TIMEOUT_S = 60.0


class PublishFailed(BatchctlError):
    """Raised when Pub/Sub rejects or fails to confirm a part; names the part."""


def part_attributes(batch_id: str, part: Part, total: int, fmt: str) -> dict[str, str]:
    return {
        "batch_id": batch_id,
        "part": str(part.index),
        "parts": str(total),
        "records": str(part.records),
        "sha256": part.sha256,
        "format": fmt,
    }


def publish_parts(
    pubsub: PubSub,
    topic: str,
    parts: Iterable[Part],
    *,
    total: int,
    batch_id: str,
    fmt: str,
    on_published: Callable[[int], None] | None = None,
) -> int:
    """Publish every part of a batch of ``total`` parts; return how many were confirmed."""
    pending: deque[tuple[int, Future[str]]] = deque()
    confirmed = 0
    for part in parts:
        try:
            future = pubsub.publish(topic, part.data, part_attributes(batch_id, part, total, fmt))
        except Exception as exc:
            raise PublishFailed(f"publishing part {part.index} failed: {exc}") from exc
        pending.append((part.index, future))
        while pending and (len(pending) >= MAX_OUTSTANDING or pending[0][1].done()):
            confirmed += _confirm(*pending.popleft())
            if on_published:
                on_published(confirmed)
    while pending:
        confirmed += _confirm(*pending.popleft())
        if on_published:
            on_published(confirmed)
    return confirmed


def _confirm(index: int, future: Future[str]) -> int:
    try:
        future.result(timeout=PUBLISH_TIMEOUT_S)
    except Exception as exc:
        raise PublishFailed(f"publishing part {index} failed: {type(exc).__name__}: {exc}") from exc
    return 1
