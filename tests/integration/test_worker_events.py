"""What a worker publishes per part, on the real emulator.

Checks: finished parts share aggregated ``part_done`` events (300 one-record parts
cost a handful of events, not 300), every part is reported done exactly as handled,
and every part is acked (nothing left in the subscription); a worker holds its prefetch
window of parts, and a stop gives the waiting ones back at once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from batchctl.core.errors import EXIT_OK, EXIT_TERMINATED
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from tests.support.inprocess import InProcessWorker, run_to_exit, worker_pubsub
from tests.support.parts import EventLog, publish_batch
from tests.support.pulling import drain
from tests.support.waiting import wait_for


def noop(part: Any) -> None:
    """Handle nothing."""


@pytest.mark.timeout(60)
def test_finished_parts_share_part_done_events(pubsub: PubSub, settings: Settings, tmp_path: Path) -> None:
    """300 one-record parts at concurrency 8: every part done, in at most 30 part_done events."""
    events = EventLog.open(pubsub)
    work = publish_batch(pubsub, "agg", [[{"n": i}] for i in range(300)])
    client = worker_pubsub(settings)
    code = run_to_exit(client, "agg", noop, tmp_path, concurrency=8, timeout=45)
    assert code == EXIT_OK
    done = events.of("part_done")
    assert sorted(p for e in done for p in e.done_parts) == list(range(300))
    assert len(done) <= 30, f"{len(done)} part_done events for 300 parts"
    assert drain(pubsub, work, empty_pulls=2) == []


@pytest.mark.timeout(60)
def test_prefetched_parts_are_held_then_given_back_at_once_on_stop(
    pubsub: PubSub, settings: Settings, tmp_path: Path
) -> None:
    """One slot, prefetch 5: six parts held while part 0 runs; a stop returns the five waiting ones at
    once (another consumer pulls them while part 0 still runs), and part 0 finishes and is acked."""
    events = EventLog.open(pubsub)
    work = publish_batch(pubsub, "pre", [[{"n": i}] for i in range(6)])
    release = threading.Event()

    def block_part_0(part: Any) -> None:
        if part.index == 0:
            release.wait(30)

    client = worker_pubsub(settings)
    worker = InProcessWorker.start(client, "pre", block_part_0, tmp_path, concurrency=1, prefetch=5, lease_s=10)
    try:
        wait_for(lambda: worker.worker.leases.count() == 6, timeout=20, what="six parts held")
        worker.worker.shutdown.request("test")
        back = wait_for(lambda: drain(pubsub, work, empty_pulls=1), timeout=10, what="the waiting parts back")
        assert not release.is_set()
        release.set()
        code = worker.wait(timeout=20)
    finally:
        release.set()
        worker.stop()
        client.close()
    assert sorted(int(m.attributes["part"]) for m in back) == [1, 2, 3, 4, 5]
    assert code == EXIT_TERMINATED
    assert events.done_parts() == {0}
