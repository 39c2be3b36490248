"""Decoding a pulled message into a Part.

Checks: JSONL and lines records decoded; empty parts; each way a message can be
invalid (batch, index, counts, checksum, format, UTF-8, JSON) rejected with a
reason and, where known, the part index.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from batchctl.worker.part import PartRejected, decode_part, part_index
from tests.support.parts import encode_part


def test_jsonl_part_decodes_to_json_values() -> None:
    """JSONL records become JSON values; index, attributes, attempt and results dir carried."""
    data, attrs = encode_part("b1", 3, 10, [{"a": 1}, [1, 2], "x", 5])
    part = decode_part(data, attrs, batch_id="b1", attempt=2, results_dir=Path("/out"))
    assert part.records == [{"a": 1}, [1, 2], "x", 5]
    assert (part.batch_id, part.index, part.attempt, part.results_dir) == ("b1", 3, 2, Path("/out"))
    assert part.attributes["sha256"] == attrs["sha256"]


def test_lines_part_decodes_to_strings() -> None:
    """``lines`` records stay strings, including empty and JSON-looking ones."""
    data, attrs = encode_part("b1", 0, 1, ["hello world", "", '{"a": 1}'], fmt="lines")
    assert decode_part(data, attrs, batch_id="b1").records == ["hello world", "", '{"a": 1}']


def test_part_without_records_is_empty() -> None:
    """records=0 with empty data decodes to no records."""
    data, attrs = encode_part("b1", 0, 1, [])
    assert decode_part(data, attrs, batch_id="b1").records == []


def test_single_empty_line_record_is_kept() -> None:
    """records=1 with empty data is one empty record, not none."""
    data, attrs = encode_part("b1", 0, 1, [""], fmt="lines")
    assert decode_part(data, attrs, batch_id="b1").records == [""]


def _attrs(**changes: str) -> tuple[bytes, dict[str, str]]:
    data, attrs = encode_part("b1", 4, 10, [{"a": 1}, {"b": 2}])
    attrs.update(changes)
    return data, attrs


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"batch_id": "other"}, "attribute 'batch_id' is 'other'"),
        ({"records": "3"}, "data holds 2 records, attribute 'records' says 3"),
        ({"records": "x"}, "attribute 'records' is 'x'"),
        ({"parts": "4"}, "beyond the batch's 4 parts"),
        ({"sha256": "0" * 64}, "sha256 mismatch"),
        ({"format": "csv"}, "attribute 'format' is 'csv'"),
    ],
)
def test_invalid_attributes_are_rejected_with_the_index(changes: dict[str, str], reason: str) -> None:
    """Each broken attribute: PartRejected with the reason and index 4."""
    data, attrs = _attrs(**changes)
    with pytest.raises(PartRejected, match=reason) as caught:
        decode_part(data, attrs, batch_id="b1")
    assert caught.value.index == 4


def test_missing_index_is_rejected_without_one() -> None:
    """No usable ``part`` attribute: rejected, index None (no event can name it)."""
    data, attrs = _attrs(part="-1")
    with pytest.raises(PartRejected) as caught:
        decode_part(data, attrs, batch_id="b1")
    assert caught.value.index is None
    assert part_index({"part": "12"}) == 12


@pytest.mark.parametrize("text", ["²", "١٢", "1²", "+1", " 1", ""])
def test_non_ascii_or_signed_digits_are_no_index(text: str) -> None:
    """``str.isdigit`` accepts "²" and Arabic-Indic digits; they are rejected, never an exception."""
    data, attrs = _attrs(part=text)
    assert part_index(attrs) is None
    with pytest.raises(PartRejected) as caught:
        decode_part(data, attrs, batch_id="b1")
    assert caught.value.index is None


def test_non_ascii_digits_in_a_count_are_rejected() -> None:
    """A count attribute of "³" is a reason to reject, not a ValueError."""
    data, attrs = _attrs(records="³")
    with pytest.raises(PartRejected, match="attribute 'records' is '³'"):
        decode_part(data, attrs, batch_id="b1")


def test_corrupted_data_fails_the_checksum() -> None:
    """Data changed after publishing: sha256 mismatch before any decoding."""
    data, attrs = _attrs()
    with pytest.raises(PartRejected, match="sha256 mismatch"):
        decode_part(data + b" ", attrs, batch_id="b1")


@pytest.mark.parametrize(("data", "reason"), [(b'{"a": 1}\n{nope', "record 2 is not JSON"), (b"\xff\xfe", "not UTF-8")])
def test_undecodable_records_are_rejected(data: bytes, reason: str) -> None:
    """Bad JSON (naming the record) or bad UTF-8, with a matching checksum: rejected."""
    records = str(data.count(b"\n") + 1)
    attrs = {"batch_id": "b1", "part": "0", "parts": "1", "records": records, "format": "jsonl"}
    attrs["sha256"] = hashlib.sha256(data).hexdigest()
    with pytest.raises(PartRejected, match=reason):
        decode_part(data, attrs, batch_id="b1")
