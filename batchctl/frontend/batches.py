"""Reading and steering batches from the CLI: status, list, cancel, retry, follow.

Reads come straight from the launcher's state store (ConfigMaps or local files),
so ``status`` works whether or not a launcher runs. Cancel and retry are control
messages: the launcher is the only writer of batch state, and the CLI waits
(bounded) until the state shows the effect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from batchctl.core.errors import BadInput, BatchctlError, Unreachable
from batchctl.core.messages import Control
from batchctl.core.names import validate_batch_id
from batchctl.core.pubsub import PubSub
from batchctl.launcher.backend import Backend
from batchctl.launcher.state import CANCELLED, QUEUED, SUCCEEDED, TERMINAL, BatchState
from batchctl.launcher.store import StateStore
from batchctl.splitter.submit import send_control

CONTROL_WAIT_S = 60.0


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


def describe(batch: BatchState, workers: int) -> dict[str, Any]:
    """The contract's status object."""
    return {
        "batch_id": batch.batch_id,
        "state": batch.state,
        "parts_total": batch.parts,
        "parts_done": len(batch.done),
        "parts_dead": len(batch.dead - batch.done),
        "jobs": [j.name for j in batch.jobs],
        "job_count": len(batch.jobs),
        "pods": sum(batch.pods.values()),
        "workers": workers,
        "created": iso(batch.created),
        "finished": iso(batch.finished),
        "reason": batch.reason,
        "queue_position": batch.queue_position if batch.state == QUEUED else None,
    }


def active_workers(backend: Backend | None, batch: BatchState) -> int:
    if backend is None or batch.state in TERMINAL:
        return 0
    try:
        return sum(j.active for j in backend.observe(batch.batch_id))
    except BatchctlError:
        return 0


def load(store: StateStore, batch_id: str) -> BatchState:
    validate_batch_id(batch_id)
    batch = store.load(batch_id)
    if batch is None:
        raise BadInput(f"no batch {batch_id!r} is known (see `batchctl list`)")
    return batch


def request(pubsub: PubSub, store: StateStore, batch_id: str, action: str) -> BatchState:
    """Send ``cancel`` or ``retry`` and wait until the launcher has acted on it."""
    before = load(store, batch_id)
    if action == "retry" and not (before.dead - before.done):
        raise BadInput(f"batch {batch_id} has no dead-lettered parts to retry")
    if action == "cancel" and before.state in (SUCCEEDED, CANCELLED):
        return before
    send_control(pubsub, Control(action, batch_id))

    def acted(batch: BatchState) -> bool:
        if action == "cancel":
            return batch.state == CANCELLED
        return batch.retries > before.retries

    return wait_until(store, batch_id, acted, timeout=CONTROL_WAIT_S,
                      what=f"the launcher to {action} {batch_id} (is `batchctl launcher` running?)")


def wait_until(store: StateStore, batch_id: str, condition: Callable[[BatchState], bool], *,
               timeout: float, what: str, on_poll: Callable[[BatchState], None] | None = None,
               interval: float = 0.5) -> BatchState:
    """Poll the store until ``condition`` holds; Unreachable after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        batch = store.load(batch_id)
        if batch is not None:
            if on_poll:
                on_poll(batch)
            if condition(batch):
                return batch
        if time.monotonic() > deadline:
            raise Unreachable(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def follow(store: StateStore, batch_id: str, *, timeout: float,
           on_poll: Callable[[BatchState], None] | None = None) -> BatchState:
    """Follow a batch to a terminal state (it may not be stored yet: the launcher takes it up)."""
    return wait_until(store, batch_id, lambda b: b.state in TERMINAL, timeout=timeout,
                      what=f"batch {batch_id} to finish", on_poll=on_poll)

