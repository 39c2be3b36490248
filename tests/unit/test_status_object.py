"""The status object ``batchctl status --json`` prints (and ``Batch.status()`` returns).

Checks: Jobs and pods per batch (issue 12) reach it: ``job_count`` is the number of Jobs launched
and ``pods`` the most pods seen per Job, summed, next to the contract's other fields.
"""

from __future__ import annotations

from batchctl.frontend.batches import describe
from batchctl.frontend.client import BatchStatus
from batchctl.launcher.state import RUNNING, BatchState, JobRecord
from tests.unit.test_state import request


def test_status_object_carries_jobs_and_pods_per_batch() -> None:
    batch = BatchState(request=request(10), state=RUNNING, done={1, 2},
                       jobs=[JobRecord("p-b1-1", 1, 4, 1.0, 0), JobRecord("p-b1-2", 2, 2, 9.0, 5)],
                       pods={"p-b1-1": 5, "p-b1-2": 2})
    shown = BatchStatus.from_dict(describe(batch, workers=2)).as_dict()
    assert shown["job_count"] == 2 and shown["pods"] == 7
    assert shown["jobs"] == ["p-b1-1", "p-b1-2"] and shown["parts_done"] == 2 and shown["workers"] == 2
