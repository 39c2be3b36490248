"""``retry`` stores its effect before it acks the dead-letter copies (issue 18, finding 7).

Checks, on the real emulator: when the save of a retried batch fails, its dead-lettered parts are
still on the dead-letter subscription (given back, not acked) and the batch in memory still
counts them dead, so the next retry moves them again; when the save succeeds they are gone from it.
"""

from __future__ import annotations

import pytest

from batchctl.core import topology
from batchctl.core.errors import Unreachable
from batchctl.core.messages import BatchRequest, Control
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher.control import Controller
from batchctl.launcher.metrics import Metrics
from batchctl.launcher.state import FAILED, RUNNING, BatchState
from batchctl.launcher.store import FileStore
from tests.support.faults import ActiveBackend, FlakyStore
from tests.support.pulling import drain


def failed_batch(settings: Settings, pubsub: PubSub) -> tuple[FlakyStore, Controller, BatchState]:
    """Batch 'r' failed with parts 0 and 1 dead, their copies on its dead-letter subscription."""
    topology.create_batch(pubsub, "r", topology.BatchTopology(ack_deadline_s=10, max_delivery_attempts=5))
    for part in (0, 1):
        pubsub.publish(settings.names.dead("r"), b"[]", {"part": str(part)}).result(timeout=30)
    request = BatchRequest(batch_id="r", parts=3, records=3, bytes=3, handler="m:f")
    batch = BatchState(request, state=FAILED, created=request.created, done={2}, dead={0, 1})
    store = FlakyStore(FileStore(settings.state_dir))
    assert store.create(batch)
    controller = Controller(pubsub, store, ActiveBackend(), {"r": batch}, profiles={}, metrics=Metrics())
    return store, controller, batch


def test_a_retry_whose_save_fails_leaves_the_dead_copies(settings: Settings, pubsub: PubSub) -> None:
    """Save fails: memory still counts 0 and 1 dead, and both copies are still dead-lettered."""
    store, controller, batch = failed_batch(settings, pubsub)
    store.fail_save()
    with pytest.raises(Unreachable):
        controller.handle(Control("retry", "r"))
    assert batch.state == FAILED and batch.dead == {0, 1}
    left = drain(pubsub, settings.names.dead("r"), empty_pulls=2)
    assert sorted(int(m.attributes["part"]) for m in left) == [0, 1]


def test_a_stored_retry_acks_the_dead_copies(settings: Settings, pubsub: PubSub) -> None:
    """Save succeeds: the batch runs again with nothing dead, and the dead-letter subscription is empty."""
    _, controller, batch = failed_batch(settings, pubsub)
    controller.handle(Control("retry", "r"))
    assert batch.state == RUNNING and batch.dead == set()
    assert drain(pubsub, settings.names.dead("r"), empty_pulls=2) == []
