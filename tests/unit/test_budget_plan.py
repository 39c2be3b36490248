"""The planner under a worker budget: ``plan(..., share=n)``, pure.

Checks:
- no budget (``share=None``) plans exactly as before, over an exhaustive small state space;
- a share caps the launch: the Job is created at ``min(size, share)``;
- a share of 0 launches nothing (the batch is queued) but still finishes, cleans up and counts the dead;
- a Job paused at parallelism 0 or suspended (Kueue) is unfinished: no follow-up, no idle count, no failure.
"""

from __future__ import annotations

import itertools

from batchctl.core.messages import BatchRequest
from batchctl.launcher.planner import CheckDead, Cleanup, Finish, Launch, ObservedJob, plan
from batchctl.launcher.state import PENDING, RUNNING, SUCCEEDED, BatchState, JobRecord

PATTERN = "p-b1-{n}"


def state(parts: int, *, done: int = 0, jobs: int = 0, idle_jobs: int = 0, dead_checked: int = 0) -> BatchState:
    """A batch of ``parts`` with ``done`` parts done and ``jobs`` Jobs launched, the last ``idle_jobs`` idle."""
    records = [JobRecord(PATTERN.format(n=n), n, 1, float(n), done if n > jobs - idle_jobs else 0)
               for n in range(1, jobs + 1)]
    request = BatchRequest("b1", parts=parts, records=parts, bytes=parts, handler="m:f", parts_per_worker=2,
                           max_parallelism=4, created=0.0)
    return BatchState(request, state=RUNNING if jobs else PENDING, done=set(range(done)), jobs=records,
                      dead_checked=dead_checked)


def test_no_share_plans_as_before() -> None:
    """``share=None`` gives the plan of a call without it, for every small state."""
    for parts, done, jobs, idle in itertools.product(range(1, 6), range(6), range(3), range(3)):
        if done > parts or idle > jobs:
            continue
        batch = state(parts, done=done, jobs=jobs, idle_jobs=idle)
        observed = [ObservedJob(PATTERN.format(n=jobs), 0, True)] if jobs else []
        assert plan(batch, observed, job_name=PATTERN, share=None) == plan(batch, observed, job_name=PATTERN)


def test_share_caps_the_launch() -> None:
    """9 parts at 2 per worker want 4 (the cap); a share of 3 launches 3, a share of 9 still 4."""
    batch = state(9)
    assert plan(batch, [], job_name=PATTERN, share=3) == [Launch("p-b1-1", 1, 3)]
    assert plan(batch, [], job_name=PATTERN, share=9) == [Launch("p-b1-1", 1, 4)]
    assert plan(batch, [], job_name=PATTERN, share=1) == [Launch("p-b1-1", 1, 1)]


def test_share_zero_launches_nothing_but_still_finishes_and_counts() -> None:
    """Share 0: no Job; a batch with every part done still succeeds and is cleaned; an idle Job's dead are counted."""
    assert plan(state(9), [], job_name=PATTERN, share=0) == []
    assert plan(state(4, done=4, jobs=1), [ObservedJob("p-b1-1", 0, True)], job_name=PATTERN, share=0) == [
        Finish(SUCCEEDED), Cleanup(keep_dead=False)]
    idle = state(4, done=1, jobs=2, idle_jobs=1)
    assert plan(idle, [ObservedJob("p-b1-2", 0, True)], job_name=PATTERN, share=0) == [CheckDead()]


def test_paused_or_suspended_job_is_waiting_not_idle() -> None:
    """A Job at parallelism 0 or suspended by Kueue is unfinished: nothing happens, whatever the streak."""
    for share, idle in itertools.product((None, 0, 3), range(3)):
        batch = state(8, done=1, jobs=3, idle_jobs=idle, dead_checked=3)
        paused = ObservedJob("p-b1-3", active=0, finished=False, parallelism=0)
        suspended = ObservedJob("p-b1-3", active=0, finished=False, parallelism=2, suspended=True)
        assert plan(batch, [paused], job_name=PATTERN, share=share) == []
        assert plan(batch, [suspended], job_name=PATTERN, share=share) == []
