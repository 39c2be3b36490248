"""The worker's result writers (``worker/writer.py``), the pool alone.

Threads for a bucket, none (writes on the slot) for a folder; ``submit`` blocks while the pool
is full (by count and by bytes), a failed write is reported failed and never written, ``stop``
drops the waiting parts. How the real ``Worker`` settles a part around its writers, on the real
emulator: tests/integration/test_worker_writes.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from batchctl.core.errors import Unreachable
from batchctl.core.pubsub import Received
from batchctl.worker.lease import Held
from batchctl.worker.results import PartResult
from batchctl.worker.writer import REMOTE_WRITERS, Job, ResultWriter, writers_for
from tests.support.waiting import wait_for

LOG = structlog.get_logger()


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
    assert writers_for(remote=True, configured=None) == REMOTE_WRITERS == 16
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
