"""A part's result uploaded to gs:// (``core.upload``), on the real Cloud Storage emulator.

One object per part, overwritten by a redelivery (content and record count); a 503 and a reset
connection are retried within the storage client's bounded retry; a line that stays down ends in
``Unreachable`` within the bound, and in the worker that is a nack, then the redelivered part is
written once and acked. Faults: ``FaultProxy`` between the client and the emulator (TCP resets),
and one 503 answered in place of the emulator's (the emulator cannot be told to fail).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests.adapters
import urllib3
from pytest_mock import MockerFixture

from batchctl.core.errors import EXIT_OK, Unreachable
from batchctl.core.pubsub import PubSub
from batchctl.core.sink import RECORDS_KEY, Sink
from batchctl.core.storage import EMULATOR_VAR, Storage, keep_connections
from batchctl.worker.results import wrap
from batchctl.worker.writer import REMOTE_WRITERS
from tests.support.inprocess import InProcessWorker
from tests.support.parts import EventLog, publish_batch
from tests.support.proxy import FaultProxy
from tests.support.waiting import wait_for


@pytest.fixture
def line(storage_host: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the storage emulator."""
    with FaultProxy(storage_host) as proxy:
        yield proxy


def storage_via(line: FaultProxy, gcs_env: dict[str, str], retry_s: float = 10.0) -> Storage:
    return Storage({**gcs_env, EMULATOR_VAR: line.address}, retry_s=retry_s)


def objects(gcs: Storage, bucket: str) -> dict[str, tuple[bytes, str]]:
    """Every object of the bucket: its content and record count."""
    return {o.name: (gcs.read(o.url), (o.metadata or {}).get(RECORDS_KEY, "")) for o in gcs.list(f"gs://{bucket}/")}


def test_a_redelivered_part_overwrites_its_own_object(gcs: Storage, bucket: str, mocker: MockerFixture) -> None:
    """The second write of part 3 replaces the first: one object, the new content and record count;
    both on the short path (the session's ``request`` is not used: it costs 300 us more per part)."""
    sink = Sink(f"gs://{bucket}/out/", storage=gcs)
    session = mocker.spy(gcs.client._http, "request")
    sink.write_part(3, b'{"a":1}\n{"a":2}\n', 2)
    sink.write_part(3, b'{"b":1}\n', 1)
    assert session.call_count == 0
    assert objects(gcs, bucket) == {"out/part-000003.jsonl": (b'{"b":1}\n', "1")}
    assert sink.records_out(4) == (1, [0, 1, 2])
    [stat] = gcs.list(f"gs://{bucket}/out/part-000003.jsonl")
    assert gcs.client.bucket(bucket).get_blob(stat.name).content_type == "application/x-ndjson"


def test_a_body_holding_the_multipart_delimiter_is_stored_as_given(gcs: Storage, bucket: str) -> None:
    """A result that happens to hold the request's boundary still arrives byte for byte."""
    sink = Sink(f"gs://{bucket}/out/", storage=gcs)
    sink.write_part(0, b"{}\n", 1)  # builds the uploader
    boundary = gcs._uploader()._boundary.encode()
    body = b'"\r\n--' + boundary + b'--\r\n"\n'
    sink.write_part(0, body, 1)
    assert gcs.read(f"gs://{bucket}/out/part-000000.jsonl") == body


def first_post_answered(status: int, mocker: MockerFixture) -> list[int]:
    """The first upload POST is answered ``status`` in place of the emulator; the statuses seen, in order."""
    real = urllib3.connectionpool.HTTPConnectionPool.urlopen
    answers: list[int] = []

    def first_fails(pool: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method == "POST" and "uploadType=multipart" in url and not answers:
            answers.append(status)
            return urllib3.HTTPResponse(body=b'{"error": {"code": %d, "message": "no"}}' % status, status=status,
                                        preload_content=True)
        response = real(pool, method, url, *args, **kwargs)
        answers.append(response.status)
        return response

    mocker.patch.object(urllib3.connectionpool.HTTPConnectionPool, "urlopen", first_fails)
    return answers


def test_a_503_is_retried(gcs: Storage, bucket: str, mocker: MockerFixture) -> None:
    """The first POST is answered 503; the retry writes the object."""
    answers = first_post_answered(503, mocker)
    Sink(f"gs://{bucket}/out/", storage=gcs).write_part(0, b'{"a":1}\n', 1)
    assert answers == [503, 200]
    assert objects(gcs, bucket) == {"out/part-000000.jsonl": (b'{"a":1}\n', "1")}


def test_a_401_goes_again_through_the_authorized_session(gcs: Storage, bucket: str, mocker: MockerFixture) -> None:
    """A 401 on the short path is sent again by the client's session (which refreshes its credentials on a 401)."""
    answers = first_post_answered(401, mocker)
    session = mocker.spy(gcs.client._http, "request")
    Sink(f"gs://{bucket}/out/", storage=gcs).write_part(0, b'{"a":1}\n', 1)
    assert answers == [401, 200] and session.call_count == 1
    assert objects(gcs, bucket) == {"out/part-000000.jsonl": (b'{"a":1}\n', "1")}


def test_a_reset_connection_is_retried(gcs: Storage, gcs_env: dict[str, str], bucket: str,
                                       line: FaultProxy) -> None:
    """Connections are reset until two have been; the write started meanwhile then succeeds."""
    storage = storage_via(line, gcs_env)
    line.reject()

    def restore_after_two() -> None:
        with contextlib.suppress(AssertionError):  # the write's own outcome is what the test checks
            wait_for(lambda: line.stats.rejected >= 2, timeout=10, what="two rejected connections")
        line.restore()

    restorer = threading.Thread(target=restore_after_two, daemon=True)
    restorer.start()
    try:
        Sink(f"gs://{bucket}/out/", storage=storage).write_part(1, b'{"a":1}\n', 1)
    finally:
        restorer.join(timeout=15)
        storage.close()
    assert line.stats.rejected >= 2
    assert objects(gcs, bucket) == {"out/part-000001.jsonl": (b'{"a":1}\n', "1")}


def test_a_line_that_stays_down_is_unreachable_within_the_bound(gcs_env: dict[str, str], bucket: str,
                                                              line: FaultProxy) -> None:
    storage = storage_via(line, gcs_env, retry_s=1.0)
    line.reject()
    try:
        with pytest.raises(Unreachable, match=f"gs://{bucket}/out/part-000000.jsonl: Cloud Storage unreachable"):
            Sink(f"gs://{bucket}/out/", storage=storage).write_part(0, b"{}\n", 1)
    finally:
        storage.close()
    assert line.stats.rejected >= 2  # retried before giving up


def echo(part: Any) -> list[dict[str, Any]]:
    return [{"part": part.index, "record": r} for r in part.records]


@pytest.mark.timeout(60)
def test_the_worker_nacks_an_unwritten_part_and_writes_its_redelivery_once(
    pubsub: PubSub, gcs: Storage, gcs_env: dict[str, str], bucket: str, line: FaultProxy, tmp_path: Path
) -> None:
    """The line is down for part 0's first write: part_failed and no ack; back up, the redelivered
    part is written (one object) and acked: the batch's parts all done."""
    events = EventLog.open(pubsub)
    publish_batch(pubsub, "upfail", [[{"i": 0}], [{"i": 1}]])
    line.reject()
    storage = storage_via(line, gcs_env, retry_s=0.5)
    worker = InProcessWorker.start(pubsub, "upfail", wrap(echo, output=True), tmp_path,
                                   sink=Sink(f"gs://{bucket}/out/", storage=storage),
                                   empty_pulls=3, pull_timeout_s=0.3, lease_s=10, writers=1, prefetch=0)
    try:
        wait_for(lambda: events.of("part_failed"), timeout=20, what="a part failed by the unwritten result")
        line.restore()
        assert worker.wait(timeout=30) == EXIT_OK
    finally:
        worker.stop()
        storage.close()
    failed = events.of("part_failed")
    assert all(f.reason.startswith("result not written: Unreachable: ") for f in failed)
    assert objects(gcs, bucket) == {
        "out/part-000000.jsonl": (b'{"part":0,"record":{"i":0}}\n', "1"),
        "out/part-000001.jsonl": (b'{"part":1,"record":{"i":1}}\n', "1"),
    }
    assert events.done_parts() == {0, 1}


def test_the_upload_pool_keeps_a_connection_per_writer(gcs: Storage, bucket: str) -> None:
    """A worker's writers upload at once: the session keeps a connection for each (``requests`` keeps
    10; the others would be opened and closed per upload, a TLS handshake each on Cloud Storage)."""
    gcs.write(f"gs://{bucket}/pool/one", b"x\n")
    pool = gcs._uploader()._pool
    assert pool is not None and pool.pool.maxsize >= REMOTE_WRITERS


def test_another_adapter_is_left_as_it_is() -> None:
    """google-auth mounts its own adapter for mutual TLS: its pool is not replaced."""

    class MutualTls(requests.adapters.HTTPAdapter):
        pass

    session, endpoint = requests.Session(), "https://storage.googleapis.com"
    session.mount(endpoint, MutualTls())
    keep_connections(session, endpoint, 64)
    assert type(session.get_adapter(endpoint)) is MutualTls
    plain = requests.Session()
    keep_connections(plain, endpoint, 64)
    assert getattr(plain.get_adapter(endpoint), "_pool_maxsize", None) == 64
