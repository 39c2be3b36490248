"""Workers as real processes on the real emulator: a poison part, a part far longer than its lease.

Checks: a part whose handler always raises is reported failed on every delivery and
ends on the dead-letter subscription after the max attempts, while the rest of the
batch completes and the worker drains; a part running four times its lease (and
past the subscription's ack deadline) is handled once, never redelivered meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchctl.core.pubsub import PubSub
from tests.support.handlers import markers
from tests.support.parts import TEST_TOPOLOGY, EventLog, WorkerProcess, publish_batch
from tests.support.pulling import drain

HANDLER = "tests.support.handlers:scripted"


@pytest.mark.timeout(90)
def test_poison_part_is_dead_lettered_while_the_rest_completes(
    pubsub: PubSub, env: dict[str, str], tmp_path: Path
) -> None:
    """Part 7 always raises: 5 failed deliveries, then the dead-letter subscription; the other 19 are done."""
    results = tmp_path / "results"
    events = EventLog.open(pubsub)
    parts: list[list[dict[str, object]]] = [[{"n": i}] for i in range(20)]
    parts[7] = [{"fail": True}]
    publish_batch(pubsub, "poison", parts)
    worker = WorkerProcess.start(
        env, tmp_path, "w", batch_id="poison", handler=HANDLER, results_dir=str(results), concurrency="2"
    )
    try:
        assert worker.wait(timeout=60) == 0, worker.text()[-2000:]
    finally:
        worker.stop()
    assert events.done_parts() == set(range(20)) - {7}
    failures = events.of("part_failed")
    assert {e.part for e in failures} == {7}
    assert sorted(e.attempt for e in failures) == list(range(1, TEST_TOPOLOGY.max_delivery_attempts + 1))
    assert "RuntimeError: poison record in part 7" in failures[0].reason
    dead = drain(pubsub, pubsub.settings.names.dead("poison"), empty_pulls=2)
    assert [m.attributes["part"] for m in dead] == ["7"]
    assert markers(results, "started").count(7) == TEST_TOPOLOGY.max_delivery_attempts


@pytest.mark.timeout(60)
def test_part_longer_than_its_lease_is_handled_once(pubsub: PubSub, env: dict[str, str], tmp_path: Path) -> None:
    """A 12 s part, 3 s lease renewed each second, 10 s subscription deadline: one delivery, one handling."""
    results = tmp_path / "results"
    events = EventLog.open(pubsub)
    publish_batch(pubsub, "long", [[{"sleep": 12}]])
    worker = WorkerProcess.start(
        env,
        tmp_path,
        "w",
        batch_id="long",
        handler=HANDLER,
        results_dir=str(results),
        concurrency="2",  # a free slot, so a redelivered copy would be pulled and seen
        lease_s="3",
    )
    try:
        assert worker.wait(timeout=40) == 0, worker.text()[-2000:]
    finally:
        worker.stop()
    assert markers(results, "started") == [0]
    assert [p for e in events.of("part_done") for p in e.done_parts] == [0]
    assert worker.log_events("leases_renewed")
