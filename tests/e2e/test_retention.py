"""Retention on the local backend: a finished batch is forgotten once ``BATCHCTL_RETENTION`` has passed.

Checks, with a real emulator and an in-process launcher (``BATCHCTL_RETENTION=30s``): a failed
batch that ended an hour ago loses its dead-letter and work topics and subscriptions, its Job's
pid record and worker logs, and last its state, so ``list`` no longer shows it and ``status``
says it is unknown; a failed batch that ended seconds ago is kept, dead-letter resources and all.
A launcher holds no settled batch beyond a few minutes after it settled: takeover skips them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from batchctl.core import topology
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.core.topology import BatchTopology
from batchctl.frontend.cli import main
from batchctl.launcher.service import SETTLED_HELD_S
from batchctl.launcher.state import FAILED, RUNNING, BatchState, JobRecord
from batchctl.launcher.store import FileStore
from tests.support.launching import running_launcher
from tests.support.pulling import leftovers
from tests.support.waiting import wait_for
from tests.unit.test_state import request


def finished_batch(settings: Settings, batch_id: str, state: str, *, ended_ago: float) -> BatchState:
    """A finished batch as the launcher leaves it: state, Pub/Sub resources, one Job's files."""
    now = time.time()
    job = settings.names.job(batch_id, 1)
    batch = BatchState(request(4, batch_id=batch_id, created=now - ended_ago - 60), state=state,
                       done={0, 1, 2}, dead={3}, created=now - ended_ago - 60, finished=now - ended_ago,
                       jobs=[JobRecord(job, 1, 1, now - ended_ago - 50, 0)])
    assert FileStore(settings.state_dir).create(batch)
    (settings.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "jobs" / f"{job}.json").write_text(json.dumps({"batch_id": batch_id, "pids": [],
                                                                          "finished": True}))
    (settings.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "logs" / f"{job}-0.log").write_text("worker log\n")
    return batch


def test_a_batch_past_its_retention_is_forgotten_and_a_recent_one_kept(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    env = {**env, "BATCHCTL_RETENTION": "30s"}
    settings = Settings.from_env(env)
    pubsub = PubSub(settings)
    try:
        for batch_id in ("old", "new"):
            topology.create_batch(pubsub, batch_id, BatchTopology())
        old = finished_batch(settings, "old", FAILED, ended_ago=3600)
        finished_batch(settings, "new", FAILED, ended_ago=1)
        store = FileStore(settings.state_dir)
        with running_launcher(settings, pubsub):
            wait_for(lambda: store.load("old") is None, timeout=30, what="the old batch's state to go")
        topics, subs = leftovers(pubsub, settings.prefix)
        names = settings.names
        assert not {names.work("old"), names.dead("old")} & (set(topics) | set(subs))
        assert {names.work("new"), names.dead("new")} <= set(topics) & set(subs)
        assert not (settings.state_dir / "jobs" / f"{old.jobs[0].name}.json").exists()
        assert not list((settings.state_dir / "logs").glob(f"{old.jobs[0].name}-*"))
        assert (settings.state_dir / "logs" / f"{names.job('new', 1)}-0.log").exists()
        capsys.readouterr()
        assert main(["list", "--json"], environ=env) == 0
        assert [row["batch_id"] for row in json.loads(capsys.readouterr().out)] == ["new"]
        assert main(["status", "old"], environ=env) == 2
        assert "no batch 'old'" in capsys.readouterr().err
    finally:
        pubsub.close()


def test_a_launcher_holds_no_settled_batch_it_did_not_just_finish(env: dict[str, str], pubsub: PubSub) -> None:
    """Takeover loads only unsettled batches; a batch settled more than SETTLED_HELD_S ago leaves
    memory on the next pass (the store keeps it), one settled seconds ago stays."""
    settings = Settings.from_env(env)
    store = FileStore(settings.state_dir)
    now = time.time()
    running = BatchState(request(4, batch_id="busy", created=now), state=RUNNING, created=now)
    assert store.create(running)
    assert store.create(BatchState(request(4, batch_id="past", created=now - 900), state=FAILED,
                                   created=now - 900, finished=now - 800))
    with running_launcher(settings, pubsub) as run:
        wait_for(lambda: "busy" in run.launcher.batches, timeout=30, what="the takeover")
        assert "past" not in run.launcher.batches
        for batch_id, ended_ago in (("long-ago", SETTLED_HELD_S + 60), ("just-now", 1)):
            run.launcher.batches[batch_id] = BatchState(
                request(4, batch_id=batch_id, created=now - 1000), state=FAILED, created=now - 1000,
                finished=now - ended_ago)
        wait_for(lambda: "long-ago" not in run.launcher.batches, timeout=30, what="the settled batch to leave")
        assert "just-now" in run.launcher.batches and "busy" in run.launcher.batches
    assert {b.batch_id for b in store.load_all()} >= {"busy", "past"}
