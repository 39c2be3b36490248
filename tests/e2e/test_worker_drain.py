"""Workers as real processes on the real emulator: draining a batch, and configuration errors.

Checks: three workers drain several hundred parts (every part processed, each
worker exits 0 within the 5 s drain target after the batch's last ack); a handler
that cannot be imported exits 2 at once naming it; a missing subscription exits 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from batchctl.core.pubsub import PubSub
from tests.support.parts import EventLog, WorkerProcess, publish_batch

DRAIN_TARGET_S = 5.0


@pytest.mark.timeout(90)
def test_three_workers_drain_a_batch_and_exit_within_the_target(
    pubsub: PubSub, env: dict[str, str], tmp_path: Path
) -> None:
    """300 parts, 3 workers, demo handler: all results written; each exits 0 soon after the last ack."""
    parts = [[{"n": i, "text": f"record {i} of part {p}"} for i in range(5)] for p in range(300)]
    events = EventLog.open(pubsub)
    publish_batch(pubsub, "drain3", parts)
    results = tmp_path / "results"
    workers = [
        WorkerProcess.start(env, tmp_path, f"w{n}", batch_id="drain3", results_dir=str(results)) for n in range(3)
    ]
    try:
        codes = [w.wait(timeout=60) for w in workers]
    finally:
        for w in workers:
            w.stop()
    assert codes == [0, 0, 0], [w.text()[-2000:] for w in workers]
    assert sorted(p.name for p in results.glob("*.json")) == [f"drain3-{i:06d}.json" for i in range(300)]
    assert json.loads((results / "drain3-000042.json").read_text())["records"] == 5
    assert events.done_parts() == set(range(300))
    last_ack = max(t for t in (w.last_ack_at() for w in workers) if t is not None)
    for w in workers:
        assert w.exited_at is not None
        assert w.exited_at - last_ack <= DRAIN_TARGET_S, f"{w.name} exited {w.exited_at - last_ack:.2f}s after"
    assert sorted(e.reason for e in events.of("worker_exited")) == ["drained"] * 3
    assert sum(len(w.log_events("part_done")) for w in workers) >= 300


@pytest.mark.parametrize("handler", ["no.such.module:handle", "tests.support.handlers:no_such_function", "not-a-spec"])
def test_bad_handler_exits_2_naming_it(env: dict[str, str], tmp_path: Path, handler: str) -> None:
    """A handler that cannot be imported is a configuration error: exit 2 at once, one line naming it."""
    started = time.monotonic()
    worker = WorkerProcess.start(env, tmp_path, "bad", batch_id="whatever", handler=handler)
    try:
        code = worker.wait(timeout=20)
    finally:
        worker.stop()
    assert code == 2
    assert handler in worker.text()
    assert len(worker.text().strip().splitlines()) == 1
    assert time.monotonic() - started < 10


def test_missing_subscription_exits_2_naming_it(pubsub: PubSub, env: dict[str, str], tmp_path: Path) -> None:
    """A batch without a work subscription (wrong id, or cancelled) is a configuration error: exit 2."""
    EventLog.open(pubsub)
    worker = WorkerProcess.start(env, tmp_path, "lost", batch_id="nosuchbatch")
    try:
        code = worker.wait(timeout=30)
    finally:
        worker.stop()
    assert code == 2
    assert f"{pubsub.settings.prefix}-nosuchbatch-work does not exist" in worker.text()
