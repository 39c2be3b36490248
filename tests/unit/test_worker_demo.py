"""The demo handler: per-record work and atomic per-part result files.

Checks: word and field counts; a deterministic digest; one result file per part
named by batch and part; a redelivered part overwrites its file; no temp files left.
"""

from __future__ import annotations

import json
from pathlib import Path

from batchctl.worker.demo import handle, summarize
from batchctl.worker.part import Part


def test_summary_counts_words_and_fields() -> None:
    """Words from text and string fields, field names from objects."""
    summary = summarize(["two words", {"a": "x y z", "b": 1}, {"a": None}])
    assert summary["records"] == 3
    assert summary["words"] == 5
    assert summary["fields"] == {"a": 2, "b": 1}


def test_summary_digest_is_deterministic_and_order_sensitive() -> None:
    """Same records, same digest; key order inside objects does not matter, record order does."""
    assert summarize([{"a": 1, "b": 2}])["sha256"] == summarize([{"b": 2, "a": 1}])["sha256"]
    assert summarize(["x", "y"])["sha256"] != summarize(["y", "x"])["sha256"]


def test_one_result_file_per_part_and_redelivery_overwrites(tmp_path: Path) -> None:
    """Handling a part twice leaves one file, with the latest content, and no temp files."""
    part = Part(batch_id="b1", index=7, records=["a b"], attributes={}, results_dir=tmp_path)
    handle(part)
    handle(Part(batch_id="b1", index=7, records=["a b c"], attributes={}, results_dir=tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["b1-000007.json"]
    result = json.loads((tmp_path / "b1-000007.json").read_text())
    assert (result["batch_id"], result["part"], result["words"]) == ("b1", 7, 3)
