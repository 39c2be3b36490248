"""Fencing: no Job create or delete and no state write unless this replica holds the Lease now.

Leader election is not fencing (client-go: it "does not guarantee that only one client is acting
as a leader"). A leader frozen (SIGSTOP, a long GC pause, a starved node) past its lease wakes
up believing what it remembers; every side effect therefore checks ``is_leader`` (monotonic
time against the renew deadline) at the moment it is made, and a stale leader's write raises
``NotLeader`` instead. State writes are also conditional on the resourceVersion that was read,
so a write that slips between the check and the request still fails with Conflict; a Job
created in that window has a deterministic name the new leader's plan also uses.
"""

from __future__ import annotations

import threading
from typing import Protocol

from batchctl.core.errors import BatchctlError
from batchctl.launcher.backend import Backend
from batchctl.launcher.planner import Launch, ObservedJob
from batchctl.launcher.state import BatchState
from batchctl.launcher.store import StateStore


class NotLeader(BatchctlError):
    """Raised when a replica that does not hold the Lease (any more) is about to write."""


class Holder(Protocol):
    @property
    def is_leader(self) -> bool: ...


def check(holder: Holder, what: str) -> None:
    if not holder.is_leader:
        raise NotLeader(f"not the leader: {what} skipped")


class FencedStore:
    """A ``StateStore`` whose writes need the Lease; reads are free."""

    def __init__(self, store: StateStore, holder: Holder) -> None:
        self.store, self.holder = store, holder

    def load(self, batch_id: str) -> BatchState | None:
        return self.store.load(batch_id)

    def load_all(self) -> list[BatchState]:
        return self.store.load_all()

    def load_unsettled(self) -> list[BatchState]:
        return self.store.load_unsettled()

    def settled_ends(self) -> dict[str, float]:
        return self.store.settled_ends()

    def create(self, state: BatchState) -> bool:
        check(self.holder, f"storing batch {state.batch_id}")
        return self.store.create(state)

    def save(self, state: BatchState) -> None:
        check(self.holder, f"saving batch {state.batch_id}")
        self.store.save(state)

    def delete(self, batch_id: str) -> None:
        check(self.holder, f"deleting batch {batch_id}")
        self.store.delete(batch_id)


class FencedBackend:
    """A ``Backend`` whose Job creates and deletes need the Lease."""

    def __init__(self, backend: Backend, holder: Holder) -> None:
        self.backend, self.holder = backend, holder
        self.changed: threading.Event = backend.changed

    def launch(self, batch: BatchState, launch: Launch) -> bool:
        check(self.holder, f"creating Job {launch.name}")
        return self.backend.launch(batch, launch)

    def observe(self, batch_id: str) -> list[ObservedJob]:
        return self.backend.observe(batch_id)

    def ever_seen(self, name: str) -> bool:
        """Whether the backend's list or watch ever showed Job ``name`` (False if it cannot tell)."""
        seen = getattr(self.backend, "ever_seen", None)
        return bool(seen(name)) if seen is not None else False

    def resize(self, batch_id: str, job: str, parallelism: int) -> None:
        check(self.holder, f"resizing Job {job}")
        self.backend.resize(batch_id, job, parallelism)

    def delete_jobs(self, batch_id: str) -> None:
        check(self.holder, f"deleting the Jobs of {batch_id}")
        self.backend.delete_jobs(batch_id)

    def forget(self, batch_id: str, job_names: list[str]) -> None:
        check(self.holder, f"forgetting the Jobs of {batch_id}")
        self.backend.forget(batch_id, job_names)

    def job_batches(self) -> dict[str, str]:
        return self.backend.job_batches()

    def close(self) -> None:
        self.backend.close()
