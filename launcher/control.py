"""Act on control messages: launch (store the batch), cancel, retry.

The caller acks a control message only after this returns, i.e. after its effect
is stored; a redelivered message finds the effect done and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping

from typing import Any

from batchctl import logs
from batchctl.messages import Control
from batchctl.pubsub import PubSub
from launcher.backend import Backend
from launcher.state import CANCELLED, FAILED, RUNNING, TERMINAL, BatchState
from launcher.store import StateStore
from splitter.publisher import PUBLISH_TIMEOUT_S


class Controller:
    def __init__(self, pubsub: PubSub, store: StateStore, backend: Backend,
                 batches: MutableMapping[str, BatchState]) -> None:
        self.pubsub, self.store, self.backend, self.batches = pubsub, store, backend, batches

    def handle(self, control: Control) -> None:
        log = logs.get("control", batch_id=control.batch_id, action=control.action)
        if control.action == "launch" and control.request is not None:
            state = BatchState(control.request, created=control.request.created)
            if self.store.create(state):
                self.batches[state.batch_id] = state
                log.info("batch_accepted", parts=state.parts)
            elif state.batch_id not in self.batches:
                existing = self.store.load(state.batch_id)
                if existing is not None:
                    self.batches[state.batch_id] = existing
            return
        batch = self.batches.get(control.batch_id) or self.store.load(control.batch_id)
        if batch is None:
            log.warning("control_for_unknown_batch")
            return
        self.batches[batch.batch_id] = batch
        if control.action == "cancel":
            self.cancel(batch, log)
        elif control.action == "retry":
            self.retry(batch, log)

    def cancel(self, batch: BatchState, log: Any) -> None:
        if batch.state in TERMINAL and batch.state != FAILED:
            return
        self.backend.delete_jobs(batch.batch_id)
        names = self.pubsub.settings.names
        self.pubsub.delete_subscription(names.work(batch.batch_id))
        batch.state, batch.finished, batch.reason = CANCELLED, time.time(), "cancelled by request"
        self.store.save(batch)
        log.info("batch_cancelled")

    def retry(self, batch: BatchState, log: Any) -> None:
        if batch.state == CANCELLED:
            log.warning("retry_of_cancelled_batch_ignored")
            return
        moved = republish_dead(self.pubsub, batch.batch_id)
        batch.dead -= moved
        if batch.remaining <= 0 and not batch.dead:
            return
        batch.state, batch.finished, batch.reason = RUNNING, None, ""
        batch.retries += 1
        batch.dead_checked = len(batch.jobs)
        self.store.save(batch)
        log.info("batch_retried", republished=len(moved))


def republish_dead(pubsub: PubSub, batch_id: str) -> set[int]:
    """Move every dead-lettered part back to the work topic; the dead copy is acked only after."""
    names = pubsub.settings.names
    moved: set[int] = set()
    while True:
        msgs = pubsub.pull(names.dead(batch_id), max_messages=500, timeout_s=1.0)
        if not msgs:
            return moved
        futures = [pubsub.publish(names.work(batch_id), m.data, m.attributes) for m in msgs]
        for future in futures:
            future.result(timeout=PUBLISH_TIMEOUT_S)
        pubsub.ack(names.dead(batch_id), [m.ack_id for m in msgs])
        moved.update(int(m.attributes["part"]) for m in msgs if m.attributes.get("part", "").isdigit())
