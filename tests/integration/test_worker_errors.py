"""The worker's own error paths, on the real emulator, with faults at its seams.

Checks: a network that blackholes traffic is not an empty queue (no "drained", exit 3
after the unreachable tolerance); a part whose nack failed is awaited until its lease
lapses and it comes back; a handler that overruns the part timeout has its part nacked
and the worker exits 1; a malformed message ("²" as part index) is dead-lettered while
every slot keeps working; transient pull errors are retried; an exit on a fatal pull
error still lets the running part finish; an ack that hangs does not hold up lease
renewal (no part handled twice).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from batchctl.core.errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from tests.support.inprocess import InProcessWorker, run_to_exit, worker_pubsub
from tests.support.parts import EventLog, encode_part, publish_batch
from tests.support.proxy import FaultProxy
from tests.support.pulling import drain
from tests.support.waiting import wait_for


def noop(part: Any) -> None:
    """Handle nothing."""


@pytest.fixture
def proxy(emulator_host: str) -> Iterator[FaultProxy]:
    fault = FaultProxy(emulator_host)
    fault.start()
    try:
        yield fault
    finally:
        fault.restore()
        fault.stop()


def wrap(client: Any, name: str, fault: Any) -> list[int]:
    """Replace ``client.name`` by ``fault(real, calls, *args, **kwargs)``; returns the call counter."""
    real = getattr(client, name)
    calls = [0]

    def call(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return fault(real, calls[0], *args, **kwargs)

    setattr(client, name, call)
    return calls


@pytest.mark.timeout(60)
def test_a_stalled_network_is_not_an_empty_queue(
    pubsub: PubSub, settings: Settings, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Pulls that time out never count as empty: the worker exits 3 after the tolerance, not 0 "drained"."""
    events = EventLog.open(pubsub)
    work = publish_batch(pubsub, "stall", [])
    client = worker_pubsub(settings, proxy.address)
    worker = InProcessWorker.start(
        client, "stall", noop, tmp_path, empty_pulls=5, pull_timeout_s=1.0, unreachable_s=4.0
    )
    try:
        wait_for(lambda: events.of("worker_started"), timeout=20, what="the worker to start")
        proxy.blackhole()
        for i in range(3):
            pubsub.publish(work, *encode_part("stall", i, 3, [{"n": i}])).result(timeout=10)
        code = worker.wait(timeout=30)
    finally:
        proxy.restore()
        worker.stop()
        client.close()
    assert code == EXIT_UNREACHABLE
    assert "drained" not in [e.reason for e in events.of("worker_exited")]
    assert len(drain(pubsub, work, empty_pulls=2)) == 3


@pytest.mark.timeout(60)
def test_a_part_whose_nack_failed_is_awaited_until_it_returns(
    pubsub: PubSub, settings: Settings, tmp_path: Path
) -> None:
    """The first try fails and its nack RPC fails too: the part stays leased (10 s), the worker waits for it."""
    events = EventLog.open(pubsub)
    publish_batch(pubsub, "nackfail", [[{"n": 0}]])
    tries: list[int] = []

    def fail_first(part: Any) -> None:
        tries.append(part.attempt)
        if len(tries) == 1:
            raise RuntimeError("first try fails")

    def nack_fails_once(real: Any, n: int, *args: Any, **kwargs: Any) -> Any:
        if n == 1 and kwargs["request"]["ack_deadline_seconds"] == 0:
            raise gexc.ServiceUnavailable("injected: nack lost")
        return real(*args, **kwargs)

    client = worker_pubsub(settings)
    wrap(client.subscriber, "modify_ack_deadline", nack_fails_once)
    code = run_to_exit(client, "nackfail", fail_first, tmp_path, lease_s=10, timeout=45)
    assert code == EXIT_OK
    assert len(tries) == 2
    assert events.done_parts() == {0}


@pytest.mark.timeout(60)
def test_a_handler_past_the_part_timeout_is_nacked_and_the_worker_exits_1(
    pubsub: PubSub, settings: Settings, tmp_path: Path
) -> None:
    """Part 0 blocks for good: after 1 s it is reported failed and nacked; the others finish; exit 1."""
    events = EventLog.open(pubsub)
    work = publish_batch(pubsub, "hang", [[{"n": i}] for i in range(4)])
    release = threading.Event()

    def hang_on_part_0(part: Any) -> None:
        if part.index == 0:
            release.wait(120)

    client = worker_pubsub(settings)
    worker = InProcessWorker.start(client, "hang", hang_on_part_0, tmp_path, concurrency=2, part_timeout_s=1.0)
    try:
        code = worker.wait(timeout=30)
    finally:
        release.set()
        worker.stop()
        client.close()
    assert code == EXIT_FAILED
    failed = events.of("part_failed")
    assert [e.part for e in failed] == [0]
    assert "timed out after 1 s" in failed[0].reason
    assert "part_timeout" in [e.reason for e in events.of("worker_exited")]
    assert events.done_parts() <= {1, 2, 3}
    assert [m.attributes["part"] for m in drain(pubsub, work, empty_pulls=3, ack=False)].count("0") == 1


@pytest.mark.timeout(60)
def test_a_malformed_part_index_is_dead_lettered_and_no_slot_dies(
    pubsub: PubSub, settings: Settings, tmp_path: Path
) -> None:
    """A message with part "²" goes to the dead-letter topic after its attempts; the one slot serves on."""
    events = EventLog.open(pubsub)
    work = publish_batch(pubsub, "super", [[{"n": i}] for i in range(3)])
    data, attributes = encode_part("super", 1, 3, [{"n": 1}])
    pubsub.publish(work, data, {**attributes, "part": "²"}).result(timeout=10)
    client = worker_pubsub(settings)
    code = run_to_exit(client, "super", noop, tmp_path, concurrency=1, empty_pulls=4, timeout=45)
    assert code == EXIT_OK
    assert events.done_parts() == {0, 1, 2}
    dead_letters = pubsub.settings.names.dead("super")

    def dead_lettered() -> list[Any]:
        # The emulator moves a message to the dead-letter topic when a pull of the work subscription
        # comes after its retry backoff: keep pulling it (nothing else is left there) while waiting.
        assert drain(pubsub, work, empty_pulls=1) == []
        return drain(pubsub, dead_letters, empty_pulls=1)

    dead = wait_for(dead_lettered, timeout=30, interval=0.5, what="the dead letter")
    assert [m.attributes["part"] for m in dead] == ["²"]


@pytest.mark.timeout(60)
def test_transient_pull_errors_are_retried(pubsub: PubSub, settings: Settings, tmp_path: Path) -> None:
    """INTERNAL, UNKNOWN, ABORTED, RESOURCE_EXHAUSTED on pull: retried with backoff, the batch drains."""
    events = EventLog.open(pubsub)
    publish_batch(pubsub, "flaky", [[{"n": i}] for i in range(3)])
    codes = [gexc.InternalServerError, gexc.Unknown, gexc.Aborted, gexc.ResourceExhausted]

    def flaky(real: Any, n: int, *args: Any, **kwargs: Any) -> Any:
        if n <= len(codes):
            raise codes[n - 1]("injected")
        return real(*args, **kwargs)

    client = worker_pubsub(settings)
    calls = wrap(client.subscriber, "pull", flaky)
    code = run_to_exit(client, "flaky", noop, tmp_path, timeout=40)
    assert code == EXIT_OK
    assert calls[0] > len(codes)
    assert events.done_parts() == {0, 1, 2}


@pytest.mark.timeout(60)
def test_a_fatal_pull_error_lets_the_running_part_finish(pubsub: PubSub, settings: Settings, tmp_path: Path) -> None:
    """Pulls turn PERMISSION_DENIED while part 0 runs: the worker exits non-zero, but part 0 is done and acked."""
    events = EventLog.open(pubsub)
    work = publish_batch(pubsub, "fatal", [[{"n": 0}]])
    running = threading.Event()

    def slow(part: Any) -> None:
        running.set()
        time.sleep(1.5)

    def denied_once_running(real: Any, n: int, *args: Any, **kwargs: Any) -> Any:
        if running.is_set():
            raise gexc.PermissionDenied("injected")
        return real(*args, **kwargs)

    client = worker_pubsub(settings)
    wrap(client.subscriber, "pull", denied_once_running)
    code = run_to_exit(client, "fatal", slow, tmp_path, concurrency=2, timeout=30)
    assert code not in (None, EXIT_OK)
    assert events.done_parts() == {0}
    assert drain(pubsub, work, empty_pulls=2) == []


@pytest.mark.timeout(60)
def test_a_hanging_ack_does_not_hold_up_lease_renewal(pubsub: PubSub, settings: Settings, tmp_path: Path) -> None:
    """Part 1's ack hangs as long as it is allowed to; part 0 runs 7 s on a 3 s lease and is never redelivered."""
    EventLog.open(pubsub)
    publish_batch(pubsub, "slowack", [[{"n": 0}], [{"n": 1}]])
    started: list[int] = []

    def long_part_0(part: Any) -> None:
        started.append(part.index)
        if part.index == 0:
            time.sleep(7)

    def hang(real: Any, n: int, *args: Any, **kwargs: Any) -> Any:
        if n == 1:
            time.sleep(kwargs.get("timeout") or 60)
            raise gexc.DeadlineExceeded("injected: ack hung")
        return real(*args, **kwargs)

    client = worker_pubsub(settings)
    wrap(client.subscriber, "acknowledge", hang)
    worker = InProcessWorker.start(client, "slowack", long_part_0, tmp_path, concurrency=2, lease_s=3)
    try:
        wait_for(lambda: 0 in started, timeout=20, what="part 0 to start")
        code = worker.wait(timeout=40)
    finally:
        worker.stop()
        client.close()
    assert code == EXIT_OK
    assert started.count(0) == 1, started
