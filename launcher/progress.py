"""Fold worker events into batch state: each part counted once, however often delivered. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from batchctl.core.messages import EXIT_ERROR_PREFIX, Event
from batchctl.launcher.planner import config_error_message
from batchctl.launcher.state import FAILED, TERMINAL, BatchState


def apply_events(batches: Mapping[str, BatchState], events: Iterable[Event]) -> set[str]:
    """Record part_done / part_failed events and workers' exit errors; return the ids of batches that changed.

    A part is done once any delivery of it is done (a ``part_done`` event may name many
    parts). A failure on the last allowed delivery attempt means Pub/Sub dead-letters it, so it is counted dead (unless
    it is, or later becomes, done). A redelivered part a worker starts (``part_started``, sent
    before it runs alone) is activity too; on its last allowed attempt it becomes a last try,
    which the planner counts dead if it is not done once its Job is over (its worker died on
    it). The sender of any event of a running batch is noted as a pod that ran (stored with the
    batch's next change: a save of its own per new pod would double the writes). Part events of
    unknown or finished batches, or with a part index outside the batch, are ignored; so is every
    event of a batch whose stored state was unreadable.
    """
    changed: set[str] = set()
    for event in events:
        batch = _readable(batches, event.batch_id)
        if batch is not None and batch.state not in TERMINAL and event.worker:
            batch.ran.add(event.worker)  # a pod that ran: stored with the batch's next change, not a change itself
        if batch is not None and event.type == "worker_exited" and event.reason.startswith(EXIT_ERROR_PREFIX):
            if _note_worker_error(batch, event.reason.removeprefix(EXIT_ERROR_PREFIX)):
                changed.add(batch.batch_id)
            continue
        if batch is None or batch.state in TERMINAL:
            continue
        if event.type == "part_done":
            if _record_done(batch, event.done_parts):
                changed.add(batch.batch_id)
            continue
        if event.part is None or not 0 <= event.part < batch.parts:
            continue
        if event.type in ("part_failed", "part_started") and _record_attempt(batch, event, event.part):
            changed.add(batch.batch_id)
    return changed


def _readable(batches: Mapping[str, BatchState], batch_id: str) -> BatchState | None:
    """The batch, unless it is unknown or was loaded from an unreadable document (a save would
    overwrite the document a human must look at)."""
    batch = batches.get(batch_id)
    return None if batch is None or batch.corrupt else batch


def _record_attempt(batch: BatchState, event: Event, part: int) -> bool:
    """A part_failed or part_started of ``part``: activity, and on the last allowed attempt a dead part
    or a last try; True if anything changed."""
    new = _record_try(batch, part, event.attempt)
    marked = batch.dead if event.type == "part_failed" else batch.last_tries
    if _last_try(batch, part, event.attempt) and part not in marked:
        marked.add(part)
        new = True
    return new


def _record_try(batch: BatchState, part: int, attempt: int) -> bool:
    """Note a delivery attempt of ``part`` as activity; True if it is new (an event delivered again
    carries an attempt already noted). Without an attempt (no dead-letter policy) every event counts."""
    if attempt <= 0:
        batch.failures += 1
        return True
    if batch.tried.get(part, 0) >= attempt:
        return False
    batch.tried[part] = attempt
    return True


def _last_try(batch: BatchState, part: int, attempt: int) -> bool:
    """``attempt`` is the part's last allowed delivery, and the part is neither done nor dead."""
    return attempt >= batch.request.max_delivery_attempts and part not in batch.done and part not in batch.dead


def _record_done(batch: BatchState, parts: tuple[int, ...]) -> bool:
    """Add the parts in range that were not done yet (set operations: an event of 1,000 parts costs
    microseconds); True if any was new."""
    new = {p for p in parts if 0 <= p < batch.parts} - batch.done
    if not new:
        return False
    batch.done |= new
    batch.dead -= new
    return True


def _note_worker_error(batch: BatchState, error: str) -> bool:
    """Keep a worker's exit error. It may arrive after the Job's failure ended the batch;
    then the batch's generic reason takes the worker's words."""
    if error == batch.worker_error:
        return False
    batch.worker_error = error
    if batch.state == FAILED and batch.reason == config_error_message(""):
        batch.reason = config_error_message(error)
    return True
