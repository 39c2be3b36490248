"""The built-in demo handler: real work per record, one result file per part.

For each record it computes a SHA-256 and counts words (text records and string
fields) and fields (JSON objects). The part's result is written atomically (a temp
file in the same folder, then ``os.replace``) as ``<batch_id>-<part:06d>.json``, so a
redelivered part overwrites its earlier result instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from batchctl.worker.part import Part


def summarize(records: list[Any]) -> dict[str, Any]:
    """Per-part figures: records, words, field counts and a digest over the record digests."""
    words = 0
    fields: Counter[str] = Counter()
    digest = hashlib.sha256()
    for record in records:
        text = record if isinstance(record, str) else json.dumps(record, sort_keys=True, separators=(",", ":"))
        digest.update(hashlib.sha256(text.encode()).digest())
        words += _words(record)
        if isinstance(record, dict):
            fields.update(record.keys())
    return {
        "records": len(records),
        "words": words,
        "fields": dict(sorted(fields.items())),
        "sha256": digest.hexdigest(),
    }


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_words(v) for v in value.values())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    return 0


def result_path(results_dir: Path, batch_id: str, index: int) -> Path:
    return results_dir / f"{batch_id}-{index:06d}.json"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def handle(part: Part) -> dict[str, Any]:
    """Summarize the part's records, write ``<results_dir>/<batch_id>-<part:06d>.json``, and return
    the summary (the part's result when the batch has ``--output``)."""
    result = {"batch_id": part.batch_id, "part": part.index, **summarize(part.records)}
    body = json.dumps(result, sort_keys=True).encode() + b"\n"
    write_atomically(result_path(Path(part.results_dir), part.batch_id, part.index), body)
    return result
