"""The worker's pull loop: pull as many parts as there are free slots, hand each to a
slot, and stop when the subscription is drained or a signal says so.

Synchronous pull (not StreamingPull), decided by measurement (see
``bench/worker_drain.py``): on the same data it keeps up with a plain pull/ack loop,
and it makes the drain rule exact: the worker holds only what it pulled, so "nothing
in flight and N consecutive empty pulls" is a fact, not a guess about a stream's
buffer. Only an *answered* empty pull counts: a pull that times out is asked again
with ``return_immediately`` (Pub/Sub may hold an empty pull past a short deadline),
and if that gets no answer either, the network is stalled, not the queue empty.
Empty pulls are spaced at least ``pull_timeout_s`` apart, so drain takes about
``empty_pulls * pull_timeout_s`` whether the server holds an empty pull (Pub/Sub) or
answers it at once (the emulator, for short timeouts).

Pulls that get no answer (a timeout, UNAVAILABLE, or another code the client retries)
are retried with backoff for ``unreachable_s``, then the worker exits 3.
Every exit other than "drained" first gives running parts the drain budget.

Exit: ``drained`` (0), ``terminated`` by a signal (143: not drained, see
``batchctl.core.errors.EXIT_TERMINATED``), ``part_timeout`` (1: a handler ran past
``part_timeout_s`` and cannot be stopped), ``crash`` (1; 2 when the subscription or
events topic does not exist, 3 when Pub/Sub stays unreachable).
"""

from __future__ import annotations

import time
from typing import Any

from batchctl.core.errors import EXIT_FAILED, EXIT_OK, EXIT_TERMINATED, BatchctlError, Unreachable
from batchctl.core.messages import EXIT_ERROR_PREFIX
from batchctl.core.pubsub import PubSub, PullUnanswered, Received
from batchctl.core.sink import Sink
from batchctl.core.topology import BatchTopology
from batchctl.worker import prefetch
from batchctl.worker.config import WorkerConfig
from batchctl.worker.drain import DrainTracker, RetryPolicy
from batchctl.worker.events import Events
from batchctl.worker.handler import Handler
from batchctl.worker.lease import Held, Leases
from batchctl.worker.part import Part, PartRejected, decode_part, part_index
from batchctl.worker.results import result_of
from batchctl.worker.settlement import Settler
from batchctl.worker.shutdown import Shutdown
from batchctl.worker.slots import Slots
from batchctl.worker.solo import Solo
from batchctl.worker.writer import Job, ResultWriter, writers_for

MAX_SETTLING = 500
"""Handled parts awaiting their event and ack, beyond the busy slots, before pulling pauses."""
EVENT_TIMEOUT_S = 30.0
EXIT_EVENT_TIMEOUT_S = 5.0
"""Waiting for ``worker_exited``: short, it must fit in the grace period after the drain budget."""
EXIT_CODES = {"drained": EXIT_OK, "terminated": EXIT_TERMINATED}
"""Exit code by reason; any other reason (``part_timeout``, ``crash``) exits 1."""
_TOPOLOGY = BatchTopology()


def retry_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th unanswered pull in a row: 0.25 s doubling, at most 4 s."""
    return min(4.0, 0.25 * 2 ** max(0, failures - 1))


class Worker:
    """One worker process's runtime; ``run()`` returns the exit code."""

    def __init__(
        self,
        config: WorkerConfig,
        pubsub: PubSub,
        handler: Handler,
        *,
        shutdown: Shutdown,
        log: Any,
        sink: Sink | None = None,
    ) -> None:
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
        hold_s = max(config.lease_s, config.ack_deadline_s or _TOPOLOGY.ack_deadline_s)
        self.settler = Settler(self.leases, self.events, self.drain, log, hold_s=hold_s)
        self.part_times = prefetch.PartTimes()
        self.slots: Slots[Held] = Slots(
            config.concurrency, self._process, on_crash=self._slot_crashed, queued=self._window()
        )
        self.writer = None if sink is None else ResultWriter(
            sink.write_part, written=self._written, failed=self._write_failed, log=log,
            writers=writers_for(remote=sink.remote, configured=config.writers),
        )
        """With ``--output``: writes each part's result, off its slot, before the part is reported done."""
        self.solo = Solo(self.leases, self.slots, self.drain, self.events, log)
        """Redelivered parts run alone (``batchctl.worker.solo``)."""
        self._unanswered_since: float | None = None
        self._unanswered = 0
        self._timed_out: list[int | None] = []

    def run(self) -> int:
        """Start, loop until drained or stopped, settle, report; never raises."""
        reason = "crash"
        try:
            self._start()
            reason = self._loop()
        except BatchctlError as exc:
            self.log.error("worker_failed", error=str(exc), exit_code=exc.exit_code)
            reason = f"{EXIT_ERROR_PREFIX}{exc}"
            self._finish(reason)
            return exc.exit_code
        except Exception:
            self.log.exception("worker_crashed")
        self._finish(reason)
        return EXIT_CODES.get(reason, EXIT_FAILED)

    def _start(self) -> None:
        self.leases.start()
        self.settler.start()
        self.slots.start()
        if self.writer is not None:
            self.writer.start()
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
        """The work subscription's retry and dead-letter policy: as the launcher passed it, else
        read from the subscription, else the topology's defaults.

        Reading it needs ``pubsub.subscriptions.get``, which a worker's account may lack;
        it only tunes how long nacked parts are awaited, so any failure falls back.
        """
        if self.config.max_delivery_attempts is not None:
            return RetryPolicy(max_delivery_attempts=self.config.max_delivery_attempts)
        try:
            spec = self.pubsub.subscription_spec(self.config.subscription)
        except Exception as exc:  # see above: never fatal
            self.log.info("retry_policy_defaulted", error=f"{type(exc).__name__}: {exc}")
            return RetryPolicy()
        attempts = spec.max_delivery_attempts if spec.dead_letter_topic else None
        return RetryPolicy(spec.min_backoff_s, spec.max_backoff_s, attempts)

    def _loop(self) -> str:
        """Pull and dispatch until drained (``drained``), asked to stop (``terminated``), or a
        handler overran its timeout (``part_timeout``)."""
        while not self.shutdown.requested:
            if self._check_timeouts():
                return "part_timeout"
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
        """Room for more parts (free slots plus the prefetch window), waiting briefly for some; 0 while
        too many handled parts await their ack or the waiting parts fill the window's bytes."""
        limit = self.slots.capacity + MAX_SETTLING
        if not self.leases.wait_below(limit, timeout=0.2):
            return 0
        window = self._window()
        self.slots.capacity = self.slots.size + window
        room = self.slots.wait_room(max(1, window // 2), timeout=0.2)
        if room and self.leases.waiting_bytes() > self.config.prefetch_bytes:
            return 0
        return self.solo.pull_size(room) if room else 0

    def _window(self) -> int:
        return prefetch.window(
            concurrency=self.config.concurrency, average_part_s=self.part_times.average, fixed=self.config.prefetch
        )

    # ---- pulling ---------------------------------------------------------------------
    def _pull(self, max_messages: int) -> list[Received] | None:
        """One answered pull, or None (not an empty pull) while Pub/Sub does not answer."""
        try:
            messages = self._pull_answered(max_messages)
        except Unreachable as exc:
            self._pull_unanswered(exc)
            return None
        self._unanswered_since, self._unanswered = None, 0
        return messages

    def _pull_answered(self, max_messages: int) -> list[Received]:
        """A pull; if it times out, one more that must answer at once (an empty queue does)."""
        subscription, pull_timeout = self.config.subscription, self.config.pull_timeout_s
        try:
            return self.pubsub.pull_answered(subscription, max_messages=max_messages, timeout_s=pull_timeout)
        except PullUnanswered as exc:
            if not exc.timed_out:
                raise
        return self.pubsub.pull_answered(
            subscription, max_messages=max_messages, timeout_s=pull_timeout, return_immediately=True
        )

    def _pull_unanswered(self, exc: Unreachable) -> None:
        """Back off and try again, until pulls have gone unanswered for the tolerance (then exit 3)."""
        now = time.monotonic()
        self._unanswered_since = self._unanswered_since or now
        if now - self._unanswered_since > self.config.unreachable_s:
            raise Unreachable(f"{exc} (for {self.config.unreachable_s:g} s)") from exc
        self._unanswered += 1
        delay = retry_delay(self._unanswered)
        self.log.warning("pull_unreachable", error=str(exc), retry_in_s=delay)
        self.shutdown.wait(delay)

    def _dispatch(self, messages: list[Received]) -> None:
        self.drain.received([m.message_id for m in messages])
        self.solo.pulled(messages)
        if self.settler.tally.first_pull_at is None:
            self.settler.tally.first_pull_at = time.time()
            self.settler.tally.cpu_at_first_pull = time.process_time()
        for held in self.leases.add(messages):
            self.slots.submit(held)

    # ---- one part, on a slot ---------------------------------------------------------------
    def _process(self, held: Held) -> None:
        """Runs on a slot: the part now, or (a redelivery) later or alone."""
        self.solo.run(held, self._run_part)

    def _run_part(self, held: Held) -> None:
        """Decode, call the handler, hand the outcome to the settler."""
        if not self.leases.begin(held):  # given back while it waited (a stop)
            return
        assert held.started_at is not None
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
            self._failed(held, exc.index, exc.reason)
            return
        log = self.log.bind(part=part.index, attempt=part.attempt)
        try:
            value = self._run_handler(part)
            job = None if self.writer is None else Job(held, part.index, part.attempt, result_of(value))
        except BaseException as exc:  # a handler's SystemExit must not kill its slot
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("part_failed", reason=reason, seconds=round(time.monotonic() - held.started_at, 3))
            self._failed(held, part.index, reason)
            return
        seconds = time.monotonic() - held.started_at
        self.part_times.add(seconds)
        if job is not None and self.writer is not None:
            self.writer.submit(job)  # blocks while the writers are full; ``_written`` reports it done
            return
        log.info("part_done", seconds=round(seconds, 3))
        if self.leases.claim(held):
            self.settler.done(held, part.index, part.attempt)

    def _written(self, job: Job) -> None:
        """A writer wrote the part's result: now it is done (its event, then its ack)."""
        held = job.held
        seconds = time.monotonic() - (held.started_at or held.pulled_at)
        self.log.info("part_done", part=job.index, attempt=job.attempt, seconds=round(seconds, 3))
        if self.leases.claim(held):
            self.settler.done(held, job.index, job.attempt)

    def _write_failed(self, job: Job, reason: str) -> None:
        self.log.warning("part_failed", part=job.index, attempt=job.attempt, reason=reason)
        self._failed(job.held, job.index, reason)

    def _run_handler(self, part: Part) -> object:
        """The one place the user's handler is called; returns what it returned."""
        return self.handler(part)

    def _failed(self, held: Held, index: int | None, reason: str) -> None:
        if self.leases.claim(held):
            self.settler.failed(held, index, held.received.delivery_attempt, reason)

    def _slot_crashed(self, held: Held, exc: BaseException) -> None:
        """A worker bug escaped ``_process``: nack the part rather than hold it forever."""
        index = part_index(held.received.attributes)
        self.log.error("part_crashed", part=index, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        self._failed(held, index, f"worker error: {type(exc).__name__}: {exc}")

    def _check_timeouts(self) -> bool:
        """Nack parts whose handler overran ``part_timeout_s``; True once any has."""
        limit = self.config.part_timeout_s
        for held in self.leases.overdue(now=time.monotonic(), limit_s=limit):
            index = part_index(held.received.attributes)
            self.log.error("part_timed_out", part=index, timeout_s=limit, attempt=held.received.delivery_attempt)
            self._failed(held, index, f"timed out after {limit:g} s (the handler did not return)")
            self._timed_out.append(index)
        return bool(self._timed_out)

    # ---- exit --------------------------------------------------------------------------
    def _finish(self, reason: str) -> None:
        """Let running parts finish within the drain budget (on any exit but drained),
        nack the rest, report."""
        if reason != "drained":
            self.leases.give_back_waiting()
            budget = self.shutdown.remaining() if self.shutdown.requested else self.config.drain_budget_s
            self.leases.wait_below(1, timeout=budget)
        abandoned = self.leases.abandon_all()
        if self.writer is not None:
            self.writer.stop()  # parts still waiting were just nacked; a write under way ends unacked
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
            timed_out=self._timed_out,
            first_pull_at=tally.first_pull_at,
            last_ack_at=tally.last_ack_at,
            drain_cpu_s=_difference(tally.cpu_at_last_ack, tally.cpu_at_first_pull),
        )


def _difference(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else round(end - start, 6)
