"""The ``_SUCCESS`` manifest's content (pure), DEST canonical forms, result object names, and
the request's ``output`` field check."""

from __future__ import annotations

import json

import pytest

from batchctl.core.errors import BadInput
from batchctl.core.messages import BatchRequest, Control, decode_control, encode_control
from batchctl.core.sink import check_dest, part_index, part_name
from batchctl.launcher.manifest import manifest, missing_reason
from batchctl.launcher.state import BatchState, JobRecord


def test_manifest_names_batch_parts_records_and_timings() -> None:
    request = BatchRequest("b1", parts=3, records=30, bytes=300, handler="m:f", created=1000.0, output="gs://x/y/")
    batch = BatchState(request, jobs=[JobRecord("p-b1-1", 1, 2, 1002.5, 0)])
    assert manifest(batch, records_out=12, finished=1010.25) == {
        "version": 1, "batch_id": "b1", "output": "gs://x/y/", "parts": 3, "records_in": 30, "records_out": 12,
        "bytes_in": 300, "jobs": 1, "created": "1970-01-01T00:16:40.000+00:00",
        "first_launch": "1970-01-01T00:16:42.500+00:00", "finished": "1970-01-01T00:16:50.250+00:00",
        "seconds": 10.25,
    }


def test_missing_reason_names_the_first_missing_object() -> None:
    assert missing_reason([3, 9]) == "results missing for 2 parts (first: part-000003.jsonl)"


def test_part_names_round_trip() -> None:
    assert part_name(42) == "part-000042.jsonl"
    assert part_index("out/part-000042.jsonl") == 42
    assert part_index("out/_SUCCESS") is None and part_index("part-x.jsonl") is None


def test_dest_forms(tmp_path: object) -> None:
    assert check_dest("gs://b/out", backend="kubernetes") == "gs://b/out/"
    assert check_dest("gs://b/out/", backend="local") == "gs://b/out/"
    assert check_dest("rel/out", backend="local").startswith("/")
    with pytest.raises(BadInput, match="only with the local backend"):
        check_dest("/tmp/out", backend="kubernetes")
    with pytest.raises(BadInput, match="no bucket"):
        check_dest("gs:///x", backend="local")


@pytest.mark.parametrize("output", ["relative/dir", "", "s3://b/x", "gs://", 5])
def test_request_output_must_be_a_destination(output: object) -> None:
    data, attributes = encode_control(Control("launch", "b1", BatchRequest("b1", 1, 1, 1, "m:f")))
    body = json.loads(data)
    body["request"]["output"] = output
    with pytest.raises(BadInput, match=r"request\.output"):
        decode_control(json.dumps(body).encode(), attributes)


def test_request_output_round_trips() -> None:
    data, attributes = encode_control(Control("launch", "b1", BatchRequest("b1", 1, 1, 1, "m:f", output="gs://b/o/")))
    request = decode_control(data, attributes).request
    assert request is not None and request.output == "gs://b/o/"
