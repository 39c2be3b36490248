"""Worker events on the wire: an aggregated ``part_done`` names many parts.

Checks: an aggregated event survives encode/decode and lists its parts; a single-part
event (older workers) is still read; a malformed ``parts`` field (not a list, negative,
booleans, too long, on another event type) is rejected naming the field.
"""

from __future__ import annotations

import json

import pytest

from batchctl.core.errors import BadInput
from batchctl.core.messages import MAX_PARTS_PER_EVENT, Event, decode_event, encode_event


def test_aggregated_part_done_round_trips() -> None:
    """parts=(3, 5, 8): decoded with the same parts, done_parts lists them."""
    data, attributes = encode_event(Event(type="part_done", batch_id="b1", worker="w", parts=(3, 5, 8)))
    event = decode_event(data, attributes)
    assert event.parts == (3, 5, 8)
    assert event.done_parts == (3, 5, 8)


def test_single_part_done_is_still_read() -> None:
    """An event with ``part`` and no ``parts`` (as before aggregation) reports that one part."""
    data, attributes = encode_event(Event(type="part_done", batch_id="b1", worker="w", part=4, attempt=1))
    assert "parts" not in json.loads(data)
    assert decode_event(data, attributes).done_parts == (4,)


@pytest.mark.parametrize(
    ("kind", "parts"),
    [
        ("part_done", "1,2"),
        ("part_done", [1, -2]),
        ("part_done", [True]),
        ("part_done", [1.5]),
        ("part_done", list(range(MAX_PARTS_PER_EVENT + 1))),
        ("worker_exited", [1]),
    ],
)
def test_malformed_parts_are_rejected(kind: str, parts: object) -> None:
    """Each bad ``parts`` field: BadInput naming it."""
    body = {"type": kind, "batch_id": "b1", "worker": "w", "parts": parts, "part": 1}
    with pytest.raises(BadInput, match="'parts'"):
        decode_event(json.dumps(body).encode(), {"type": kind, "batch_id": "b1"})
