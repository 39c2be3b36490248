"""The Cloud Storage seam against the real emulator: listing an object or a folder in name
order, streaming an object's stored bytes, writing and reading back, and its error mapping
(missing bucket or object: exit 2 naming it; nothing answering: exit 3)."""

from __future__ import annotations

import gzip

import pytest

from batchctl.core.emulator import free_port
from batchctl.core.errors import BadInput, Unreachable
from batchctl.core.storage import Storage, split_url


def test_lists_an_object_or_a_folder_in_name_order(gcs: Storage, bucket: str) -> None:
    """``gs://b/data`` is the folder ``data/`` (its data objects sorted); an exact name is that object."""
    for name in ("data/b.jsonl", "data/a.jsonl", "data/_SUCCESS", "data/.hidden", "data/sub/c.csv", "datax.txt"):
        gcs.write(f"gs://{bucket}/{name}", b"{}\n")
    assert [o.name for o in gcs.list(f"gs://{bucket}/data")] == ["data/a.jsonl", "data/b.jsonl", "data/sub/c.csv"]
    assert [o.name for o in gcs.list(f"gs://{bucket}/data/")] == ["data/a.jsonl", "data/b.jsonl", "data/sub/c.csv"]
    assert [o.url for o in gcs.list(f"gs://{bucket}/datax.txt")] == [f"gs://{bucket}/datax.txt"]
    assert gcs.list(f"gs://{bucket}/nothing-here") == []


def test_open_streams_stored_bytes_gzip_untouched(gcs: Storage, bucket: str) -> None:
    """What is read is what was stored, compressed objects included."""
    body = gzip.compress(b"".join(b'{"i": %d}\n' % i for i in range(50000)))
    gcs.write(f"gs://{bucket}/in.jsonl.gz", body, content_type="application/gzip")
    [obj] = gcs.list(f"gs://{bucket}/in.jsonl.gz")
    with gcs.open(obj) as stream:
        assert stream.peek(2)[:2] == b"\x1f\x8b"
        assert stream.read() == body


def test_write_then_read_and_stat(gcs: Storage, bucket: str) -> None:
    """A written object reads back; a missing object stats as None."""
    gcs.write(f"gs://{bucket}/out/part-000000.jsonl", b'{"a":1}\n', metadata={"records": "1"})
    assert gcs.read(f"gs://{bucket}/out/part-000000.jsonl") == b'{"a":1}\n'
    stat = gcs.stat(f"gs://{bucket}/out/part-000000.jsonl")
    assert stat is not None and stat.size == 8
    assert gcs.stat(f"gs://{bucket}/out/part-000001.jsonl") is None


@pytest.mark.parametrize("url", ["gs://no-such-bucket-x/data", "gs://no-such-bucket-x/"])
def test_missing_bucket_is_bad_input_naming_it(gcs: Storage, url: str) -> None:
    with pytest.raises(BadInput, match=r"no-such-bucket-x.*no such bucket or object"):
        gcs.list(url)


def test_missing_object_is_bad_input_naming_it(gcs: Storage, bucket: str) -> None:
    with pytest.raises(BadInput, match=f"gs://{bucket}/missing.json: no such bucket or object"):
        gcs.read(f"gs://{bucket}/missing.json")


def test_stat_of_missing_bucket_is_bad_input(gcs: Storage) -> None:
    with pytest.raises(BadInput, match="gs://no-such-bucket-y: no such bucket"):
        gcs.stat("gs://no-such-bucket-y/x")


def test_nothing_answering_is_unreachable() -> None:
    """A closed port: exit 3 once the bounded retry gives up."""
    storage = Storage({"STORAGE_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}, retry_s=1.0)
    with pytest.raises(Unreachable, match="gs://b/x: Cloud Storage unreachable") as info:
        storage.list("gs://b/x")
    assert info.value.exit_code == 3


@pytest.mark.parametrize("url", ["gs://", "gs:///x", "s3://b/x"])
def test_bad_addresses(url: str) -> None:
    with pytest.raises(BadInput):
        split_url(url)


def test_open_of_a_vanished_object_raises_bad_input_when_read(gcs: Storage, bucket: str) -> None:
    """The download thread's error reaches the reader, mapped (listed, then deleted before the read)."""
    gcs.write(f"gs://{bucket}/gone.jsonl", b"{}\n")
    [obj] = gcs.list(f"gs://{bucket}/gone.jsonl")
    gcs.client.bucket(bucket).blob("gone.jsonl").delete()
    with gcs.open(obj) as stream, pytest.raises(BadInput, match=f"gs://{bucket}/gone.jsonl: no such bucket"):
        stream.read()


def test_closing_early_stops_the_download(gcs: Storage, bucket: str) -> None:
    """A reader that stops (a bad record) cancels the rest of the download: its thread ends."""
    import threading

    gcs.write(f"gs://{bucket}/big.jsonl", b'{"i": 1}\n' * 2_000_000)
    [obj] = gcs.list(f"gs://{bucket}/big.jsonl")
    with gcs.open(obj) as stream:
        assert stream.read(10) == b'{"i": 1}\n{'
    name = f"download gs://{bucket}/big.jsonl"
    for thread in [t for t in threading.enumerate() if t.name == name]:
        thread.join(timeout=10)
        assert not thread.is_alive()
