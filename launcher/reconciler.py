"""Apply what the planner decided: launch Jobs, finish batches, clean up, count the dead.

Order makes every step safe to repeat: a Job is created before its record is saved
(a crash in between re-plans the same deterministic name and gets 409), and a
batch is marked finished before its resources are deleted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from batchctl.core import logs, topology
from batchctl.core.messages import Event, encode_event
from batchctl.core.pubsub import PubSub, ResourceMissing
from batchctl.core.settings import Settings
from batchctl.launcher import failpoints
from batchctl.launcher.backend import Backend
from batchctl.launcher.control import nudge
from batchctl.launcher.kueue import admission_change
from batchctl.launcher.manifest import Manifests
from batchctl.launcher.metrics import Metrics
from batchctl.launcher.planner import (
    Action,
    CheckDead,
    Cleanup,
    CountDead,
    Finish,
    Launch,
    ObservedJob,
    plan,
    redelivered_by,
)
from batchctl.launcher.sharing import Sharing
from batchctl.launcher.state import QUEUED, RUNNING, SUCCEEDED, BatchState, JobRecord, reverting
from batchctl.launcher.store import StateStore

UNSEEN_GRACE_S = 60.0
"""A Job recorded but never observed this term (watch lag) counts as running for this long. A Job
this launcher saw and then no longer sees was deleted (from outside, or by its TTL): it has ended."""
MAX_ROUNDS = 4


class Reconciler:
    def __init__(self, settings: Settings, pubsub: PubSub, store: StateStore, backend: Backend,
                 metrics: Metrics, *, sharing: Sharing | None = None) -> None:
        self.settings, self.pubsub, self.store, self.backend = settings, pubsub, store, backend
        self.metrics = metrics
        self.manifests = Manifests(settings)
        self.sharing = sharing
        """The worker budget (``BATCHCTL_MAX_WORKERS``), or None: every batch sized alone."""
        self.accounted_until = math.inf
        """Monotonic time up to which every published event has been applied (the launcher
        lowers it to 0 when it takes over and raises it after each empty events pull)."""
        self.exits: dict[str, set[str]] = {}
        """Batch id -> workers (pod names) that sent ``worker_exited`` this term."""
        self._seen_ended: dict[str, tuple[float, float]] = {}
        """Job name -> (monotonic, wall) time this launcher first saw it ended."""
        self._last_seen: dict[str, dict[str, ObservedJob]] = {}
        """Batch id -> Job name -> the Job as last observed this term (a Job gone since has ended)."""

    def new_term(self) -> None:
        """Taking over: nothing is accounted for until the events subscription is drained."""
        self.accounted_until = 0.0
        self.exits.clear()
        self._seen_ended.clear()
        self._last_seen.clear()

    def forget(self, batch_id: str) -> None:
        """The batch left memory: drop what this term learnt of it and its Jobs."""
        for name in self._last_seen.pop(batch_id, {}):
            self._seen_ended.pop(name, None)
        self.exits.pop(batch_id, None)

    def awaits_events(self) -> bool:
        """A Job was seen ended after the last drain of the events subscription."""
        return any(mono > self.accounted_until for mono, _ in self._seen_ended.values())

    def reconcile(self, batch: BatchState) -> None:
        """Plan and apply until the plan is empty (bounded)."""
        log = logs.get("reconciler", batch_id=batch.batch_id)
        pattern = self.settings.names.job(batch.batch_id, 0)[:-1] + "{n}"
        self._note_admission(batch, log)
        for _ in range(MAX_ROUNDS):
            share = self.sharing.size_for(batch.batch_id) if self.sharing else None
            jobs = self.observe(batch)
            self._note_pods(batch, jobs)
            actions = plan(batch, jobs, job_name=pattern, now=time.time(), share=share)
            if not actions:
                return
            for action in actions:
                self.apply(batch, action, log)

    def _note_admission(self, batch: BatchState, log: Any) -> None:
        """Kueue mode: show ``queued`` while Kueue holds the batch's Job suspended, ``running`` once admitted."""
        change = admission_change(batch, self.observe(batch)) if batch.jobs else None
        if change is None:
            return
        waited = time.time() - batch.queued_since if batch.queued_since is not None else None
        with reverting(batch):
            batch.state, batch.reason = change
            batch.queued_since = time.time() if change[0] == QUEUED else None
            self.store.save(batch)
        if change[0] != QUEUED and waited is not None:
            self.metrics.queue_wait.observe(max(0.0, waited))
        log.info("kueue_admission", state=batch.state)

    def observe(self, batch: BatchState) -> list[ObservedJob]:
        observed = self.backend.observe(batch.batch_id)
        last = self._last_seen.setdefault(batch.batch_id, {})
        last.update({j.name: j for j in observed})
        seen = {j.name for j in observed}
        ever_seen = getattr(self.backend, "ever_seen", None)
        now = time.time()
        for record in batch.jobs:
            if record.name in seen:
                continue
            if record.name in last:  # seen this term, gone now: deleted, its pods ended with it
                observed.append(gone(last[record.name]))
            elif ever_seen is not None and ever_seen(record.name):  # the watch saw it come and go
                # (before this term): its pods' fate is unknown, so count them as died silently
                observed.append(gone(ObservedJob(record.name, active=record.parallelism, finished=False,
                                                 parallelism=record.parallelism)))
            elif now - record.launched < UNSEEN_GRACE_S:
                observed.append(ObservedJob(record.name, active=0, finished=False, parallelism=record.parallelism))
        return [self._facts(batch.batch_id, j) for j in observed]

    def _facts(self, batch_id: str, job: ObservedJob) -> ObservedJob:
        """Add what the launcher knows of an ended Job: when it saw the end, whether the events
        up to then are applied, and how many of its pods ended without ``worker_exited``."""
        if not job.finished:
            return job
        mono, wall = self._seen_ended.setdefault(job.name, (time.monotonic(), time.time()))
        return replace(job, finished_at=wall, accounted=mono <= self.accounted_until,
                       unreported_exits=max(0, job.succeeded + job.failed - self._reported(batch_id, job.name)))

    def _reported(self, batch_id: str, job: str) -> int:
        """Pods of ``job`` whose worker sent ``worker_exited`` this term."""
        return pods_of(self.exits.get(batch_id, ()), job)

    def _note_pods(self, batch: BatchState, jobs: list[ObservedJob]) -> None:
        """Keep the most pods seen per Job (Jobs vanish after their TTL): pods per batch. The Job's
        status leaves out pods the podFailurePolicy ignored (evicted, stopped) and, for a Job
        deleted from outside, pods it never showed; every pod whose worker sent any event ran
        (``batch.ran``, stored: every launcher's term), so a Job counts the larger of its status and
        its distinct workers heard from. Both are lower bounds of the pods it had (a pod killed
        before its first event is counted by the status alone), so their maximum never counts a
        pod twice."""
        counts = {j.name: max(j.pods, pods_of(batch.ran, j.name)) for j in jobs}
        more = {name: n for name, n in counts.items() if n > batch.pods.get(name, 0)}
        if not more or batch.corrupt:
            return
        with reverting(batch):
            batch.pods.update(more)
            self.store.save(batch)

    def apply(self, batch: BatchState, action: Action, log: Any = None) -> None:
        """Apply one action; if it fails (its save included), ``batch`` is as it was before."""
        log = log or logs.get("reconciler", batch_id=batch.batch_id)
        with reverting(batch):
            self._apply(batch, action, log)
        if isinstance(action, Finish):
            self.metrics.jobs_per_batch.observe(len(batch.jobs))
            self.metrics.pods_per_batch.observe(sum(batch.pods.values()))
            publish_event(self.pubsub, Event("batch_finished", batch.batch_id, "launcher", reason=action.state))

    def _apply(self, batch: BatchState, action: Action, log: Any) -> None:
        if isinstance(action, Launch):
            self._launch(batch, action, log)
        elif isinstance(action, Finish):
            self._finish(batch, action, log)
        elif isinstance(action, Cleanup):
            topology.delete_batch(self.pubsub, batch.batch_id, keep_dead=action.keep_dead)
            batch.cleaned = True
            self.store.save(batch)
            log.info("batch_cleaned_up")
        elif isinstance(action, CountDead):
            batch.dead |= action.parts
            self.store.save(batch)
            log.warning("last_tries_counted_dead", parts=sorted(action.parts))
        elif isinstance(action, CheckDead):
            attempts: list[int] = []
            try:
                attempts = nudge(self.pubsub, self.settings.names.work(batch.batch_id))
                dead = count_dead(self.pubsub, self.settings.names.dead(batch.batch_id))
            except ResourceMissing as exc:  # lost with its messages: nothing to count, the plan decides
                log.warning("dead_letters_uncountable", error=str(exc))
                dead = set()
            batch.dead |= dead - batch.done
            batch.dead_checked = len(batch.jobs)
            batch.nudged_back_at = redelivered_by(time.time(), attempts)
            self.store.save(batch)
            log.info("dead_letters_counted", dead=len(batch.dead), parts_given_back=len(attempts))

    def _launch(self, batch: BatchState, action: Launch, log: Any) -> None:
        created = self.backend.launch(batch, action)
        failpoints.hit(failpoints.JOB_CREATED_BEFORE_SAVE, batch_id=batch.batch_id, job=action.name)
        now = time.time()
        if not batch.jobs:
            self.metrics.launch_latency.observe(max(0.0, now - batch.request.created))
        batch.jobs.append(JobRecord(action.name, action.n, action.parallelism, now, batch.activity))
        batch.state = RUNNING
        if self.sharing:
            self.sharing.launched(batch, action.parallelism)
        self.store.save(batch)
        if created:
            self.metrics.jobs_launched.inc()
        log.info("job_launched" if created else "job_already_exists", job=action.name,
                 parallelism=action.parallelism, remaining=batch.remaining)

    def _finish(self, batch: BatchState, action: Finish, log: Any) -> None:
        now = time.time()
        if action.state == SUCCEEDED:  # _SUCCESS first: a crash before the save writes it again
            action = self.manifests.write(batch, action, finished=now)
        batch.state = action.state
        batch.reason = action.reason
        batch.finished = now
        for job in batch.jobs:  # the workers heard since pods were last noted: a finished batch's events are not read
            batch.pods[job.name] = max(batch.pods.get(job.name, 0), pods_of(batch.ran, job.name))
        self.store.save(batch)
        level = log.info if action.state == SUCCEEDED else log.warning
        level("batch_finished", state=action.state, reason=action.reason, parts_done=len(batch.done),
              parts_dead=len(batch.dead))


def pods_of(workers: Iterable[str], job: str) -> int:
    """How many of ``workers`` (pod names) belong to ``job`` (its pods are named ``<job>-<suffix>``)."""
    return sum(1 for worker in workers if worker.startswith(job + "-"))


def gone(job: ObservedJob) -> ObservedJob:
    """A Job observed, then deleted (its pods with it): ended, its active pods counted as failed
    (they were stopped, gracefully or not; the ones whose worker reports its exit are not silent)."""
    return replace(job, active=0, failed=job.failed + job.active, finished=True)


def publish_event(pubsub: PubSub, event: Event) -> None:
    data, attributes = encode_event(event)
    pubsub.publish(pubsub.settings.names.events_topic, data, attributes).result(timeout=30)


def count_dead(pubsub: PubSub, subscription: str) -> set[int]:
    """Part indices on the dead-letter subscription, leaving every message there (for retry)."""
    held: list[str] = []
    parts: set[int] = set()
    try:
        while True:
            batch = pubsub.pull(subscription, max_messages=1000, timeout_s=1.0)
            if not batch:
                break
            held.extend(m.ack_id for m in batch)
            parts.update(int(m.attributes["part"]) for m in batch if m.attributes.get("part", "").isdigit())
    finally:
        for i in range(0, len(held), 1000):
            pubsub.nack(subscription, held[i : i + 1000])
    return parts

