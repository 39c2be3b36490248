"""Workers as real processes on the real emulator: kill -9 and SIGTERM.

Checks: a worker killed with SIGKILL while holding parts loses none (they come back
after its lease and another worker does them); SIGTERM mid-part either lets the
part finish and be acked, or, past the drain budget, nacks it so another worker
redoes it; either way the worker exits 143 (terminated, not drained) within its budget. A second signal ends
the worker at once.
"""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

import pytest

from batchctl.core.errors import EXIT_TERMINATED
from batchctl.core.pubsub import PubSub
from tests.support.handlers import markers
from tests.support.parts import EventLog, WorkerProcess, publish_batch
from tests.support.waiting import wait_for

HANDLER = "tests.support.handlers:scripted"
EXIT_SLACK_S = 3.0
"""Beyond the drain budget: nack, publish worker_exited, close clients (the grace period allows 10)."""


def started_by(folder: Path, pid: int) -> set[int]:
    return {int(p.name.split("-")[1]) for p in folder.glob(f"started-*-{pid}-*")}


def done_by(folder: Path, pid: int) -> set[int]:
    return {int(p.name.split("-")[1]) for p in folder.glob(f"done-*-{pid}-*")}


def held_through_a_renewal(folder: Path, worker: WorkerProcess) -> set[int]:
    """Parts ``worker`` started before its latest ``leases_renewed`` event and has not finished."""
    renewals = worker.log_events("leases_renewed")
    if not renewals:
        return set()
    renewed_at = datetime.fromisoformat(renewals[-1]["timestamp"].replace("Z", "+00:00")).timestamp()
    started = {int(p.name.split("-")[1]) for p in folder.glob(f"started-*-{worker.pid}-*")
               if p.stat().st_mtime < renewed_at}
    return started - done_by(folder, worker.pid)


@pytest.mark.timeout(90)
def test_kill_9_while_holding_parts_loses_nothing(pubsub: PubSub, env: dict[str, str], tmp_path: Path) -> None:
    """SIGKILL a worker mid-part: its held parts come back after its 3 s lease and the other worker does them.

    The victim is killed once it has logged a lease renewal covering a part it holds (before that, the
    subscription's 10 s deadline applies). The survivor's 6 empty pulls outlast the lease.
    """
    results = tmp_path / "results"
    events = EventLog.open(pubsub)
    publish_batch(pubsub, "kill9", [[{"sleep": 1.6}] for _ in range(8)])
    common = {"batch_id": "kill9", "handler": HANDLER, "results_dir": str(results), "lease_s": "3"}
    victim = WorkerProcess.start(env, tmp_path, "victim", concurrency="2", **common)
    survivor = WorkerProcess.start(env, tmp_path, "survivor", concurrency="2", empty_pulls="6", **common)
    try:
        held = wait_for(lambda: held_through_a_renewal(results, victim), timeout=30,
                        what="the victim to renew the lease of a part it holds")
        victim.signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert survivor.wait(timeout=60) == 0, survivor.text()[-2000:]
    finally:
        victim.stop()
        survivor.stop()
    assert set(markers(results, "done")) == set(range(8))
    assert held <= done_by(results, survivor.pid)
    assert events.done_parts() == set(range(8))


@pytest.mark.timeout(60)
def test_sigterm_mid_part_finishes_and_acks_within_budget(pubsub: PubSub, env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM during a 2 s part with a 10 s budget: the part finishes, is acked once, exit 143 (terminated)."""
    results = tmp_path / "results"
    events = EventLog.open(pubsub)
    publish_batch(pubsub, "term1", [[{"sleep": 2}]])
    worker = WorkerProcess.start(
        env, tmp_path, "w", batch_id="term1", handler=HANDLER, results_dir=str(results), drain_budget_s="10"
    )
    try:
        wait_for(lambda: markers(results, "started"), timeout=30, what="the part to start")
        sent = worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == EXIT_TERMINATED, worker.text()[-2000:]
    finally:
        worker.stop()
    assert worker.exited_at is not None and worker.exited_at - sent <= 2 + EXIT_SLACK_S
    assert markers(results, "done") == [0]
    assert [p for e in events.of("part_done") for p in e.done_parts] == [0]
    assert [e.reason for e in events.of("worker_exited")] == ["terminated"]
    assert pubsub.pull(pubsub.settings.names.work("term1"), max_messages=10, timeout_s=2) == []


@pytest.mark.timeout(60)
def test_sigterm_past_budget_nacks_and_another_worker_redoes_it(
    pubsub: PubSub, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM during a 30 s part with a 1 s budget: nacked, exit 143 within the budget, redone elsewhere."""
    results = tmp_path / "results"
    events = EventLog.open(pubsub)
    publish_batch(pubsub, "term2", [[{"sleep": 30}], [{"sleep": 0}]])
    common = {"batch_id": "term2", "handler": HANDLER, "results_dir": str(results)}
    first = WorkerProcess.start(env, tmp_path, "first", drain_budget_s="1", **common)
    second: WorkerProcess | None = None
    try:
        wait_for(lambda: 0 in started_by(results, first.pid), timeout=30, what="the long part to start")
        sent = first.signal(signal.SIGTERM)
        assert first.wait(timeout=15) == EXIT_TERMINATED, first.text()[-2000:]
        assert first.exited_at is not None and first.exited_at - sent <= 1 + EXIT_SLACK_S
        assert first.log_events("worker_exited")[-1]["parts_given_back"] == 1
        second = WorkerProcess.start(env, tmp_path, "second", drain_budget_s="1", **common)
        wait_for(lambda: 0 in started_by(results, second.pid), timeout=20, what="the part to be redelivered")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert [e.reason for e in events.of("worker_exited") if e.worker == "first"] == ["terminated"]
    assert 0 not in done_by(results, first.pid)


@pytest.mark.timeout(60)
def test_second_signal_exits_at_once(pubsub: PubSub, env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM then SIGINT during a 30 s part with a 20 s budget: the worker ends at once, exit 1."""
    results = tmp_path / "results"
    EventLog.open(pubsub)
    publish_batch(pubsub, "twice", [[{"sleep": 30}]])
    worker = WorkerProcess.start(env, tmp_path, "w", batch_id="twice", handler=HANDLER, results_dir=str(results))
    try:
        wait_for(lambda: markers(results, "started"), timeout=30, what="the part to start")
        worker.signal(signal.SIGTERM)
        wait_for(lambda: worker.log_events("stop_requested"), timeout=10, what="the first signal to be seen")
        sent = worker.signal(signal.SIGINT)
        assert worker.wait(timeout=10) == 1
    finally:
        worker.stop()
    assert worker.exited_at is not None and worker.exited_at - sent < 2
    assert "second signal (SIGINT): exiting now" in worker.text()
