"""``submit gs://BUCKET/PREFIX`` on the real Pub/Sub and Cloud Storage emulators.

Checks: the objects under a prefix are read in name order, mixed with local files, in
every format (JSONL, CSV, gzip by content); each object is downloaded once although
submit reads its input twice; a missing bucket, an empty prefix, no permission, a
malformed line (naming the object and line) and an unreachable Cloud Storage each end
with exit 2 or 3, one line, and nothing created.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from pytest_mock import MockerFixture

from batchctl.core.emulator import free_port
from batchctl.core.errors import Unreachable
from batchctl.core.pubsub import PubSub
from batchctl.core.storage import Storage
from batchctl.frontend.cli import main
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.submit import SubmitOptions, submit
from tests.integration.test_submit_bad_input import assert_nothing_left, one_line_error
from tests.integration.test_submit_roundtrip import records_of


def jsonl(start: int, stop: int) -> bytes:
    return b"".join(b'{"i": %d}\n' % i for i in range(start, stop))


def test_prefix_objects_in_name_order_mixed_with_local(
    pubsub: PubSub, gcs: Storage, bucket: str, tmp_path: Path
) -> None:
    """gs:// folder (b before c, gzip found by content) then a local file: every record once, in order."""
    gcs.write(f"gs://{bucket}/in/c.jsonl", jsonl(30, 45))
    gcs.write(f"gs://{bucket}/in/b.jsonl.gz", gzip.compress(jsonl(10, 30)), content_type="application/gzip")
    gcs.write(f"gs://{bucket}/in/_SUCCESS", b"{}")
    local = tmp_path / "tail.jsonl"
    local.write_bytes(jsonl(45, 50))
    gcs.write(f"gs://{bucket}/a.jsonl", jsonl(0, 10))
    result = submit(pubsub, SubmitOptions([f"gs://{bucket}/a.jsonl", f"gs://{bucket}/in", str(local)],
                                          batch_id="gs-mixed", limits=PartLimits(7)), storage=gcs)
    assert (result.records, result.parts) == (50, 8)
    assert [json.loads(r)["i"] for r in records_of(pubsub, "gs-mixed")] == list(range(50))


def test_csv_object(pubsub: PubSub, gcs: Storage, bucket: str) -> None:
    """A CSV object's rows become JSON objects keyed by its header."""
    gcs.write(f"gs://{bucket}/rows.csv.gz", gzip.compress(b'id,text\n1,"a, b"\n2,plain\n'))
    submit(pubsub, SubmitOptions([f"gs://{bucket}/rows.csv.gz"], batch_id="gs-csv"), storage=gcs)
    assert [json.loads(r) for r in records_of(pubsub, "gs-csv")] == [{"id": "1", "text": "a, b"},
                                                                      {"id": "2", "text": "plain"}]


def test_each_object_is_downloaded_once(pubsub: PubSub, gcs: Storage, bucket: str, mocker: MockerFixture) -> None:
    """Two passes over the input, one download per object (the publish pass reads the spool)."""
    for name in ("x/1.jsonl", "x/2.jsonl"):
        gcs.write(f"gs://{bucket}/{name}", jsonl(0, 100))
    opened = mocker.spy(gcs, "open")
    result = submit(pubsub, SubmitOptions([f"gs://{bucket}/x/"], batch_id="gs-once", limits=PartLimits(10)),
                    storage=gcs)
    assert result.parts == 20
    assert sorted(call.args[0].name for call in opened.call_args_list) == ["x/1.jsonl", "x/2.jsonl"]
    assert len(records_of(pubsub, "gs-once")) == 200


BAD = {
    "missing-bucket": ("gs://no-such-bucket-z/in.jsonl", "gs://no-such-bucket-z/in.jsonl: no such bucket or object"),
    "empty-prefix": ("gs://{bucket}/nothing/", "gs://{bucket}/nothing/: no such object, and no objects under it"),
    "malformed": ("gs://{bucket}/bad/in.jsonl", "gs://{bucket}/bad/in.jsonl:3: malformed JSON"),
    "no-format": ("gs://{bucket}/bad.bin", "gs://{bucket}/bad.bin: cannot tell the format"),
    "bad-gzip": ("gs://{bucket}/fake.jsonl.gz", "gs://{bucket}/fake.jsonl.gz: not a gzip file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_gs_input_exits_2_and_leaves_nothing(
    case: str, gcs_env: dict[str, str], gcs: Storage, bucket: str, pubsub: PubSub, prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2, one line naming the object (and line), no topic, no request."""
    gcs.write(f"gs://{bucket}/bad/in.jsonl", b'{"a":1}\n{"a":2}\n{"a":\n')
    gcs.write(f"gs://{bucket}/bad.bin", b"x\n")
    gcs.write(f"gs://{bucket}/fake.jsonl.gz", b"plain\n")
    url, expected = (text.format(bucket=bucket) for text in BAD[case])
    assert main(["submit", url, "--batch-id", "bad"], environ=gcs_env) == 2
    assert expected in one_line_error(capsys)
    assert_nothing_left(pubsub, prefix)


def test_no_permission_exits_2(gcs_env: dict[str, str], gcs: Storage, pubsub: PubSub, prefix: str,
                               capsys: pytest.CaptureFixture[str], mocker: MockerFixture) -> None:
    """A 403 from Cloud Storage (injected at the client: the emulator has no IAM) is bad input."""
    from google.cloud import storage

    mocker.patch.object(storage.Client, "list_blobs", side_effect=gexc.Forbidden("caller lacks storage.objects.list"))
    assert main(["submit", "gs://private/in.jsonl", "--batch-id", "bad"], environ=gcs_env) == 2
    assert "gs://private/in.jsonl: permission denied" in one_line_error(capsys)
    assert_nothing_left(pubsub, prefix)


def test_unreachable_storage_exits_3_and_leaves_nothing(pubsub: PubSub, prefix: str) -> None:
    """Nothing answers on the storage endpoint: Unreachable (exit 3), nothing created."""
    dead = Storage({"STORAGE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}, retry_s=1.0)
    with pytest.raises(Unreachable, match=r"gs://b/in\.jsonl: Cloud Storage unreachable"):
        submit(pubsub, SubmitOptions(["gs://b/in.jsonl"], batch_id="dead"), storage=dead)
    assert_nothing_left(pubsub, prefix)


def test_bad_output_exits_2_and_leaves_nothing(
    gcs_env: dict[str, str], gcs: Storage, bucket: str, pubsub: PubSub, prefix: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--output into a missing bucket, onto a finished batch's results, or a folder with the
    Kubernetes backend: exit 2, one line, nothing created."""
    data = tmp_path / "in.jsonl"
    data.write_bytes(jsonl(0, 3))
    gcs.write(f"gs://{bucket}/done/_SUCCESS", b"{}")
    cases = [
        (["--output", "gs://no-such-bucket-o/out/"], "gs://no-such-bucket-o: no such bucket"),
        (["--output", f"gs://{bucket}/done"], f"--output gs://{bucket}/done/: already holds a finished batch"),
        (["--output", str(tmp_path / "out"), "--backend", "kubernetes"], "a folder works only with the local backend"),
    ]
    for flags, expected in cases:
        assert main(["submit", str(data), "--batch-id", "bad", *flags], environ=gcs_env) == 2
        assert expected in one_line_error(capsys)
        assert_nothing_left(pubsub, prefix)
    assert not (tmp_path / "out").exists()
