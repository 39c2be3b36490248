"""The worker's result writers (``worker/writer.py``) and how the worker settles a part around them.

The pool alone: threads for a bucket, none (writes on the slot) for a folder; ``submit`` blocks
while the pool is full (by count and by bytes), a failed write is reported failed and never
written, ``stop`` drops the waiting parts. The real ``Worker`` (leases, settler, slots, writers)
against an in-memory Pub/Sub: a part is acked only after its result is written (by a thread or
on the slot); a failed write nacks the part (redelivered, written, then acked); a stop waits for
a write within the drain budget, and past it nacks the part, acks nothing and writes no waiting
part.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import pytest
import structlog

from batchctl.core.errors import Unreachable
from batchctl.core.pubsub import Received
from batchctl.core.settings import Settings
from batchctl.worker.config import WorkerConfig
from batchctl.worker.lease import Held
from batchctl.worker.results import PartResult, wrap
from batchctl.worker.runtime import Worker
from batchctl.worker.shutdown import Shutdown
from batchctl.worker.writer import REMOTE_WRITERS, Job, ResultWriter, writers_for
from tests.support.parts import encode_part
from tests.support.waiting import wait_for

LOG = structlog.get_logger()
BATCH = "wb"


def job(index: int, body: bytes = b"{}\n") -> Job:
    received = Received(ack_id=f"a{index}", message_id=f"m{index}", data=b"", attributes={}, delivery_attempt=1)
    return Job(Held(received), index, 1, PartResult(body, body.count(b"\n")))


class Gate:
    """A write that blocks until opened (at most 10 s), recording which parts started and ended."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.started: list[int] = []
        self.ended: list[int] = []

    def write(self, index: int, body: bytes, records: int) -> None:
        self.started.append(index)
        assert self.opened.wait(10), "gate never opened"
        self.ended.append(index)


def pool(write: Callable[[int, bytes, int], None], **kw: Any) -> tuple[ResultWriter, list[int], list[tuple[int, str]]]:
    written: list[int] = []
    failed: list[tuple[int, str]] = []
    writer = ResultWriter(write, written=lambda j: written.append(j.index),
                          failed=lambda j, why: failed.append((j.index, why)), log=LOG, **kw)
    writer.start()
    return writer, written, failed


def test_writer_threads_for_a_bucket_none_for_a_folder_unless_configured() -> None:
    assert writers_for(remote=True, configured=None) == REMOTE_WRITERS == 4
    assert writers_for(remote=False, configured=None) == 0
    assert writers_for(remote=False, configured=3) == 3
    assert writers_for(remote=True, configured=0) == 0


def test_with_no_threads_submit_writes_on_the_callers_thread() -> None:
    threads: list[str] = []
    writer, written, _ = pool(lambda i, b, r: threads.append(threading.current_thread().name), writers=0)
    assert writer.submit(job(5)) is True
    assert written == [5] and threads == [threading.current_thread().name]
    writer.stop()
    assert writer.submit(job(6)) is False and written == [5]


def test_submit_blocks_while_the_pool_is_full() -> None:
    """One writer, one waiting part: a third part waits in ``submit`` until the first write ends."""
    gate = Gate()
    writer, written, _ = pool(gate.write, writers=1, queued=1)
    writer.submit(job(0))
    wait_for(lambda: gate.started == [0], timeout=5, what="first write under way")
    writer.submit(job(1))
    third = threading.Thread(target=writer.submit, args=(job(2),), daemon=True)
    third.start()
    third.join(0.3)
    assert third.is_alive(), "submit returned while one part was being written and another waited"
    gate.opened.set()
    third.join(5)
    assert not third.is_alive()
    wait_for(lambda: written == [0, 1, 2], timeout=5, what="all three written")


def test_waiting_bytes_are_bounded_but_one_body_always_goes() -> None:
    """A body larger than ``max_bytes`` is taken when nothing waits; the next waits for it."""
    gate = Gate()
    writer, written, _ = pool(gate.write, writers=1, queued=10, max_bytes=100)
    writer.submit(job(0))
    wait_for(lambda: gate.started == [0], timeout=5, what="first write under way")
    assert writer.submit(job(1, b"x" * 500 + b"\n"))  # nothing waits: taken, over the bound
    second = threading.Thread(target=writer.submit, args=(job(2),), daemon=True)
    second.start()
    second.join(0.3)
    assert second.is_alive(), "a part was queued beside 500 waiting bytes (bound 100)"
    gate.opened.set()
    second.join(5)
    wait_for(lambda: written == [0, 1, 2], timeout=5, what="all written")


def test_a_failed_write_is_reported_failed_not_written() -> None:
    def refuse(index: int, body: bytes, records: int) -> None:
        raise Unreachable("gs://b/out/part-000003.jsonl: Cloud Storage unreachable (503)")

    writer, written, failed = pool(refuse, writers=2)
    writer.submit(job(3))
    wait_for(lambda: failed or written, timeout=5, what="the write reported")
    assert written == []
    assert failed == [(3, "result not written: Unreachable: gs://b/out/part-000003.jsonl: Cloud Storage "
                          "unreachable (503)")]
    assert writer.wait_idle(5)


def test_stop_drops_waiting_parts_and_refuses_new_ones() -> None:
    gate = Gate()
    writer, written, _ = pool(gate.write, writers=1, queued=5)
    writer.submit(job(0))
    wait_for(lambda: gate.started == [0], timeout=5, what="first write under way")
    writer.submit(job(1))
    assert writer.stop() == 1
    assert writer.submit(job(2)) is False
    gate.opened.set()
    wait_for(lambda: written, timeout=5, what="the running write reported")
    assert writer.wait_idle(5)
    assert gate.started == [0], "a part dropped by stop was written"


# ---- the worker around its writers, on an in-memory Pub/Sub ----------------------------------


class MemoryPubSub:
    """What the worker calls on Pub/Sub, in memory: a nacked part is redelivered at once (attempt + 1);
    acks, nacks and published events go to ``log`` in the order they happen."""

    def __init__(self, parts: Sequence[Sequence[Any]]) -> None:
        self.settings = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p"})
        self.log: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._queue: deque[Received] = deque()
        for index, records in enumerate(parts):
            self._queue.append(self._received(index, len(parts), records, attempt=1))
        self._parts = {index: (len(parts), records) for index, records in enumerate(parts)}

    @staticmethod
    def _received(index: int, total: int, records: Sequence[Any], *, attempt: int) -> Received:
        data, attributes = encode_part(BATCH, index, total, records)
        return Received(ack_id=f"{index}/{attempt}", message_id=f"m{index}", data=data, attributes=attributes,
                        delivery_attempt=attempt)

    def record(self, *entry: Any) -> None:
        with self._lock:
            self.log.append(entry)

    def entries(self, kind: str) -> list[Any]:
        with self._lock:
            return [entry[1] for entry in self.log if entry[0] == kind]

    def pull_answered(self, subscription: str, *, max_messages: int, timeout_s: float,
                      return_immediately: bool = False) -> list[Received]:
        with self._lock:
            return [self._queue.popleft() for _ in range(min(max_messages, len(self._queue)))]

    def ack(self, subscription: str, ack_ids: Sequence[str], *, timeout_s: float = 0) -> None:
        for ack_id in ack_ids:
            self.record("ack", ack_id)

    def modify_ack_deadline(self, subscription: str, ack_ids: Iterable[str], seconds: int, *,
                            timeout_s: float = 0) -> None:
        if seconds:
            return
        for ack_id in ack_ids:
            self.record("nack", ack_id)
            index, attempt = (int(n) for n in ack_id.split("/"))
            total, records = self._parts[index]
            with self._lock:
                self._queue.append(self._received(index, total, records, attempt=attempt + 1))

    def nack(self, subscription: str, ack_ids: Iterable[str], *, timeout_s: float = 0) -> None:
        self.modify_ack_deadline(subscription, ack_ids, 0, timeout_s=timeout_s)

    def publish(self, topic: str, data: bytes, attributes: dict[str, str] | None = None) -> Future[str]:
        self.record("event", json.loads(data))
        future: Future[str] = Future()
        future.set_result("id")
        return future

    def confirm(self, future: Future[str], *, topic: str, timeout_s: float) -> str:
        return future.result(timeout_s)


class Sink:
    """Stands in for ``core.sink.Sink``: ``write`` decides what each write does (it is told the attempt)."""

    remote = True

    def __init__(self, write: Callable[[int, int], None]) -> None:
        self._write = write
        self.attempt: dict[int, int] = {}
        self.written: list[tuple[int, bytes]] = []

    def write_part(self, index: int, body: bytes, records: int) -> None:
        self.attempt[index] = self.attempt.get(index, 0) + 1
        self._write(index, self.attempt[index])
        self.written.append((index, body))


def echo(part: Any) -> list[dict[str, Any]]:
    return [{"part": part.index, "record": r} for r in part.records]


@contextmanager
def running(pubsub: MemoryPubSub, sink: Sink, **overrides: Any) -> Iterator[tuple[Worker, list[int]]]:
    """The real worker (writers on) on a thread; yields it and [exit code] once it returned."""
    values: dict[str, Any] = {"batch_id": BATCH, "subscription": "work", "empty_pulls": 1, "pull_timeout_s": 0.1,
                              "drain_budget_s": 5.0, "lease_s": 10, "worker_id": "t", "max_delivery_attempts": 5,
                              "writers": 2, **overrides}
    config = WorkerConfig(**values)
    worker = Worker(config, pubsub, wrap(echo, output=True), shutdown=Shutdown(config.drain_budget_s),  # type: ignore[arg-type]
                    log=LOG, sink=sink)  # type: ignore[arg-type]
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(worker.run()), daemon=True)
    thread.start()
    try:
        yield worker, code
    finally:
        worker.shutdown.request("test")
        thread.join(15)
        assert not thread.is_alive(), "the worker did not exit"


@pytest.mark.parametrize("writers", [2, 0])
def test_a_part_is_acked_only_after_its_result_is_written(writers: int) -> None:
    """The write waits (up to 1 s) for the part's ack: none may come before the write returns,
    whether a writer thread or the slot (0 writers, a folder's way) writes it."""
    pubsub = MemoryPubSub([[{"i": 0}, {"i": 1}]])
    acked = threading.Event()
    original = pubsub.record

    def record(*entry: Any) -> None:
        original(*entry)
        if entry[0] == "ack":
            acked.set()

    pubsub.record = record  # type: ignore[method-assign]

    def write(index: int, attempt: int) -> None:
        acked.wait(1.0)
        pubsub.record("written", f"{index}/{attempt}")

    sink = Sink(write)
    with running(pubsub, sink, writers=writers) as (_, code):
        wait_for(lambda: code, timeout=10, what="the worker drained")
    assert code == [0]
    assert [entry[:2] for entry in pubsub.log if entry[0] in ("written", "ack")] == [("written", "0/1"), ("ack", "0/1")]
    assert sink.written == [(0, b'{"part":0,"record":{"i":0}}\n{"part":0,"record":{"i":1}}\n')]


def test_a_failed_write_nacks_the_part_which_is_written_and_acked_when_redelivered() -> None:
    """The first write fails: part_failed and a nack, no ack; the redelivered part is written, then acked."""
    pubsub = MemoryPubSub([[{"i": 0}]])

    def write(index: int, attempt: int) -> None:
        if attempt == 1:
            raise Unreachable("gs://b/out/part-000000.jsonl: Cloud Storage unreachable (503)")
        pubsub.record("written", f"{index}/2")

    with running(pubsub, Sink(write)) as (_, code):
        wait_for(lambda: code, timeout=10, what="the worker drained")
    assert code == [0]
    settled = [entry[:2] for entry in pubsub.log if entry[0] in ("written", "ack", "nack")]
    assert settled == [("nack", "0/1"), ("written", "0/2"), ("ack", "0/2")]
    [failed] = [e for e in pubsub.entries("event") if e["type"] == "part_failed"]
    assert failed["reason"].startswith("result not written: Unreachable: gs://b/out/part-000000.jsonl")


@pytest.mark.parametrize("writers", [2, 0])
def test_a_stop_waits_for_a_write_within_the_drain_budget(writers: int) -> None:
    """SIGTERM while a part's result is being written: the worker waits, then acks it, and exits 143."""
    gate = Gate()
    pubsub = MemoryPubSub([[{"i": 0}]])
    sink = Sink(lambda index, attempt: gate.write(index, b"", 0))
    with running(pubsub, sink, drain_budget_s=10.0, writers=writers) as (worker, code):
        wait_for(lambda: gate.started == [0], timeout=10, what="the write under way")
        finishing = threading.Event()
        give_back = worker.leases.give_back_waiting
        worker.leases.give_back_waiting = lambda: (finishing.set(), give_back())[1]  # type: ignore[method-assign]
        worker.shutdown.request("SIGTERM")
        assert finishing.wait(5), "the worker did not start to stop"
        gate.opened.set()
        wait_for(lambda: code, timeout=10, what="the worker exited")
    assert code == [143]
    assert pubsub.entries("ack") == ["0/1"] and pubsub.entries("nack") == []


def test_a_stop_past_the_budget_nacks_unwritten_parts_and_acks_nothing() -> None:
    """One writer stuck on part 0, part 1 waiting for it: after the budget both are nacked; the stuck
    write ending later acks nothing, and the waiting part is never written."""
    gate = Gate()
    pubsub = MemoryPubSub([[{"i": 0}], [{"i": 1}]])
    sink = Sink(lambda index, attempt: gate.write(index, b"", 0))
    with running(pubsub, sink, drain_budget_s=0.3, writers=1, prefetch=0) as (worker, code):
        wait_for(lambda: gate.started == [0] and worker.writer and worker.writer.pending() == 2, timeout=10,
                 what="part 0 being written, part 1 waiting")
        worker.shutdown.request("SIGTERM")
        wait_for(lambda: code, timeout=10, what="the worker exited")
        assert code == [143]
        assert sorted(pubsub.entries("nack")) == ["0/1", "1/1"]
        gate.opened.set()
        wait_for(lambda: worker.writer and worker.writer.wait_idle(0) and gate.ended, timeout=10,
                 what="the stuck write ended")
    assert pubsub.entries("ack") == []
    assert gate.started == [0], "a part given back at the stop was written after it"
