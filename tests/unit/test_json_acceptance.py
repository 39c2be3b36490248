"""The splitter and the worker accept exactly the same JSON records.

Checks: at nesting depths around the parser's limit (1000, 1024, 1025), a record the
splitter's validation accepts is decoded by the worker, and one it refuses never
reaches a worker; numbers beyond 64 bits and NaN are refused by both alike.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from batchctl.core.errors import BadInput
from batchctl.splitter import readers
from batchctl.worker.part import PartRejected, decode_part

RECORDS = {
    "depth-1000": b"[" * 1000 + b"]" * 1000,
    "depth-1024": b"[" * 1024 + b"]" * 1024,
    "depth-1025": b"[" * 1025 + b"]" * 1025,
    "objects-1000": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "int-65-bits": b"36893488147419103232",
    "nan": b"NaN",
}


def splitter_accepts(record: bytes, tmp_path: Path) -> bool:
    path = tmp_path / "in.jsonl"
    path.write_bytes(record + b"\n")
    try:
        list(readers.record_blocks([readers.Source(str(path), "jsonl")], max_record_bytes=1 << 20))
    except BadInput:
        return False
    return True


def worker_accepts(record: bytes) -> bool:
    attributes = {"batch_id": "b1", "part": "0", "parts": "1", "records": "1", "format": "jsonl",
                  "sha256": hashlib.sha256(record).hexdigest()}
    try:
        decode_part(record, attributes, batch_id="b1")
    except PartRejected:
        return False
    return True


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_splitter_and_worker_agree(name: str, tmp_path: Path) -> None:
    """Same verdict on both sides, so no published part is refused by every worker until dead-lettered."""
    record = RECORDS[name]
    assert splitter_accepts(record, tmp_path) == worker_accepts(record)


def test_a_1000_deep_record_reaches_the_handler() -> None:
    """The case that raised RecursionError in the worker's json.loads: it decodes."""
    assert worker_accepts(RECORDS["depth-1000"])
