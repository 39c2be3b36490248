"""Kueue mode (``BATCHCTL_KUEUE_QUEUE``): a batch whose Job Kueue holds suspended is waiting, not idle.

Jobs are created suspended with the ``kueue.x-k8s.io/queue-name`` label (``jobspec``); Kueue admits a
Job by setting ``suspend: false`` and preempts it by setting it back (kueue.sigs.k8s.io/docs/tasks/run/
jobs/). A suspended Job is unfinished, so the planner neither follows it up nor counts it idle nor fails
the batch. This module only says what the batch shows meanwhile: ``queued``, "waiting for Kueue
admission" (pure; the reconciler stores it).
"""

from __future__ import annotations

from batchctl.launcher.planner import ObservedJob
from batchctl.launcher.state import PENDING, QUEUED, RUNNING, BatchState

WAITING_REASON = "waiting for Kueue admission"


def admission_change(batch: BatchState, jobs: list[ObservedJob]) -> tuple[str, str] | None:
    """The (state, reason) the batch moves to as Kueue holds or admits its Job, or None for no change."""
    waiting = any(j.suspended and not j.finished for j in jobs)
    if waiting and batch.state in (PENDING, RUNNING, QUEUED) and batch.reason != WAITING_REASON:
        return QUEUED, WAITING_REASON
    if not waiting and batch.state == QUEUED and batch.reason == WAITING_REASON:
        return RUNNING, ""
    return None
