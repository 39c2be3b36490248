"""Publish a batch's parts: one message per part, every request confirmed, errors surfaced.

``PubSub.publish_many`` does the batching and the flow control (bounded requests and
bytes in flight); the first request that fails stops the publish, naming its parts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from batchctl.core.pubsub import PubSub
from batchctl.splitter.partitioner import Part


def part_attributes(batch_id: str, part: Part, total: int, fmt: str) -> dict[str, str]:
    return {
        "batch_id": batch_id,
        "part": str(part.index),
        "parts": str(total),
        "records": str(part.records),
        "sha256": part.sha256,
        "format": fmt,
    }


def publish_parts(pubsub: PubSub, topic: str, parts: Iterable[Part], *, total: int, batch_id: str, fmt: str) -> int:
    """Publish every part of a batch of ``total`` parts; return how many were confirmed."""

    def messages() -> Iterator[tuple[bytes, Mapping[str, str]]]:
        for part in parts:
            yield part.data, part_attributes(batch_id, part, total, fmt)

    return pubsub.publish_many(topic, messages(), what="part")
