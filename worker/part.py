"""A pulled message checked and decoded into the ``Part`` a handler receives.

Pure. The wire format (written by the splitter): data is the part's records joined
by ``\\n``, UTF-8; attributes ``batch_id``, ``part`` (0-based), ``parts``, ``records``,
``sha256`` (hex of the data) and ``format`` (``jsonl``: one JSON value per record;
``lines``: each record a str). A message that breaks any of this is rejected with a
reason before the handler sees it; the caller nacks it, so after the subscription's
max delivery attempts it rests on the dead-letter topic for inspection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchctl.core.errors import BatchctlError

FORMATS = ("jsonl", "lines")


class PartRejected(BatchctlError):
    """Raised when a pulled message is not a valid part of this batch; ``index`` is None if unknown."""

    def __init__(self, reason: str, index: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.index = index


@dataclass(frozen=True)
class Part:
    """What a handler gets: ``FUNC(part)``."""

    batch_id: str
    index: int
    """0-based position of this part in the batch."""
    records: list[Any]
    """Decoded records: JSON values for ``jsonl``, strings for ``lines``."""
    attributes: Mapping[str, str]
    """The message's attributes as published."""
    attempt: int = 1
    """Pub/Sub's delivery attempt (1 on first delivery)."""
    results_dir: Path = field(default=Path("batchctl-results"))
    """Where a handler may write its output (``BATCHCTL_RESULTS_DIR``)."""

    @property
    def key(self) -> str:
        """``BATCH_ID/INDEX``, the same on every delivery of this part (Pub/Sub redelivers, even
        after an ack; a killed worker's part runs again; ``retry`` republishes it). Delivery is
        at-least-once: use the key to make side effects idempotent (an upsert key, an object name)."""
        return f"{self.batch_id}/{self.index}"


def part_index(attributes: Mapping[str, str]) -> int | None:
    """The ``part`` attribute as a non-negative int, or None if missing or malformed."""
    return _decimal(attributes.get("part", ""))


def _decimal(text: str) -> int | None:
    """ASCII decimal digits as an int; None otherwise (``str.isdigit`` also accepts "²", which ``int`` refuses)."""
    return int(text) if text.isascii() and text.isdigit() else None


def decode_part(
    data: bytes,
    attributes: Mapping[str, str],
    *,
    batch_id: str,
    attempt: int = 1,
    results_dir: Path = Path("batchctl-results"),
) -> Part:
    """Check the attributes and the checksum, decode the records; PartRejected says why not."""
    index = part_index(attributes)
    if index is None:
        raise PartRejected(f"attribute 'part' is {attributes.get('part')!r}, not a 0-based index", None)
    if attributes.get("batch_id") != batch_id:
        raise PartRejected(f"attribute 'batch_id' is {attributes.get('batch_id')!r}, not {batch_id!r}", index)
    expected = _count(attributes, "records", index)
    total = _count(attributes, "parts", index)
    if index >= total:
        raise PartRejected(f"part {index} is beyond the batch's {total} parts", index)
    digest = hashlib.sha256(data).hexdigest()
    if attributes.get("sha256") != digest:
        raise PartRejected(f"sha256 mismatch: attribute {attributes.get('sha256')!r}, data {digest}", index)
    records = decode_records(data, attributes.get("format", "lines"), expected, index)
    return Part(
        batch_id=batch_id,
        index=index,
        records=records,
        attributes=dict(attributes),
        attempt=attempt,
        results_dir=results_dir,
    )


def decode_records(data: bytes, fmt: str, expected: int, index: int) -> list[Any]:
    """Split and decode the records of one part, checking their count."""
    if fmt not in FORMATS:
        raise PartRejected(f"attribute 'format' is {fmt!r}, expected one of {FORMATS}", index)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PartRejected(f"data is not UTF-8 (byte {exc.start})", index) from exc
    lines = text.split("\n") if data or expected else []
    if len(lines) != expected:
        raise PartRejected(f"data holds {len(lines)} records, attribute 'records' says {expected}", index)
    if fmt == "lines":
        return lines
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(orjson.loads(line))  # the parser the splitter validated with: same acceptance
        except orjson.JSONDecodeError as exc:
            raise PartRejected(f"record {number} is not JSON: {exc}", index) from exc
    return records


def _count(attributes: Mapping[str, str], name: str, index: int) -> int:
    value = _decimal(attributes.get(name, ""))
    if value is None:
        raise PartRejected(f"attribute {name!r} is {attributes.get(name)!r}, not a count", index)
    return value
