"""What to do next for one batch: a pure function of its state and its observed Jobs.

No I/O here. ``plan`` is called on every reconcile pass (level-triggered): it must
give the same answer for the same inputs, and applying its actions twice must be
harmless (Job names are deterministic, so a repeated launch answers 409).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from batchctl.core.topology import BatchTopology, back_within
from batchctl.launcher.state import CANCELLED, FAILED, SUCCEEDED, TERMINAL, BatchState

MAX_IDLE_JOBS = 3
"""Consecutive Jobs that end without a part moving before the batch is failed (parts lost)."""
CONFIG_ERROR_REASON = "PodFailurePolicy"
"""Job condition reason when a worker exited with the configuration-error code."""
MAX_WORKER_ERROR_CHARS = 500
DEFAULT_TOPOLOGY = BatchTopology()
"""The retry backoff a batch's work subscription is created with (what the worker assumes too)."""
LAPSE_SLACK_S = 3.0
"""Pub/Sub's retry backoff applies to an expired lease too: a killed worker's part is back an ack
deadline after its last renewal plus a backoff (the emulator: 1-2 s at ``min_backoff`` 1 s)."""
NAMED_DEAD_PARTS = 10
"""A failed batch's reason names at most this many dead-lettered parts."""


def config_error_message(worker_error: str) -> str:
    """A batch's failure reason after a worker configuration error, with the worker's own words if known."""
    detail = worker_error[:MAX_WORKER_ERROR_CHARS] if worker_error else "see the Job's pod logs"
    return f"worker configuration error (exit 2): {detail}"


@dataclass(frozen=True)
class ObservedJob:
    """What the backend sees of one Job right now."""

    name: str
    active: int
    finished: bool
    failed_reason: str | None = None
    parallelism: int = 0
    """``spec.parallelism``: the workers it may run (what the worker budget counts)."""
    suspended: bool = False
    """``spec.suspend``: created suspended, waiting for Kueue to admit it."""
    succeeded: int = 0
    """Pods that ended with exit 0."""
    failed: int = 0
    """Pods that failed (killed, evicted, erred)."""
    finished_at: float | None = None
    """Wall time this launcher first saw the Job ended."""
    accounted: bool = True
    """Every event published before this Job was seen ended has been applied to the batch."""
    unreported_exits: int = 0
    """Ended pods that sent no ``worker_exited``: they died (SIGKILL, OOM) holding leased parts."""

    @property
    def pods(self) -> int:
        return self.active + self.succeeded + self.failed

    @property
    def died_silently(self) -> bool:
        """A pod of it failed without ``worker_exited`` (SIGKILL, OOM): what it held comes back."""
        return self.failed > 0 and self.unreported_exits > 0


@dataclass(frozen=True)
class Launch:
    name: str
    n: int
    parallelism: int


@dataclass(frozen=True)
class Finish:
    """Move the batch to a terminal state."""

    state: str
    reason: str = ""


@dataclass(frozen=True)
class Cleanup:
    """Delete the batch's work resources (``keep_dead`` keeps the dead-letter ones)."""

    keep_dead: bool


@dataclass(frozen=True)
class CheckDead:
    """Count the dead-letter subscription: parts may have died without an event."""


@dataclass(frozen=True)
class CountDead:
    """Count these parts dead: their last allowed delivery started, no Job runs, they are not done.

    Their worker died on them (exit 137), so nothing reported them; Pub/Sub forwards each to the
    dead-letter topic on the next pull of the work subscription (``retry`` makes that pull).
    """

    parts: frozenset[int]


Action = Launch | Finish | Cleanup | CheckDead | CountDead


def parallelism(remaining: int, *, parts_per_worker: int, max_parallelism: int) -> int:
    """``min(max_parallelism, ceil(remaining / parts_per_worker))``, never below 1."""
    return max(1, min(max_parallelism, math.ceil(remaining / parts_per_worker)))


def plan(batch: BatchState, jobs: list[ObservedJob], *, job_name: str, now: float = math.inf,
         share: int | None = None) -> list[Action]:
    """The actions that move ``batch`` toward its end, given its Jobs as observed at ``now``.

    ``job_name`` is the name pattern with ``{n}`` for the Job number. A follow-up waits for
    the facts (``waiting_for_facts``). After an idle Job, the next one also waits until one
    ack deadline has passed since the idle one launched: parts leased by a killed worker come
    back only when their lease lapses, and a follow-up that drains an empty queue before then
    proves nothing. Likewise after the dead-letter check gave parts back: not before they are
    out of their retry backoff (``batch.nudged_back_at``, ``redelivered_by``).
    """
    if batch.state in TERMINAL:
        return _plan_terminal(batch, jobs)
    unrecorded = _unrecorded(batch, jobs, job_name=job_name)
    if unrecorded is not None:
        return [unrecorded]
    return _plan_open(batch, jobs, job_name=job_name, now=now, share=share)


def _plan_open(batch: BatchState, jobs: list[ObservedJob], *, job_name: str, now: float,
               share: int | None) -> list[Action]:
    """An unfinished batch whose every Job is recorded."""
    active = any(not j.finished for j in jobs)
    if batch.remaining <= 0:
        return _plan_accounted(batch, active=active)
    if active:
        return []
    if any(j.failed_reason == CONFIG_ERROR_REASON for j in _current(batch, jobs)):
        return [Finish(FAILED, config_error_message(batch.worker_error))]
    return _plan_ended(batch, jobs, job_name=job_name, now=now, share=share)


def _plan_ended(batch: BatchState, jobs: list[ObservedJob], *, job_name: str, now: float,
                share: int | None) -> list[Action]:
    """Every Job ended and parts remain: once the facts are in, count the last tries that died
    with their worker as dead (no Job is launched only to make Pub/Sub forward them), else follow up."""
    if waiting_for_facts(batch, jobs, now=now):
        return []
    if doomed := batch.last_tries - batch.done - batch.dead:
        return [CountDead(frozenset(doomed))]
    lethal = any(j.died_silently for j in _current(batch, jobs))
    return _plan_follow_up(batch, job_name=job_name, now=now, share=share, lethal=lethal)


def _unrecorded(batch: BatchState, jobs: list[ObservedJob], *, job_name: str) -> Launch | None:
    """The batch's next Job exists but is not recorded: a launcher crashed between creating it
    and saving its record. Launch it again, before anything else (running or not, parts left or
    not): the create meets 409 and the Job is recorded, so the batch counts every Job it ran."""
    n = len(batch.jobs) + 1
    found = next((j for j in jobs if j.name == job_name.format(n=n)), None)
    if found is None:
        return None
    size = found.parallelism or parallelism(batch.remaining, parts_per_worker=batch.request.parts_per_worker,
                                            max_parallelism=batch.request.max_parallelism)
    return Launch(found.name, n, size)


def waiting_for_facts(batch: BatchState, jobs: list[ObservedJob], *, now: float) -> bool:
    """A follow-up is decided only on facts: every event published before a Job was seen ended
    is applied, and parts held by pods that died silently are back in the queue."""
    return not all(j.accounted for j in jobs) or now < leases_lapse_at(batch, jobs)


def leases_lapse_at(batch: BatchState, jobs: list[ObservedJob]) -> float:
    """When the parts held by pods that died without ``worker_exited`` are back in the queue.

    A killed worker cannot nack: its parts stay leased until the ack deadline runs out after
    its last lease extension, which was before the Job was seen ended. A follow-up launched
    earlier finds an empty queue, proves nothing, and costs a Job (and maybe a node).
    """
    ends = [j.finished_at for j in jobs if j.unreported_exits and j.finished_at is not None]
    return max(ends) + batch.request.ack_deadline_s + LAPSE_SLACK_S if ends else -math.inf


def redelivered_by(nudged_at: float, attempts: Iterable[int], topology: BatchTopology = DEFAULT_TOPOLOGY) -> float:
    """When parts nacked at ``nudged_at`` on these delivery attempts are deliverable again.

    A nack puts a part in the work subscription's retry backoff (``min_backoff_s`` doubling per
    delivery, at most ``max_backoff_s``), invisible to every pull until then. ``nudged_at`` when
    nothing was nacked."""
    backs = [back_within(a, min_backoff_s=topology.min_backoff_s, max_backoff_s=topology.max_backoff_s)
             for a in attempts]
    return nudged_at + max(backs, default=0.0)


def _plan_accounted(batch: BatchState, *, active: bool) -> list[Action]:
    """Every part is done or dead: the batch ends (cleanup waits for running Jobs)."""
    dead = batch.dead - batch.done
    if dead:
        return [Finish(FAILED, dead_letter_reason(dead))]
    done: list[Action] = [Finish(SUCCEEDED)]
    return done if active else [*done, Cleanup(keep_dead=False)]


def dead_letter_reason(dead: set[int]) -> str:
    """A failed batch's reason: how many parts are dead-lettered, and which (the first few)."""
    first = sorted(dead)[:NAMED_DEAD_PARTS]
    named = ", ".join(map(str, first)) + (", ..." if len(dead) > len(first) else "")
    return f"{len(dead)} parts dead-lettered: part{'s' if len(dead) > 1 else ''} {named}"


def _plan_follow_up(batch: BatchState, *, job_name: str, now: float, share: int | None,
                    lethal: bool = False) -> list[Action]:
    """No Job runs and parts remain: count the dead, give up, wait, or launch the next Job.

    ``lethal``: a pod of the latest Job died silently. Its parts come back (the pacing waited for
    that), so nothing is missing yet, and the dead-letter check is skipped: its nudge would take
    a delivery attempt from each of them and hide them from the follow-up for a retry backoff.
    """
    idle = _idle_streak(batch)
    if idle and not lethal and batch.dead_checked < len(batch.jobs):
        return [CheckDead()]
    if now < batch.nudged_back_at:  # the parts that check gave back are still in their backoff
        return []
    if idle >= MAX_IDLE_JOBS:
        missing = batch.remaining
        return [Finish(FAILED, f"{idle} Jobs in a row ended without progress; {missing} parts missing")]
    if idle and now - batch.jobs[-1].launched < batch.request.ack_deadline_s:
        return []
    n = len(batch.jobs) + 1
    size = parallelism(batch.remaining, parts_per_worker=batch.request.parts_per_worker,
                       max_parallelism=batch.request.max_parallelism)
    if share is not None:
        size = min(size, share)
    return [Launch(job_name.format(n=n), n, size)] if size > 0 else []


def _plan_terminal(batch: BatchState, jobs: list[ObservedJob]) -> list[Action]:
    active = any(not j.finished for j in jobs)
    if batch.state in (SUCCEEDED, CANCELLED) and not batch.cleaned and not active:
        return [Cleanup(keep_dead=False)]
    return []


def _current(batch: BatchState, jobs: list[ObservedJob]) -> list[ObservedJob]:
    """The observed Job matching the batch's latest launch, if any."""
    if not batch.jobs:
        return []
    return [j for j in jobs if j.name == batch.jobs[-1].name]


def _idle_streak(batch: BatchState) -> int:
    """How many of the latest Jobs ended without any part moving.

    Job k was idle if activity (parts done, dead or failed) when Job k+1 launched
    (or now, for the last one) equals activity when Job k launched.
    """
    marks = [j.progress_at_launch for j in batch.jobs[batch.retry_floor :]] + [batch.activity]
    streak = 0
    for before, after in zip(reversed(marks[:-1]), reversed(marks[1:]), strict=True):
        if after != before:
            break
        streak += 1
    return streak

