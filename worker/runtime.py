"""The worker's pull loop: pull as many parts as there are free slots, hand each to a
slot, and stop when the subscription is drained or a signal says so.

Synchronous pull (not StreamingPull), decided by measurement (see
``bench/worker_drain.py``): on the same data it keeps up with a plain pull/ack loop,
and it makes the drain rule exact: the worker holds only what it pulled, so "nothing
in flight and N consecutive empty pulls" is a fact, not a guess about a stream's
buffer. Empty pulls are spaced at least ``pull_timeout_s`` apart, so drain takes
about ``empty_pulls * pull_timeout_s`` whether the server holds an empty pull
(Pub/Sub) or answers it at once (the emulator, for short timeouts).

Exit: ``drained`` (0), ``terminated`` by a signal (143: not drained, see
``batchctl.core.errors.EXIT_TERMINATED``), ``crash`` (1; 2 when the
subscription or events topic does not exist, 3 when Pub/Sub stays unreachable).
"""

from __future__ import annotations

import time
from typing import Any

from batchctl.core.errors import EXIT_FAILED, EXIT_OK, EXIT_TERMINATED, BatchctlError, Unreachable
from batchctl.core.messages import EXIT_ERROR_PREFIX
from batchctl.core.pubsub import PubSub, Received
from batchctl.worker.config import WorkerConfig
from batchctl.worker.drain import DrainTracker, RetryPolicy
from batchctl.worker.events import Events
from batchctl.worker.handler import Handler
from batchctl.worker.lease import Held, Leases
from batchctl.worker.part import PartRejected, decode_part, part_index
from batchctl.worker.settlement import Settler
from batchctl.worker.shutdown import Shutdown
from batchctl.worker.slots import Slots

MAX_SETTLING = 500
"""Handled parts awaiting their event and ack, beyond the busy slots, before pulling pauses."""
EVENT_TIMEOUT_S = 30.0
EXIT_EVENT_TIMEOUT_S = 5.0
"""Waiting for ``worker_exited``: short, it must fit in the grace period after the drain budget."""


class Worker:
    """One worker process's runtime; ``run()`` returns the exit code."""

    def __init__(self, config: WorkerConfig, pubsub: PubSub, handler: Handler, *, shutdown: Shutdown, log: Any) -> None:
        self.config = config
        self.pubsub = pubsub
        self.handler = handler
        self.shutdown = shutdown
        self.log = log
        self.leases = Leases(
            pubsub, config.subscription, lease_s=config.lease_s, renew_every_s=config.renew_every_s, log=log
        )
        self.events = Events(pubsub, batch_id=config.batch_id, worker_id=config.worker_id)
        self.drain = DrainTracker(config.empty_pulls)
        self.settler = Settler(self.leases, self.events, self.drain, log)
        self.slots: Slots[Held] = Slots(config.concurrency, self._process)
        self._unreachable_since: float | None = None

    def run(self) -> int:
        """Start, loop until drained or stopped, settle, report; never raises."""
        reason, code = "crash", EXIT_FAILED
        try:
            self._start()
            reason = self._loop()
            code = EXIT_OK if reason == "drained" else EXIT_TERMINATED
        except BatchctlError as exc:
            self.log.error("worker_failed", error=str(exc), exit_code=exc.exit_code)
            reason, code = f"{EXIT_ERROR_PREFIX}{exc}", exc.exit_code
        except Exception:
            self.log.exception("worker_crashed")
        self._finish(reason)
        return code

    def _start(self) -> None:
        self.leases.start()
        self.settler.start()
        self.slots.start()
        self.drain.policy = self._retry_policy()
        self.events.started(timeout_s=EVENT_TIMEOUT_S)
        self.log.info(
            "worker_started",
            subscription=self.config.subscription,
            handler=self.config.handler,
            concurrency=self.config.concurrency,
            retry_policy=self.drain.policy,
        )

    def _retry_policy(self) -> RetryPolicy:
        """The work subscription's retry and dead-letter policy, or the topology's defaults.

        Reading it needs ``pubsub.subscriptions.get``, which a worker's account may lack;
        it only tunes how long nacked parts are awaited, so any failure falls back.
        """
        try:
            spec = self.pubsub.subscription_spec(self.config.subscription)
        except Exception as exc:  # see above: never fatal
            self.log.info("retry_policy_defaulted", error=f"{type(exc).__name__}: {exc}")
            return RetryPolicy()
        attempts = spec.max_delivery_attempts if spec.dead_letter_topic else None
        return RetryPolicy(spec.min_backoff_s, spec.max_backoff_s, attempts)

    def _loop(self) -> str:
        """Pull and dispatch until drained (returns ``drained``) or asked to stop (``terminated``)."""
        while not self.shutdown.requested:
            free = self._free_slots()
            if not free:
                continue
            started = time.monotonic()
            messages = self._pull(free)
            if self.shutdown.requested:
                self.leases.give_back(messages or [])
                break
            if messages:
                self._dispatch(messages)
                continue
            in_flight = self.leases.count()
            if messages is not None and self.drain.empty_pull(in_flight=in_flight, now=time.monotonic()):
                return "drained"
            self.shutdown.wait(started + self.config.pull_timeout_s - time.monotonic())
        self.log.info("stop_requested", signal=self.shutdown.cause, in_flight=self.leases.count())
        return "terminated"

    def _free_slots(self) -> int:
        """Free slots, waiting briefly for one; 0 while too many handled parts await their ack."""
        limit = self.config.concurrency + MAX_SETTLING
        if not self.leases.wait_below(limit, timeout=0.2):
            return 0
        return self.slots.wait_free(timeout=0.2)

    def _pull(self, max_messages: int) -> list[Received] | None:
        """One pull; None (not an empty pull) while Pub/Sub is briefly unreachable."""
        try:
            messages = self.pubsub.pull(
                self.config.subscription, max_messages=max_messages, timeout_s=self.config.pull_timeout_s
            )
        except Unreachable as exc:
            now = time.monotonic()
            self._unreachable_since = self._unreachable_since or now
            if now - self._unreachable_since > self.config.unreachable_s:
                raise
            self.log.warning("pull_unreachable", error=str(exc))
            self.shutdown.wait(1.0)
            return None
        self._unreachable_since = None
        return messages

    def _dispatch(self, messages: list[Received]) -> None:
        self.drain.received([m.message_id for m in messages])
        if self.settler.tally.first_pull_at is None:
            self.settler.tally.first_pull_at = time.time()
        for held in self.leases.add(messages):
            self.slots.submit(held)

    def _process(self, held: Held) -> None:
        """Runs on a slot; a worker bug here nacks the part instead of holding it forever."""
        try:
            self._handle(held)
        except Exception as exc:
            self.log.exception("part_crashed", part=part_index(held.received.attributes))
            reason = f"worker error: {type(exc).__name__}: {exc}"
            self.settler.failed(held, part_index(held.received.attributes), held.received.delivery_attempt, reason)

    def _handle(self, held: Held) -> None:
        """Decode, call the handler, hand the outcome to the settler."""
        received = held.received
        try:
            part = decode_part(
                received.data,
                received.attributes,
                batch_id=self.config.batch_id,
                attempt=received.delivery_attempt,
                results_dir=self.config.results_dir,
            )
        except PartRejected as exc:
            self.log.warning("part_rejected", part=exc.index, attempt=received.delivery_attempt, reason=exc.reason)
            self.settler.failed(held, exc.index, received.delivery_attempt, exc.reason)
            return
        log = self.log.bind(part=part.index, attempt=part.attempt)
        started = time.monotonic()
        try:
            self.handler(part)
        except BaseException as exc:  # a handler's SystemExit must not kill its slot
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("part_failed", reason=reason, seconds=round(time.monotonic() - started, 3))
            self.settler.failed(held, part.index, part.attempt, reason)
            return
        log.info("part_done", seconds=round(time.monotonic() - started, 3))
        self.settler.done(held, part.index, part.attempt)

    def _finish(self, reason: str) -> None:
        """Let in-flight parts finish within the budget (after a signal), nack the rest, report."""
        if reason == "terminated":
            self.leases.wait_below(1, timeout=self.shutdown.remaining())
        abandoned = self.leases.abandon_all()
        self.settler.stop()
        self.leases.stop()
        try:
            self.events.exited(reason, timeout_s=EXIT_EVENT_TIMEOUT_S)
        except Exception as exc:  # the exit itself must still happen
            self.log.warning("event_not_published", event_type="worker_exited", error=f"{type(exc).__name__}: {exc}")
        tally = self.settler.tally
        self.log.info(
            "worker_exited",
            reason=reason,
            parts_done=tally.done,
            parts_failed=tally.failed,
            parts_given_back=abandoned,
            first_pull_at=tally.first_pull_at,
            last_ack_at=tally.last_ack_at,
        )
