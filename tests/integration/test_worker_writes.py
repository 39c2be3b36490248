"""The real ``Worker`` around its result writers, on the real emulator.

Parts are published on a real work subscription (retry backoff 1 s); a spy of the real
``PubSub`` notes each ack and nack (by part and delivery attempt) before passing it on. The one
stand-in is at the results seam: the real folder ``Sink`` with a hook before each write that
blocks or fails on command. Checks: a part is acked only after its result is written (by a
writer thread or on the slot); a failed write nacks the part (``part_failed``), which is written
and acked when redelivered; a stop waits for a write within the drain budget (exit 143, acked),
and past it nacks the unwritten parts, acks nothing and never writes the waiting part.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from batchctl.core.errors import EXIT_OK, EXIT_TERMINATED, Unreachable
from batchctl.core.pubsub import PubSub, Received
from batchctl.core.settings import Settings
from batchctl.core.sink import Sink
from batchctl.worker.results import wrap
from tests.support.inprocess import InProcessWorker
from tests.support.parts import EventLog, publish_batch
from tests.support.waiting import wait_for

Hook = Callable[[int, int], None]


class Ledger(PubSub):
    """The worker's real Pub/Sub, noting in ``log`` each ack and nack as ``part/attempt``, in call order,
    before passing it on; ``acked`` is set at the first ack."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._lock = threading.Lock()
        self._parts: dict[str, str] = {}
        self.log: list[tuple[str, str]] = []
        self.acked = threading.Event()

    def record(self, kind: str, what: str) -> None:
        with self._lock:
            self.log.append((kind, what))

    def entries(self, kind: str) -> list[str]:
        with self._lock:
            return [what for k, what in self.log if k == kind]

    def settled(self) -> list[tuple[str, str]]:
        with self._lock:
            return [e for e in self.log if e[0] in ("written", "ack", "nack")]

    def pull_answered(self, subscription: str, *, max_messages: int, timeout_s: float,
                      return_immediately: bool = False) -> list[Received]:
        msgs = super().pull_answered(subscription, max_messages=max_messages, timeout_s=timeout_s,
                                     return_immediately=return_immediately)
        with self._lock:
            self._parts.update((m.ack_id, f"{m.attributes['part']}/{m.delivery_attempt}") for m in msgs)
        return msgs

    def _named(self, ack_ids: Iterable[str]) -> list[str]:
        with self._lock:
            return [self._parts.get(a, a) for a in ack_ids]

    def ack(self, subscription: str, ack_ids: Sequence[str], **kwargs: Any) -> None:
        for name in self._named(ack_ids):
            self.record("ack", name)
        self.acked.set()
        super().ack(subscription, ack_ids, **kwargs)

    def modify_ack_deadline(self, subscription: str, ack_ids: Iterable[str], seconds: int, **kwargs: Any) -> None:
        ids = list(ack_ids)
        if seconds == 0:
            for name in self._named(ids):
                self.record("nack", name)
        super().modify_ack_deadline(subscription, ids, seconds, **kwargs)


class HookedSink(Sink):
    """The real folder sink; ``before(index, write)`` runs first (it may block or raise), ``write``
    counting this part's writes from 1; a write that returns is noted in the ledger as ``written``."""

    def __init__(self, folder: Path, ledger: Ledger, before: Hook) -> None:
        super().__init__(str(folder))
        self.ledger, self.before = ledger, before
        self.writes: dict[int, int] = {}

    def write_part(self, index: int, body: Any, records: int) -> None:
        self.writes[index] = write = self.writes.get(index, 0) + 1
        self.before(index, write)
        super().write_part(index, body, records)
        self.ledger.record("written", f"{index}/{write}")


class Gate:
    """A write that blocks until opened (at most 10 s), noting which parts started and ended."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.started: list[int] = []
        self.ended: list[int] = []

    def __call__(self, index: int, write: int) -> None:
        self.started.append(index)
        assert self.opened.wait(10), "gate never opened"
        self.ended.append(index)


def echo(part: Any) -> list[dict[str, Any]]:
    return [{"part": part.index, "record": r} for r in part.records]


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    client = Ledger(settings)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def start(pubsub: PubSub, ledger: Ledger, tmp_path: Path) -> Iterator[Callable[..., tuple[InProcessWorker, Path]]]:
    """``start(batch_id, parts, before, **config)``: publish the parts, start the worker (writers on,
    results in a folder); gives it and the folder, and stops it at the end."""
    started: list[InProcessWorker] = []

    def run(batch_id: str, parts: Sequence[Sequence[Any]], before: Hook,
            **overrides: Any) -> tuple[InProcessWorker, Path]:
        publish_batch(pubsub, batch_id, parts)
        out = tmp_path / "out"
        values = {"empty_pulls": 2, "pull_timeout_s": 0.3, "lease_s": 10, **overrides}
        worker = InProcessWorker.start(ledger, batch_id, wrap(echo, output=True), tmp_path,
                                       sink=HookedSink(out, ledger, before), **values)
        started.append(worker)
        return worker, out

    yield run
    for worker in started:
        worker.stop()
        assert worker.code is not None, "the worker did not exit"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("writers", [2, 0])
def test_a_part_is_acked_only_after_its_result_is_written(
    pubsub: PubSub, ledger: Ledger, start: Callable[..., tuple[InProcessWorker, Path]], writers: int
) -> None:
    """The write waits (up to 1 s) for the part's ack: none may come before the write returns,
    whether a writer thread or the slot (0 writers, a folder's way) writes it."""
    EventLog.open(pubsub)
    worker, out = start(f"order{writers}", [[{"i": 0}, {"i": 1}]], lambda index, write: ledger.acked.wait(1.0),
                        writers=writers)
    assert worker.wait(timeout=15) == EXIT_OK
    assert ledger.settled() == [("written", "0/1"), ("ack", "0/1")]
    assert (out / "part-000000.jsonl").read_bytes() == b'{"part":0,"record":{"i":0}}\n{"part":0,"record":{"i":1}}\n'


@pytest.mark.timeout(30)
def test_a_failed_write_nacks_the_part_which_is_written_and_acked_when_redelivered(
    pubsub: PubSub, ledger: Ledger, start: Callable[..., tuple[InProcessWorker, Path]]
) -> None:
    """The first write fails: part_failed and a nack, no ack; the redelivered part is written, then acked."""
    events = EventLog.open(pubsub)

    def fail_first(index: int, write: int) -> None:
        if write == 1:
            raise Unreachable("gs://b/out/part-000000.jsonl: Cloud Storage unreachable (503)")

    worker, out = start("refail", [[{"i": 0}]], fail_first, writers=2)
    assert worker.wait(timeout=20) == EXIT_OK
    assert ledger.settled() == [("nack", "0/1"), ("written", "0/2"), ("ack", "0/2")]
    [failed] = events.of("part_failed")
    assert failed.reason.startswith("result not written: Unreachable: gs://b/out/part-000000.jsonl")
    assert (out / "part-000000.jsonl").read_bytes() == b'{"part":0,"record":{"i":0}}\n'


@pytest.mark.timeout(30)
@pytest.mark.parametrize("writers", [2, 0])
def test_a_stop_waits_for_a_write_within_the_drain_budget(
    pubsub: PubSub, ledger: Ledger, start: Callable[..., tuple[InProcessWorker, Path]], writers: int,
    mocker: MockerFixture,
) -> None:
    """SIGTERM while a part's result is being written: the worker waits, then acks it, and exits 143."""
    EventLog.open(pubsub)
    gate = Gate()
    worker, _ = start(f"stopin{writers}", [[{"i": 0}]], gate, drain_budget_s=10.0, writers=writers)
    wait_for(lambda: gate.started == [0], timeout=10, what="the write under way")
    stopping = mocker.spy(worker.worker.leases, "give_back_waiting")
    worker.worker.shutdown.request("SIGTERM")
    wait_for(lambda: stopping.call_count, timeout=5, what="the worker to start to stop")
    gate.opened.set()
    assert worker.wait(timeout=10) == EXIT_TERMINATED
    assert ledger.entries("ack") == ["0/1"] and ledger.entries("nack") == []


@pytest.mark.timeout(30)
def test_a_stop_past_the_budget_nacks_unwritten_parts_and_acks_nothing(
    pubsub: PubSub, ledger: Ledger, start: Callable[..., tuple[InProcessWorker, Path]]
) -> None:
    """One writer stuck on part 0, part 1 waiting for it: after the budget both are nacked; the stuck
    write ending later acks nothing, and the waiting part is never written."""
    EventLog.open(pubsub)
    gate = Gate()
    running, _ = start("stoppast", [[{"i": 0}], [{"i": 1}]], gate, drain_budget_s=0.3, writers=1, prefetch=0)
    worker = running.worker
    wait_for(lambda: gate.started == [0] and worker.writer and worker.writer.pending() == 2, timeout=10,
             what="part 0 being written, part 1 waiting")
    worker.shutdown.request("SIGTERM")
    assert running.wait(timeout=10) == EXIT_TERMINATED
    assert sorted(ledger.entries("nack")) == ["0/1", "1/1"]
    gate.opened.set()
    wait_for(lambda: worker.writer and worker.writer.wait_idle(0) and gate.ended, timeout=10,
             what="the stuck write ended")
    assert ledger.entries("ack") == []
    assert gate.started == [0], "a part given back at the stop was written after it"
