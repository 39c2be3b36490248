"""Apply the worker budget: divide it (``allocation``), resize running Jobs, mark queued batches.

Called by the launcher once per pass before the batches are reconciled (and again when a new
batch arrives), so a new Job is launched at its share and never beyond what is free. Running Jobs
are resized by patching ``spec.parallelism``, which the Job docs list as mutable on a running Job
("Parallelism ... can be changed", kubernetes.io/docs/concepts/workloads/controllers/job/
#controlling-parallelism; a Job scaled to 0 is paused until raised). Shrinks are applied before
grows, and a failed patch stops the pass's grows and launches, so the sum of ``spec.parallelism``
over unfinished Jobs never exceeds the budget.

Workers of a batch that has ended but whose Job still runs (draining) stay counted against the
budget until that Job finishes: they are not ours to take back, and the contract counts every
unfinished Job.

Pools: a batch draws on its profile's ``max_workers`` when the profile sets one, as well as on the
global budget when that is set (``allocation.Budgets``); free workers are counted per pool too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from batchctl.core import logs
from batchctl.core.errors import BatchctlError
from batchctl.launcher.allocation import Budgets, Claim, Running, allocate, queue_positions, resizes
from batchctl.launcher.backend import Backend
from batchctl.launcher.metrics import Metrics
from batchctl.launcher.planner import ObservedJob
from batchctl.launcher.state import CANCELLED, PENDING, QUEUED, RUNNING, TERMINAL, BatchState, reverting
from batchctl.launcher.store import StateStore

POSITION_REFRESH_S = 5.0
"""How often a queued batch's stored position (what ``status`` shows) may be rewritten."""


def claim_of(batch: BatchState) -> Claim:
    request = batch.request
    return Claim(batch.batch_id, remaining=batch.remaining, parts_per_worker=request.parts_per_worker,
                 max_parallelism=request.max_parallelism, priority=request.priority,
                 arrival=request.created, pool=request.profile)


def queued_reason(budget: int, position: int, profile: str = "") -> str:
    whose = f" of profile {profile!r}" if profile else ""
    return f"waiting for workers: the budget of {budget}{whose} is in use (position {position})"


class Sharing:
    """The budget's state between passes: each batch's share and what is still free."""

    def __init__(self, budget: int | None, backend: Backend, store: StateStore, metrics: Metrics, *,
                 resize: bool = True, pools: Mapping[str, int] | None = None) -> None:
        self.budget, self.backend, self.store, self.metrics = budget, backend, store, metrics
        self.pools = dict(pools or {})
        """Each profile's ``max_workers``, for the profiles that set one."""
        self.resize = resize
        """False in Kueue mode: Kueue owns admitted Jobs; the budget only sizes new ones."""
        self.shares: dict[str, int] = {}
        self._positions_saved: dict[str, float] = {}
        """When each queued batch's position was last stored (monotonic)."""
        self.free = Budgets(0 if budget is not None else None, {pool: 0 for pool in self.pools})
        self._pool_of: dict[str, str] = {}
        self.log = logs.get("sharing")
        metrics.budget.set(self._capacity)

    @property
    def _capacity(self) -> int:
        return self.budget if self.budget is not None else sum(self.pools.values())

    def _allocated(self) -> int:
        if self.free.total is not None and self.budget is not None:
            return self.budget - max(0, self.free.total)
        return sum(self.pools[p] - max(0, self.free.pools.get(p, 0)) for p in self.pools)

    def rebalance(self, batches: Iterable[BatchState], observe: Callable[[BatchState], list[ObservedJob]]) -> None:
        """Divide the budget over the unfinished batches, resize their Jobs, mark who waits."""
        by_id = {b.batch_id: b for b in batches}
        claims, running = [], {}
        left = Budgets(self.budget, dict(self.pools))
        for batch in by_id.values():
            if batch.cleaned or batch.state == CANCELLED:
                continue  # cleaned once its Jobs ended; cancelled with its Jobs deleted
            ended = batch.state in TERMINAL  # no Job of its own to come: what the backend sees is all
            jobs = [j for j in (self.backend.observe(batch.batch_id) if ended else observe(batch)) if not j.finished]
            workers = sum(j.parallelism for j in jobs)
            pool = batch.request.profile
            if ended or batch.remaining <= 0:
                left.take(pool, workers)
                continue
            claims.append(claim_of(batch))
            if jobs:
                running[batch.batch_id] = Running(jobs[-1].name, workers, growable=self.resize, pool=pool)
        self._pool_of = {c.batch_id: c.pool for c in claims}
        self.shares = allocate(claims, left.total, left.pools)
        for job in running.values():
            left.take(job.pool, job.parallelism)
        steps, self.free = resizes(self.shares, running if self.resize else {}, left)
        self._apply(steps, running, by_id)
        self._mark(claims, running, by_id)
        self.metrics.workers_allocated.set(self._allocated())

    def freeze(self) -> None:
        """Nothing is free until the next pass divides the budgets again (after a failed patch or pass)."""
        total = None if self.free.total is None else min(self.free.total, 0)
        self.free = Budgets(total, {pool: min(n, 0) for pool, n in self.free.pools.items()})

    def size_for(self, batch_id: str) -> int:
        """Workers a new Job of this batch may have now: its share, within what is free."""
        return max(0, min(self.shares.get(batch_id, 0), self.free.room(self._pool_of.get(batch_id, ""))))

    def launched(self, batch: BatchState, parallelism: int) -> None:
        """A Job was created for ``batch``: its workers are no longer free; it no longer waits."""
        self.free.take(batch.request.profile, parallelism)
        self.metrics.workers_allocated.set(self._allocated())
        self.unqueue(batch)

    def unqueue(self, batch: BatchState) -> None:
        """The batch got workers: record how long it waited (the caller saves it)."""
        if batch.queued_since is not None:
            self.metrics.queue_wait.observe(max(0.0, time.time() - batch.queued_since))
        batch.queued_since, batch.queue_position = None, 0
        if batch.state == QUEUED:
            batch.state, batch.reason = RUNNING, ""

    def _apply(self, steps: list[tuple[str, int]], running: Mapping[str, Running],
               batches: Mapping[str, BatchState]) -> None:
        for batch_id, size in steps:
            log = logs.get("sharing", batch_id=batch_id)
            before = running[batch_id].parallelism
            try:
                self.backend.resize(batch_id, running[batch_id].job, size)
            except BatchctlError as exc:  # stop here: later grows or launches could overshoot
                log.warning("job_resize_failed", job=running[batch_id].job, error=str(exc))
                self.freeze()
                return
            log.info("job_resized", job=running[batch_id].job, parallelism=size, was=before)
            batch = batches.get(batch_id)
            if batch is not None and size > 0 and batch.state == QUEUED:
                with reverting(batch):
                    self.unqueue(batch)
                    self.store.save(batch)

    def _mark(self, claims: list[Claim], running: Mapping[str, Running], batches: Mapping[str, BatchState]) -> None:
        """Store ``queued`` (with position and reason) for every batch left with no worker."""
        positions = queue_positions(claims, self.shares)
        for claim in claims:
            batch = batches.get(claim.batch_id)
            position = positions.get(claim.batch_id, 0)
            if batch is None or not position or self.shares.get(claim.batch_id, 0):
                continue
            if claim.batch_id in running and running[claim.batch_id].parallelism and not self.resize:
                continue  # Kueue mode keeps what it admitted
            self._queue(batch, position)
        self.metrics.queued.set(len(positions))

    def _reason(self, pool: str, position: int) -> str:
        """Name the budget that is spent: the profile's own when it is the one with no room."""
        if pool in self.pools and (self.free.total is None or self.free.pools[pool] <= self.free.total):
            return queued_reason(self.pools[pool], position, pool)
        return queued_reason(self._capacity, position)

    def _queue(self, batch: BatchState, position: int) -> None:
        """Store ``queued`` at once; a new position only every POSITION_REFRESH_S (a burst would
        otherwise rewrite every queued batch's state on every arrival)."""
        now = time.monotonic()
        if batch.state == QUEUED and now - self._positions_saved.get(batch.batch_id, -math.inf) < POSITION_REFRESH_S:
            return
        changed: dict[str, Any] = {}
        with reverting(batch):
            if batch.state in (PENDING, RUNNING):
                changed["state"] = QUEUED
                batch.state, batch.queued_since = QUEUED, time.time()
            if batch.queue_position != position:
                changed["position"] = position
                batch.queue_position = position
                batch.reason = self._reason(batch.request.profile, position)
            if changed:
                self.store.save(batch)
        if changed:
            self._positions_saved[batch.batch_id] = now
            logs.get("sharing", batch_id=batch.batch_id).info("batch_queued", **changed)
