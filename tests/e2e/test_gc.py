"""``batchctl gc [--dry-run]`` on the local backend, against the real Pub/Sub emulator.

Checks: ``--dry-run`` lists the orphans (an old batch's topics and subscriptions without state,
a Job record whose batch has no state) and deletes nothing; ``gc`` then deletes exactly those,
stops the orphan Job's live worker process and removes its record and log; a known batch's
resources, a batch whose topics are minutes old (its submit may still be publishing) and the
shared topics are left alone; a second ``gc`` finds nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchctl.core import topology
from batchctl.core.pubsub import PubSub, SubscriptionSpec
from batchctl.core.settings import Settings
from batchctl.core.topology import BatchTopology
from batchctl.frontend.cli import main
from batchctl.launcher.state import SUCCEEDED, BatchState
from batchctl.launcher.store import FileStore
from tests.support.pulling import leftovers
from tests.unit.test_state import request


def old_batch_resources(pubsub: PubSub, batch_id: str) -> None:
    """A batch's topics and subscriptions as a submit made them two hours ago."""
    names = pubsub.settings.names
    labels = names.pubsub_labels(batch_id, created=time.time() - 7200)
    for name in (names.work(batch_id), names.dead(batch_id)):
        pubsub.create_topic(name, exist_ok=False, labels=labels)
        pubsub.create_subscription(name, name, SubscriptionSpec(labels=labels), exist_ok=False)


def test_gc_lists_then_deletes_orphans_and_nothing_else(
    settings: Settings, pubsub: PubSub, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    names = settings.names
    topology.ensure_shared(pubsub)
    old_batch_resources(pubsub, "orphan")
    old_batch_resources(pubsub, "known")
    topology.create_batch(pubsub, "submitting", BatchTopology())
    assert FileStore(settings.state_dir).create(BatchState(request(2, batch_id="known"), state=SUCCEEDED))
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        job = names.job("lost", 1)
        (settings.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
        (settings.state_dir / "jobs" / f"{job}.json").write_text(
            json.dumps({"batch_id": "lost", "pids": [worker.pid], "finished": False}))
        (settings.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        (settings.state_dir / "logs" / f"{job}-0.log").write_text("log\n")
        expected = [f"topic {names.dead('orphan')}", f"topic {names.work('orphan')}",
                    f"subscription {names.dead('orphan')}", f"subscription {names.work('orphan')}",
                    f"job {job} (batch lost)"]
        before = leftovers(pubsub, settings.prefix)

        capsys.readouterr()
        assert main(["gc", "--dry-run"], environ=env) == 0
        assert capsys.readouterr().out.splitlines() == [f"would delete {line}" for line in expected]
        assert leftovers(pubsub, settings.prefix) == before and worker.poll() is None

        assert main(["gc"], environ=env) == 0
        assert capsys.readouterr().out.splitlines() == [f"deleted {line}" for line in expected]
        assert worker.wait(timeout=10) == -15  # SIGTERM
        assert not list((settings.state_dir / "jobs").iterdir()) and not list((settings.state_dir / "logs").iterdir())
        topics, subs = leftovers(pubsub, settings.prefix)
        kept = sorted(name for b in ("known", "submitting") for name in (names.work(b), names.dead(b)))
        assert sorted(topics) == sorted(subs) == kept
        assert pubsub.topic_exists(names.requests_topic) and pubsub.topic_exists(names.events_topic)

        assert main(["gc"], environ=env) == 0
        assert capsys.readouterr().out.splitlines() == ["no orphans"]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
