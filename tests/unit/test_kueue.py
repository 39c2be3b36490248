"""Kueue mode: the Job it builds and what a batch shows while Kueue holds its Job, pure.

Checks:
- ``BATCHCTL_KUEUE_QUEUE`` is read into ``JobConfig`` (unset or empty: none; a bad name: BadInput);
- with a queue the Job is created ``suspend: true`` with ``kueue.x-k8s.io/queue-name`` on the Job
  (not only the pod template), and still validates against the schema; without one neither appears;
- ``admission_change``: a suspended unfinished Job makes the batch ``queued`` "waiting for Kueue
  admission"; once unsuspended it is ``running`` again; finished or terminal batches and batches
  queued for the budget are left alone; the decision table over every small case.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from batchctl.core.errors import BadInput
from batchctl.core.messages import BatchRequest
from batchctl.launcher.jobconfig import JobConfig
from batchctl.launcher.jobspec import KUEUE_QUEUE_LABEL, build_job, job_to_dict
from batchctl.launcher.kueue import WAITING_REASON, admission_change
from batchctl.launcher.planner import ObservedJob
from batchctl.launcher.state import FAILED, PENDING, QUEUED, RUNNING, SUCCEEDED, BatchState
from tests.support.k8s_schema import validate


def built(config: JobConfig) -> dict[str, object]:
    return job_to_dict(build_job(name="p-b1-1", namespace="jobs", labels={"batchctl.dev/batch-id": "b1"},
                                 parallelism=2, env={"BATCHCTL_BATCH_ID": "b1"}, config=config))


def test_queue_variable() -> None:
    """Unset or empty: no Kueue; a name: that LocalQueue; not an object name: BadInput naming it."""
    assert JobConfig.from_env({}).kueue_queue is None
    assert JobConfig.from_env({"BATCHCTL_KUEUE_QUEUE": ""}).kueue_queue is None
    assert JobConfig.from_env({"BATCHCTL_KUEUE_QUEUE": "team-a"}).kueue_queue == "team-a"
    with pytest.raises(BadInput, match="BATCHCTL_KUEUE_QUEUE='Team A'"):
        JobConfig.from_env({"BATCHCTL_KUEUE_QUEUE": "Team A"})


def test_job_is_suspended_and_labelled_for_kueue() -> None:
    """suspend: true and the queue label on the Job; schema-valid; nothing of it without a queue."""
    job = built(dataclasses.replace(JobConfig(), kueue_queue="team-a"))
    assert job["spec"]["suspend"] is True  # type: ignore[index]
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a"  # type: ignore[index]
    validate(job)
    plain = built(JobConfig())
    assert "suspend" not in plain["spec"]  # type: ignore[operator]
    assert KUEUE_QUEUE_LABEL not in plain["metadata"]["labels"]  # type: ignore[index]


def batch(state: str, reason: str = "") -> BatchState:
    return BatchState(BatchRequest("b1", parts=4, records=4, bytes=4, handler="m:f"), state=state, reason=reason)


def test_admission_decision_table() -> None:
    """Every (state, reason, job) case: queued while held, running once admitted, else unchanged."""
    held = ObservedJob("j", 0, False, parallelism=2, suspended=True)
    admitted = ObservedJob("j", 2, False, parallelism=2)
    ended_suspended = ObservedJob("j", 0, True, suspended=True)
    budget_reason = "waiting for workers: the budget of 6 is in use (position 1)"
    for state, reason, jobs in itertools.product(
        (PENDING, RUNNING, QUEUED, SUCCEEDED, FAILED), ("", WAITING_REASON, budget_reason),
        ([held], [admitted], [ended_suspended], []),
    ):
        change = admission_change(batch(state, reason), jobs)
        waiting = jobs == [held]
        if waiting and state in (PENDING, RUNNING, QUEUED) and reason != WAITING_REASON:
            assert change == (QUEUED, WAITING_REASON), (state, reason, jobs)
        elif not waiting and state == QUEUED and reason == WAITING_REASON:
            assert change == (RUNNING, ""), (state, reason, jobs)
        else:
            assert change is None, (state, reason, jobs)
