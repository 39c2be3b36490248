"""Submit on the real emulator, then pull every part with the plain client.

Checks: every input record arrives exactly once, in order within its part, with
correct attributes and checksum, for JSONL, CSV, lines, folders, stdin and gzip;
unicode, empty text lines and a CSV field with an embedded newline survive; the
batch request lands on the control topic.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import pytest

from batchctl.core.messages import decode_control
from batchctl.core.pubsub import PubSub
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.submit import SubmitOptions, submit
from tests.support.pulling import drain


def parts_of(pubsub: PubSub, batch_id: str) -> list[tuple[dict[str, str], list[str]]]:
    msgs = drain(pubsub, pubsub.settings.names.work(batch_id))
    out = []
    for m in msgs:
        assert hashlib.sha256(m.data).hexdigest() == m.attributes["sha256"]
        records = m.data.decode().split("\n")
        assert int(m.attributes["records"]) == len(records)
        out.append((dict(m.attributes), records))
    out.sort(key=lambda p: int(p[0]["part"]))
    assert [int(a["part"]) for a, _ in out] == list(range(len(out))), "each part exactly once"
    assert all(int(a["parts"]) == len(out) and a["batch_id"] == batch_id for a, _ in out)
    return out


def records_of(pubsub: PubSub, batch_id: str) -> list[str]:
    return [r for _, recs in parts_of(pubsub, batch_id) for r in recs]


def test_jsonl_records_arrive_once_in_order(pubsub: PubSub, tmp_path: Path) -> None:
    """250 JSONL records with unicode, 7 per part: all arrive once, in order, checksummed."""
    lines = [json.dumps({"i": i, "name": f"zoë-{i}-日本"}, ensure_ascii=False) for i in range(250)]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    result = submit(pubsub, SubmitOptions([str(path)], batch_id="rt-jsonl", limits=PartLimits(7)))
    assert (result.parts, result.records) == (36, 250)
    assert records_of(pubsub, "rt-jsonl") == lines


def test_csv_rows_become_json_objects(pubsub: PubSub, tmp_path: Path) -> None:
    """CSV with BOM, quoted commas and an embedded newline: rows become objects keyed by header."""
    path = tmp_path / "in.csv"
    path.write_bytes('\ufeffid,text\n1,"a, b"\n2,"line one\nline two"\n3,plain\n'.encode())
    submit(pubsub, SubmitOptions([str(path)], batch_id="rt-csv", limits=PartLimits(2)))
    got = [json.loads(r) for r in records_of(pubsub, "rt-csv")]
    assert got == [{"id": "1", "text": "a, b"}, {"id": "2", "text": "line one\nline two"},
                   {"id": "3", "text": "plain"}]


def test_csv_quoted_crlf_is_kept_byte_for_byte(pubsub: PubSub, tmp_path: Path) -> None:
    """CRLF rows, a quoted field holding CRLF and a lone CR: the field's bytes survive, row ends do not."""
    path = tmp_path / "in.csv"
    path.write_bytes(b'id,text\r\n1,"one\r\ntwo"\r\n2,"a\rb"\r\n3,plain\r\n')
    submit(pubsub, SubmitOptions([str(path)], batch_id="rt-crlf", limits=PartLimits(2)))
    got = [json.loads(r) for r in records_of(pubsub, "rt-crlf")]
    assert got == [{"id": "1", "text": "one\r\ntwo"}, {"id": "2", "text": "a\rb"}, {"id": "3", "text": "plain"}]


def test_text_lines_keep_empty_lines(pubsub: PubSub, tmp_path: Path) -> None:
    """Plain lines, empty ones included, arrive as records; format attribute is 'lines'."""
    path = tmp_path / "in.txt"
    path.write_text("first\n\nthird ü\n\n", encoding="utf-8")
    submit(pubsub, SubmitOptions([str(path)], batch_id="rt-lines"))
    parts = parts_of(pubsub, "rt-lines")
    assert parts[0][0]["format"] == "lines"
    assert [r for _, recs in parts for r in recs] == ["first", "", "third ü", ""]


def test_folder_in_name_order_with_gzip(pubsub: PubSub, tmp_path: Path) -> None:
    """A folder's files are read in name order; .gz files are read transparently."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(b'{"f":"b1"}\n{"f":"b2"}\n'))
    (folder / "a.jsonl").write_text('{"f":"a1"}\n')
    (folder / "c.jsonl").write_text('{"f":"c1"}')
    submit(pubsub, SubmitOptions([str(folder)], batch_id="rt-folder", limits=PartLimits(2)))
    assert [json.loads(r)["f"] for r in records_of(pubsub, "rt-folder")] == ["a1", "b1", "b2", "c1"]


def test_stdin_gzip(pubsub: PubSub) -> None:
    """'-' reads stdin, gzip detected by its magic bytes."""
    data = gzip.compress("".join(f"line {i}\n" for i in range(30)).encode())
    submit(pubsub, SubmitOptions(["-"], batch_id="rt-stdin", format="lines", limits=PartLimits(10)),
           stdin=io.BytesIO(data))
    assert records_of(pubsub, "rt-stdin") == [f"line {i}" for i in range(30)]


def test_max_part_bytes_cuts_parts(pubsub: PubSub, tmp_path: Path) -> None:
    """Parts never exceed --max-part-bytes."""
    path = tmp_path / "in.txt"
    path.write_text("".join("x" * 90 + "\n" for _ in range(40)))
    submit(pubsub, SubmitOptions([str(path)], batch_id="rt-bytes", limits=PartLimits(100, 300)))
    parts = parts_of(pubsub, "rt-bytes")
    assert all(len("\n".join(recs).encode()) <= 300 for _, recs in parts)
    assert sum(len(recs) for _, recs in parts) == 40


def test_request_sent_after_parts(pubsub: PubSub, tmp_path: Path) -> None:
    """The launch request names the batch, its parts and records, and the parallelism knobs."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"a":1}\n' * 5)
    submit(pubsub, SubmitOptions([str(path)], batch_id="rt-req", limits=PartLimits(2), max_parallelism=3))
    msgs = drain(pubsub, pubsub.settings.names.requests_subscription)
    assert len(msgs) == 1
    control = decode_control(msgs[0].data, msgs[0].attributes)
    assert control.action == "launch" and control.request is not None
    assert (control.request.parts, control.request.records, control.request.max_parallelism) == (3, 5, 3)


@pytest.mark.parametrize("fmt", ["jsonl", "lines"])
def test_submit_cli_json_summary(env: dict[str, str], tmp_path: Path, fmt: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`batchctl submit --json` prints batch_id, parts, records, bytes."""
    from batchctl.frontend.cli import main

    path = tmp_path / "in.jsonl"
    path.write_text('{"a":1}\n{"a":2}\n')
    rc = main(["submit", str(path), "--batch-id", f"cli-{fmt}", "--format", fmt, "--json"], environ=env)
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"batch_id": f"cli-{fmt}", "parts": 1, "records": 2, "bytes": 15}
