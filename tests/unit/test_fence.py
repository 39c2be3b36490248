"""Fencing: a replica that does not hold the Lease at the moment of a write makes none.

Checks: with leadership gone between plan and apply (a freeze mid-pass), the reconciler's Launch
creates no Job and saves nothing, and the batch in memory is as before; the store refuses
create/save/delete and the backend launch/delete_jobs/forget with NotLeader; reads still work.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from batchctl.core.messages import BatchRequest
from batchctl.core.settings import Settings
from batchctl.launcher.fence import FencedBackend, FencedStore, NotLeader
from batchctl.launcher.metrics import Metrics
from batchctl.launcher.planner import Launch
from batchctl.launcher.reconciler import Reconciler
from batchctl.launcher.state import BatchState
from batchctl.launcher.store import FileStore
from tests.support.faults import ActiveBackend, SwitchElector


def pending(batch_id: str = "b") -> BatchState:
    request = BatchRequest(batch_id=batch_id, parts=4, records=4, bytes=4, handler="m:f")
    return BatchState(request, created=request.created)


def test_a_launch_after_leadership_lapsed_creates_no_job(tmp_path: Path) -> None:
    """The plan said Launch, then the lease lapsed (frozen mid-pass): no Job, no save, memory unchanged."""
    settings = Settings.from_env({"BATCHCTL_STATE_DIR": str(tmp_path), "GOOGLE_CLOUD_PROJECT": "p"})
    elector = SwitchElector(leader=True)
    store, backend = FileStore(tmp_path), ActiveBackend()
    batch = pending()
    assert store.create(batch)
    reconciler = Reconciler(settings, None, FencedStore(store, elector), FencedBackend(backend, elector),  # type: ignore[arg-type]
                            Metrics())
    elector.is_leader = False
    with pytest.raises(NotLeader):
        reconciler.apply(batch, Launch("j-1", 1, 1))
    assert backend.launched == {}
    assert batch.jobs == [] and batch.state == "pending"
    stored = store.load("b")
    assert stored is not None and stored.jobs == []


def test_every_write_needs_the_lease_reads_do_not(tmp_path: Path) -> None:
    """Writes raise NotLeader without the Lease; loads and observe still answer."""
    elector = SwitchElector(leader=False)
    store, backend = FencedStore(FileStore(tmp_path), elector), FencedBackend(ActiveBackend(), elector)
    for write in (lambda: store.create(pending()), lambda: store.save(pending()), lambda: store.delete("b"),
                  lambda: backend.launch(pending(), Launch("j", 1, 1)), lambda: backend.delete_jobs("b"),
                  lambda: backend.forget("b", ["j"])):
        with pytest.raises(NotLeader):
            write()
    assert store.load_all() == [] and backend.observe("b") == []
    assert isinstance(backend.changed, threading.Event)
