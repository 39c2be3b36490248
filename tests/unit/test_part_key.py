"""``part.key``: one stable name per part, for idempotent handlers (at-least-once delivery)."""

from __future__ import annotations

from batchctl.worker.part import Part


def test_key_is_batch_and_index_whatever_the_delivery() -> None:
    """Two deliveries of the same part (another attempt, other attributes) share the key; another part does not."""
    first = Part(batch_id="b1", index=7, records=[1], attributes={"part": "7"}, attempt=1)
    again = Part(batch_id="b1", index=7, records=[1], attributes={"part": "7", "x": "y"}, attempt=4)
    assert first.key == again.key == "b1/7"
    assert Part(batch_id="b1", index=8, records=[], attributes={}).key != first.key
    assert Part(batch_id="b2", index=7, records=[], attributes={}).key != first.key
