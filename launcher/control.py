"""Act on control messages: launch (admit and store the batch, or reject it), cancel, retry.

The caller acks a control message only after this returns, i.e. after its effect
is stored; a redelivered message finds the effect done and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from batchctl.core import logs, topology
from batchctl.core.admission import Rejection, check_request
from batchctl.core.errors import BatchctlError
from batchctl.core.messages import BatchRequest, Control
from batchctl.core.profiles import Profile
from batchctl.core.pubsub import PubSub, ResourceMissing
from batchctl.launcher.backend import Backend
from batchctl.launcher.metrics import Metrics
from batchctl.launcher.state import CANCELLED, FAILED, REJECTED, RUNNING, TERMINAL, BatchState, reverting
from batchctl.launcher.store import StateStore

DEAD_LETTER_WAIT_S = 10.0
PERMANENT = (ResourceMissing,)
"""Errors a control message meets again on every delivery (a topic or subscription that is gone):
recorded on the batch and acked, not given back to come back for the 7 days of retention."""


class Controller:
    def __init__(self, pubsub: PubSub, store: StateStore, backend: Backend,
                 batches: MutableMapping[str, BatchState], *, profiles: Mapping[str, Profile],
                 metrics: Metrics) -> None:
        self.pubsub, self.store, self.backend, self.batches = pubsub, store, backend, batches
        self.profiles, self.metrics = profiles, metrics

    def handle(self, control: Control, message_id: str = "") -> None:
        log = logs.get("control", batch_id=control.batch_id, action=control.action)
        if control.action == "launch" and control.request is not None:
            rejection = check_request(control.request, self.profiles)
            if rejection is not None:
                self.refuse(control.batch_id, rejection, message_id, request=control.request)
                return
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
        with reverting(batch):
            if control.action == "cancel":
                self.cancel(batch, log)
            elif control.action == "retry":
                self.retry(batch, log)

    def record_failure(self, control: Control, exc: Exception) -> None:
        """Store why ``control`` can never take effect as its batch's reason (state unchanged)."""
        log = logs.get("control", batch_id=control.batch_id, action=control.action)
        log.warning("control_failed_permanently", error=str(exc))
        batch = self.batches.get(control.batch_id) or self.store.load(control.batch_id)
        if batch is None:
            return
        self.batches[batch.batch_id] = batch
        with reverting(batch):
            batch.reason = f"{control.action} failed: {exc}"
            self.store.save(batch)

    def refuse(self, batch_id: str | None, rejection: Rejection, message_id: str,
               request: BatchRequest | None = None) -> None:
        """Log and count a refused request; end the batch it names ``rejected`` (stored first, then
        its topics and subscriptions deleted). A batch that exists already is left as it is: a
        replayed or forged request changes nothing but the count."""
        log = logs.get("control", batch_id=batch_id)
        self.metrics.requests_rejected.labels(rule=rejection.rule).inc()
        if batch_id is None:
            log.warning("request_dropped", rule=rejection.rule, reason=rejection.reason, message_id=message_id)
            return
        log.warning("request_rejected", rule=rejection.rule, reason=rejection.reason, message_id=message_id)
        request = request or BatchRequest(batch_id=batch_id, parts=0, records=0, bytes=0, handler="")
        rejected = BatchState(request, state=REJECTED, reason=rejection.reason, created=request.created,
                              finished=time.time())
        # Not created: the batch exists. A redelivery of this rejection finishes its own cleanup.
        state = rejected if self.store.create(rejected) else self.store.load(batch_id)
        if state is None or state.state != REJECTED or state.cleaned:
            return
        topology.delete_batch(self.pubsub, batch_id)
        state.cleaned = True
        self.store.save(state)
        self.batches[batch_id] = state

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
        if batch.state in (CANCELLED, REJECTED):
            log.warning("retry_ignored", state=batch.state)
            return
        if batch.corrupt:
            log.warning("retry_of_unreadable_batch_ignored", reason=batch.reason)
            return
        expected = batch.dead - batch.done
        dead_sub = self.pubsub.settings.names.dead(batch.batch_id)
        moved, held = republish_dead(self.pubsub, batch.batch_id, expected)
        try:
            batch.dead -= moved
            batch.last_tries -= moved  # republished: a new message, its delivery attempts start again
            batch.retries += 1
            batch.dead_checked = batch.retry_floor = len(batch.jobs)
            if batch.remaining > 0:
                batch.state, batch.finished, batch.reason = RUNNING, None, ""
            self.store.save(batch)
        except BaseException:  # not stored: the dead copies stay dead-lettered for the next try
            for i in range(0, len(held), 1000):
                self.pubsub.nack(dead_sub, held[i : i + 1000])
            raise
        for i in range(0, len(held), 1000):  # only once the move is stored
            self.pubsub.ack(dead_sub, held[i : i + 1000])
        log.info("batch_retried", republished=len(moved), expected=len(expected))


def republish_dead(pubsub: PubSub, batch_id: str, expected: set[int],
                   wait_s: float = DEAD_LETTER_WAIT_S) -> tuple[set[int], list[str]]:
    """Copy dead-lettered parts back to the work topic; return the parts and the dead copies' ack
    ids, which the caller acks only once the move is stored (or nacks if it is not).

    Pub/Sub moves a part to the dead-letter topic when it would deliver it once more
    after the last allowed attempt, so a part reported dead is only forwarded once
    someone pulls the work subscription: with no worker left, ``nudge`` does that.
    Keep going until every ``expected`` part came, or ``wait_s`` (well inside the requests
    subscription's 20 s ack deadline: a retry must not outlive its own message's lease).
    """
    names = pubsub.settings.names
    moved: set[int] = set()
    held: list[str] = []
    deadline = time.monotonic() + wait_s
    while True:
        msgs = pubsub.pull(names.dead(batch_id), max_messages=500, timeout_s=1.0)
        if not msgs:
            if expected <= moved or time.monotonic() > deadline:
                return moved, held
            nudge(pubsub, names.work(batch_id))
            continue
        pubsub.publish_many(names.work(batch_id), ((m.data, m.attributes) for m in msgs), what="dead part")
        held.extend(m.ack_id for m in msgs)
        moved.update(int(m.attributes["part"]) for m in msgs if m.attributes.get("part", "").isdigit())


def nudge(pubsub: PubSub, subscription: str) -> list[int]:
    """Pull once and give everything back: makes Pub/Sub forward parts past their last attempt.

    Returns the delivery attempt of each part given back: each is now in its retry backoff, out
    of any worker's sight for a while (``planner.redelivered_by``)."""
    try:
        msgs = pubsub.pull(subscription, max_messages=100, timeout_s=0.5)
    except BatchctlError:
        return []
    pubsub.nack(subscription, [m.ack_id for m in msgs])
    if not msgs:
        time.sleep(0.2)
    return [m.delivery_attempt for m in msgs]
