"""What a worker publishes per part, on the real emulator.

Checks: finished parts share aggregated ``part_done`` events (300 one-record parts
cost a handful of events, not 300), every part is reported done exactly as handled,
and every part is acked (nothing left in the subscription).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchctl.core.errors import EXIT_OK
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from tests.support.inprocess import InProcessWorker, worker_pubsub
from tests.support.parts import EventLog, publish_batch
from tests.support.pulling import drain


def noop(part: Any) -> None:
    """Handle nothing."""


@pytest.mark.timeout(60)
def test_finished_parts_share_part_done_events(pubsub: PubSub, settings: Settings, tmp_path: Path) -> None:
    """300 one-record parts at concurrency 8: every part done, in at most 30 part_done events."""
    events = EventLog.open(pubsub)
    work = publish_batch(pubsub, "agg", [[{"n": i}] for i in range(300)])
    client = worker_pubsub(settings)
    worker = InProcessWorker.start(client, "agg", noop, tmp_path, concurrency=8)
    try:
        code = worker.wait(timeout=45)
    finally:
        worker.stop()
        client.close()
    assert code == EXIT_OK
    done = events.of("part_done")
    assert sorted(p for e in done for p in e.done_parts) == list(range(300))
    assert len(done) <= 30, f"{len(done)} part_done events for 300 parts"
    assert drain(pubsub, work, empty_pulls=2) == []
