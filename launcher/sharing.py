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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from batchctl.core import logs
from batchctl.core.errors import BatchctlError
from batchctl.launcher.allocation import Claim, Running, allocate, queue_positions, resizes
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
                 arrival=request.created)


def queued_reason(budget: int, position: int) -> str:
    return f"waiting for workers: the budget of {budget} is in use (position {position})"


class Sharing:
    """The budget's state between passes: each batch's share and what is still free."""

    def __init__(self, budget: int, backend: Backend, store: StateStore, metrics: Metrics, *,
                 resize: bool = True) -> None:
        self.budget, self.backend, self.store, self.metrics = budget, backend, store, metrics
        self.resize = resize
        """False in Kueue mode: Kueue owns admitted Jobs; the budget only sizes new ones."""
        self.shares: dict[str, int] = {}
        self._positions_saved: dict[str, float] = {}
        """When each queued batch's position was last stored (monotonic)."""
        self.free = 0
        self.log = logs.get("sharing")
        metrics.budget.set(budget)

    def rebalance(self, batches: Iterable[BatchState], observe: Callable[[BatchState], list[ObservedJob]]) -> None:
        """Divide the budget over the unfinished batches, resize their Jobs, mark who waits."""
        by_id = {b.batch_id: b for b in batches}
        claims, running, held = [], {}, 0
        for batch in by_id.values():
            if batch.cleaned or batch.state == CANCELLED:
                continue  # cleaned once its Jobs ended; cancelled with its Jobs deleted
            ended = batch.state in TERMINAL  # no Job of its own to come: what the backend sees is all
            jobs = [j for j in (self.backend.observe(batch.batch_id) if ended else observe(batch)) if not j.finished]
            workers = sum(j.parallelism for j in jobs)
            if ended or batch.remaining <= 0:
                held += workers
                continue
            claims.append(claim_of(batch))
            if jobs:
                running[batch.batch_id] = Running(jobs[-1].name, workers, growable=self.resize)
        self.shares = allocate(claims, self.budget - held)
        steps, self.free = resizes(self.shares, running if self.resize else {},
                                   self.budget - held - sum(r.parallelism for r in running.values()))
        self._apply(steps, running, by_id)
        self._mark(claims, running, by_id)
        self.metrics.workers_allocated.set(self.budget - max(0, self.free))

    def size_for(self, batch_id: str) -> int:
        """Workers a new Job of this batch may have now: its share, within what is free."""
        return max(0, min(self.shares.get(batch_id, 0), self.free))

    def launched(self, batch: BatchState, parallelism: int) -> None:
        """A Job was created for ``batch``: its workers are no longer free; it no longer waits."""
        self.free -= parallelism
        self.metrics.workers_allocated.set(self.budget - max(0, self.free))
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
                self.free = min(self.free, 0)
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
                batch.reason = queued_reason(self.budget, position)
            if changed:
                self.store.save(batch)
        if changed:
            self._positions_saved[batch.batch_id] = now
            logs.get("sharing", batch_id=batch.batch_id).info("batch_queued", **changed)
