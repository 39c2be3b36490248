"""The worker's documented error exits, as a real process on the real emulator.

Checks: a worker whose Pub/Sub goes down (through the fault proxy) rides it out for
``BATCHCTL_UNREACHABLE_S`` and then exits 3, saying so in its log; a worker whose events
topic does not exist exits 2 before pulling anything, naming the topic.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from batchctl.core.errors import EXIT_BAD_INPUT, EXIT_UNREACHABLE
from batchctl.core.pubsub import PubSub
from batchctl.core.topology import create_batch
from tests.support.parts import TEST_TOPOLOGY, EventLog, WorkerProcess, publish_batch
from tests.support.proxy import fault_proxy
from tests.support.waiting import wait_for

HANDLER = "tests.support.handlers:scripted"
TOLERANCE_S = 2.0


@pytest.mark.timeout(60)
def test_worker_exits_3_once_pubsub_stays_down_past_its_tolerance(
    pubsub: PubSub, env: dict[str, str], emulator_host: str, tmp_path: Path
) -> None:
    """Pub/Sub refused at the proxy: pulls fail, the worker keeps trying for 2 s, then exits 3."""
    EventLog.open(pubsub)
    publish_batch(pubsub, "down", [[{"n": 1}]])
    with fault_proxy(emulator_host) as proxy:
        worker = WorkerProcess.start(
            {**env, "PUBSUB_EMULATOR_HOST": proxy.address},
            tmp_path,
            "w",
            batch_id="down",
            handler=HANDLER,
            results_dir=str(tmp_path / "results"),
            empty_pulls="100",  # never drained during the test: only the outage can end it
            pull_timeout_s="0.2",
            unreachable_s=str(TOLERANCE_S),
            drain_budget_s="1",  # nothing is held: the exit need not wait the default 20 s budget
        )
        try:
            wait_for(lambda: worker.log_events("worker_started") or worker.poll() is not None, timeout=30,
                     what="the worker to start pulling")
            assert worker.poll() is None, worker.text()[-2000:]
            proxy.down()
            down_at = time.monotonic()
            code = worker.wait(timeout=45)
            assert code == EXIT_UNREACHABLE, worker.text()[-2000:]
            after = time.monotonic() - down_at
        finally:
            worker.stop()
    assert after >= TOLERANCE_S, f"gave up after {after:.1f}s, before its {TOLERANCE_S}s tolerance"
    assert worker.log_events("pull_unreachable"), worker.text()[-2000:]
    [failed] = worker.log_events("worker_failed")
    assert failed["exit_code"] == EXIT_UNREACHABLE and "cannot reach Pub/Sub" in failed["error"]


@pytest.mark.timeout(60)
def test_worker_exits_2_when_the_events_topic_is_missing(
    pubsub: PubSub, env: dict[str, str], tmp_path: Path
) -> None:
    """No events topic: exit 2 naming it, and the part it could have pulled is still there."""
    create_batch(pubsub, "noevents", TEST_TOPOLOGY)
    assert not pubsub.topic_exists(pubsub.settings.names.events_topic)
    worker = WorkerProcess.start(env, tmp_path, "w", batch_id="noevents", handler=HANDLER)
    try:
        assert worker.wait(timeout=40) == EXIT_BAD_INPUT, worker.text()[-2000:]
    finally:
        worker.stop()
    [failed] = worker.log_events("worker_failed")
    assert failed["exit_code"] == EXIT_BAD_INPUT
    assert pubsub.settings.names.events_topic in failed["error"], failed
    assert worker.log_events("worker_started") == []
