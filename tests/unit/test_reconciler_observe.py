"""What the reconciler observes of a batch's Jobs: the backend's view, plus recorded Jobs not seen yet.

Checks: a Job just launched but not in the watch cache yet (watch lag) counts as running for
``UNSEEN_GRACE_S``; a Job that was seen and then vanished (deleted from outside: ``kubectl delete
job``, a namespace cleanup) does not, so the follow-up is planned at once (before: the batch sat
with no worker until 60 s after that Job's launch; found by the Kubernetes chaos run).
"""

from __future__ import annotations

import time
from pathlib import Path

from batchctl.core.settings import Settings
from batchctl.launcher.metrics import Metrics
from batchctl.launcher.reconciler import Reconciler
from batchctl.launcher.state import RUNNING, BatchState, JobRecord
from batchctl.launcher.store import FileStore
from tests.support.faults import ActiveBackend
from tests.unit.test_state import request


def reconciler(tmp_path: Path, backend: ActiveBackend) -> Reconciler:
    settings = Settings.from_env({"BATCHCTL_STATE_DIR": str(tmp_path), "GOOGLE_CLOUD_PROJECT": "p"})
    return Reconciler(settings, None, FileStore(tmp_path), backend, Metrics())  # type: ignore[arg-type]


def running(job: str) -> BatchState:
    return BatchState(request=request(10), state=RUNNING, jobs=[JobRecord(job, 1, 2, time.time(), 0)])


def test_a_job_not_seen_yet_counts_as_running(tmp_path: Path) -> None:
    observed = reconciler(tmp_path, ActiveBackend()).observe(running("j-1"))
    assert [(j.name, j.finished) for j in observed] == [("j-1", False)]


def test_a_job_seen_then_gone_is_gone(tmp_path: Path) -> None:
    backend = ActiveBackend()
    backend.launched["b1"] = ["j-1"]
    rec, batch = reconciler(tmp_path, backend), running("j-1")
    assert [j.name for j in rec.observe(batch)] == ["j-1"]
    backend.launched.pop("b1")  # deleted from outside
    assert rec.observe(batch) == []
    rec.new_term()  # a new leader has not seen it: the watch may lag, so it waits out the grace
    assert [j.name for j in rec.observe(batch)] == ["j-1"]
