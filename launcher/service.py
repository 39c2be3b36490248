"""The launcher's main loop: while leader, take requests and events, reconcile every batch.

Pullers (``launcher.inbox``) feed the loop; it applies requests and events in order, saves what
changed, acks only what is stored, then reconciles every unfinished batch. The store is the
truth: a change whose save fails is reverted in memory and its message held (``launcher.held``),
applied again on a later pass, never nacked unless the error may never pass. Errors are
contained per message and per batch (``launcher.failures``); a lost leadership gives back what
was pulled and holds; every side effect is fenced on holding the Lease (``launcher.fence``). A
message held because a dependency was unreachable (the API down, or throttling) pauses the taking
of messages for a backoff (``failures.retry_wait``: Retry-After, else 1, 2, 4... s up to 8 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from batchctl.core import logs, topology
from batchctl.core.admission import Rejection, batch_named, check_size, malformed
from batchctl.core.errors import BadInput, BatchctlError, Unreachable
from batchctl.core.messages import decode_control, decode_event
from batchctl.core.profiles import Profile
from batchctl.core.pubsub import PubSub, Received
from batchctl.core.settings import Settings
from batchctl.launcher import failpoints, failures
from batchctl.launcher.allocation import budget_from_env
from batchctl.launcher.backend import Backend
from batchctl.launcher.control import PERMANENT, Controller
from batchctl.launcher.fence import FencedBackend, FencedStore
from batchctl.launcher.held import HeldMessages
from batchctl.launcher.inbox import Inbox
from batchctl.launcher.kube import Conflict
from batchctl.launcher.metrics import Metrics
from batchctl.launcher.planner import Finish
from batchctl.launcher.progress import apply_events
from batchctl.launcher.reconciler import Reconciler
from batchctl.launcher.retention import Retention, retention_from_env
from batchctl.launcher.sharing import Sharing
from batchctl.launcher.state import CANCELLED, FAILED, REJECTED, SUCCEEDED, TERMINAL, BatchState
from batchctl.launcher.store import StateStore, ended, settled

CHORE_RETRY_S = 2.0
"""How often a start-up step that met an outage is tried again."""
SETTLED_HELD_S = 300.0
"""How long a settled batch (finished, cleaned up) stays in memory: a worker's late exit error
still reaches its reason; after that only the store keeps it, so history costs no memory or tick."""


class Elector(Protocol):
    """What the loop needs of leader election (``launcher.leader``)."""

    @property
    def is_leader(self) -> bool: ...
    watching: bool
    inherited: bool
    """This term took over from a holder that may have died with a pull pending (see ``leader``)."""

    def start(self) -> threading.Thread: ...
    def stop(self, *, release: bool = True) -> None: ...


@dataclass(frozen=True)
class Tuning:
    tick_s: float = 0.5
    """Reconcile at least this often when nothing wakes the loop."""
    pull_timeout_s: float = 5.0
    max_events: int = 1000


class Launcher:
    def __init__(self, settings: Settings, pubsub: PubSub, store: StateStore, backend: Backend,
                 elector: Elector, *, metrics: Metrics | None = None, tuning: Tuning = Tuning(),
                 wake: threading.Event | None = None, profiles: Mapping[str, Profile] | None = None,
                 chores: list[Callable[[], object]] | None = None) -> None:
        self.settings, self.pubsub, self.elector, self.tuning = settings, pubsub, elector, tuning
        self.chores: list[Callable[[], object]] = [partial(topology.ensure_shared, pubsub), *(chores or [])]
        """Start-up steps that need Pub/Sub or the API, done in order, each retried until it succeeds."""
        self._chores_at = 0.0
        self.store = FencedStore(store, elector)
        self.backend = FencedBackend(backend, elector)
        self.metrics = metrics or Metrics()
        self.batches: dict[str, BatchState] = {}
        if profiles is None:
            from batchctl.launcher.app import open_profiles

            profiles = open_profiles(settings)
        budget = budget_from_env(settings.environ)
        pools = {name: p.max_workers for name, p in profiles.items() if p.max_workers is not None}
        kueue = bool(settings.environ.get("BATCHCTL_KUEUE_QUEUE", "").strip())  # Kueue owns admitted Jobs
        self.sharing = (Sharing(budget, self.backend, self.store, self.metrics, resize=not kueue, pools=pools)
                        if budget is not None or pools else None)
        self.reconciler = Reconciler(settings, pubsub, self.store, self.backend, self.metrics, sharing=self.sharing)
        self.controller = Controller(pubsub, self.store, self.backend, self.batches, profiles=profiles,
                                     metrics=self.metrics)
        self.retention = Retention(pubsub, self.store, self.backend, retention_from_env(settings.environ))
        self.wake = wake or backend.changed
        self.stopping = threading.Event()
        names = settings.names
        self.inbox = Inbox(pubsub, (names.requests_subscription, names.events_subscription),
                           active=self._taking, wake=self.wake, stopping=self.stopping,
                           pull_timeout_s=tuning.pull_timeout_s, max_messages=tuning.max_events)
        self.held = HeldMessages(pubsub, names.events_subscription)
        self.held_requests = HeldMessages(pubsub, names.requests_subscription)
        self.last_loop = time.monotonic()
        self.log = logs.get("launcher")
        self._leading = False
        self._loaded = False
        self._elector_thread: threading.Thread | None = None
        self._tries: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._quiet_until = 0.0
        self._intake_tries = 0
        """Consecutive messages given back because a dependency was unreachable."""
        self._intake_after = 0.0
        """Monotonic time before which no request or event is taken (``_intake_failed``)."""

    # ---- lifecycle -------------------------------------------------------------------
    def run(self) -> None:
        """Run until ``stop()``; returns after a clean shutdown."""
        self._do_chores()
        self._elector_thread = self.elector.start()
        self.inbox.start()
        self.log.info("launcher_started", backend=self.settings.backend, namespace=self.settings.namespace)
        try:
            while not self.stopping.is_set():
                self.last_loop = time.monotonic()
                self.wake.wait(self.tuning.tick_s)
                self.wake.clear()
                self._step()
        finally:
            self.inbox.join()
            self._give_back_all()
            self.elector.stop(release=True)
            self.backend.close()
            self.log.info("launcher_stopped")

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def healthy(self) -> bool:
        """The loop turns and no background thread has died (else the pod must be restarted)."""
        elector_alive = self._elector_thread is None or self._elector_thread.is_alive()
        return time.monotonic() - self.last_loop < 60 and elector_alive and self.inbox.alive()

    def ready(self, checks: list[Callable[[], object]]) -> bool:
        try:
            for check in checks:
                check()
        except BatchctlError:
            return False
        return bool(self.elector.watching)

    def _do_chores(self) -> None:
        """The start-up steps not done yet, in order; one that meets an outage waits for a later pass
        (at most every ``CHORE_RETRY_S``): a launcher started while Pub/Sub or the API is away runs on."""
        if time.monotonic() < self._chores_at:
            return
        while self.chores:
            try:
                self.chores[0]()
            except Unreachable as exc:
                self._chores_at = time.monotonic() + CHORE_RETRY_S
                self.log.warning("startup_step_deferred", step=getattr(self.chores[0], "func", self.chores[0]).__name__,
                                 error=str(exc))
                return
            self.chores.pop(0)

    # ---- one pass --------------------------------------------------------------------
    def _step(self) -> None:
        if self.chores:
            self._do_chores()
        leading = self.elector.is_leader
        self.metrics.is_leader.set(1 if leading else 0)
        if leading != self._leading:
            self._loaded = False
            self.inbox.forget_empty_pulls()
        self._leading = leading
        if not leading:
            given = self._give_back_all()
            if given:
                self.log.info("inbox_given_back", messages=given)
            return
        self.held_requests.keep_leased()
        self.held.keep_leased()
        try:
            if not self._loaded:
                self._take_over()
            if self._taking():
                self._consume()
            self._reconcile_all()
            self.retention.sweep(self.batches)
        except BatchctlError as exc:
            self.metrics.reconcile_errors.inc()
            self.log.warning("reconcile_failed", error=str(exc))
        except Exception:  # a bug must cost one pass, not the service
            self.metrics.reconcile_errors.inc()
            self.log.exception("reconcile_crashed")

    def _take_over(self) -> None:
        """(Re)load every batch from the store but the settled ones: the store, not memory, is the truth."""
        loaded = self.store.load_unsettled()
        self.batches.clear()
        self.batches.update({b.batch_id: b for b in loaded})
        self._tries.clear()
        self._not_before.clear()
        self.reconciler.new_term()
        stale_s = self._stale_pull_s() if self.elector.inherited else 0.0
        self.inbox.forget_empty_pulls(until=time.monotonic() + stale_s)
        self._loaded = True
        running = [b.batch_id for b in loaded if b.state not in TERMINAL]
        corrupt = [b.batch_id for b in loaded if b.corrupt]
        self.log.info("batches_loaded", total=len(loaded), running=len(running), unreadable=corrupt,
                      events_settle_s=stale_s)

    def _give_back_all(self) -> int:
        """Nack every message this replica holds (held after a failed save, or queued by the
        pullers): the next leader needs them now. Returns how many."""
        return self.inbox.give_back(self.held_requests.release() + self.held.release()) + self.inbox.give_back()

    def _taking(self) -> bool:
        """Leading, and not pausing after a message was given back to an unreachable dependency."""
        return self._leading and time.monotonic() >= self._intake_after

    def _intake_failed(self, exc: Exception) -> None:
        """A message was given back: if a dependency was unreachable, pause taking messages (what
        comes back at once would meet the same outage, a tight loop of nacks and failed writes)."""
        if not isinstance(exc, Unreachable):
            return
        self._intake_tries += 1
        wait = failures.retry_wait(exc, self._intake_tries)
        self._intake_after = time.monotonic() + wait
        self.log.warning("intake_paused", tries=self._intake_tries, wait_s=wait, error=str(exc))

    def _stale_pull_s(self) -> float:
        """How long events may stay out of sight after a takeover: the previous leader's last pull
        may be pending (for its pull timeout) and lease what it takes for one ack deadline."""
        try:
            deadline = self.pubsub.subscription_spec(self.settings.names.events_subscription).ack_deadline_s
        except Exception as exc:  # never blocks a takeover (e.g. no subscriptions.get): the shared default
            self.log.warning("events_deadline_unknown", error=str(exc))
            deadline = topology.LAUNCHER_ACK_DEADLINE_S
        return self.tuning.pull_timeout_s + deadline

    def _reload(self, batch_id: str) -> None:
        """Someone else wrote this batch (Conflict): take the store's version."""
        try:
            fresh = self.store.load(batch_id)
        except BatchctlError as exc:
            self.log.warning("reload_failed", batch_id=batch_id, error=str(exc))
            self._loaded = False
            return
        if fresh is None:
            self.batches.pop(batch_id, None)
        else:
            self.batches[batch_id] = fresh

    def _consume(self) -> None:
        names = self.settings.names
        drained = self.inbox.empty_pull_started(names.events_subscription)  # before take(): see inbox.py
        taken = self.inbox.take()
        for msg in self.held_requests.take([msg for sub, msg in taken if sub == names.requests_subscription]):
            self._control(msg)
        events = self.held.take([msg for sub, msg in taken if sub == names.events_subscription])
        if not events or self._events(events):
            self.reconciler.accounted_until = max(self.reconciler.accounted_until, drained)

    def _control(self, msg: Received) -> None:
        """Apply one request and ack it once its effect is stored; on an error, give it back."""
        sub = self.settings.names.requests_subscription
        rejection: Rejection | None = check_size(len(msg.data))
        if rejection is None:
            try:
                control = decode_control(msg.data, msg.attributes)
            except BadInput as exc:
                rejection = malformed(exc)
        if rejection is not None:
            try:
                self.controller.refuse(batch_named(msg.data, msg.attributes), rejection, msg.message_id)
            except Exception as exc:
                self._control_failed(batch_named(msg.data, msg.attributes) or "", exc, msg)
                return
            self.pubsub.ack(sub, [msg.ack_id])
            return
        try:
            try:
                self.controller.handle(control, msg.message_id)
            except PERMANENT as exc:  # the same on every delivery: record it, then ack
                self.controller.record_failure(control, exc)
        except Exception as exc:
            self._control_failed(control.batch_id, exc, msg)
            return
        failpoints.hit(failpoints.REQUEST_SAVED_BEFORE_ACK, batch_id=control.batch_id)
        self.pubsub.ack(sub, [msg.ack_id])
        self._intake_tries = 0
        self._tries.pop(control.batch_id, None)
        self._not_before.pop(control.batch_id, None)
        batch = self.batches.get(control.batch_id)
        if batch is not None and batch.state not in TERMINAL:
            self._rebalance()
            self._reconcile_one(batch)
        self.log.info("request_applied", batch_id=control.batch_id, action=control.action,
                      delivery_attempt=msg.delivery_attempt)

    def _control_failed(self, batch_id: str, exc: Exception, msg: Received) -> None:
        self.metrics.reconcile_errors.inc()
        log = self.log.bind(batch_id=batch_id, message_id=msg.message_id)
        if isinstance(exc, BatchctlError):
            log.warning("control_failed", error=str(exc))
        else:
            log.exception("control_crashed")
        if isinstance(exc, Conflict):
            self._reload(batch_id)
        if failures.hold_message(exc):
            self.held_requests.hold([msg])
        else:
            self.inbox.give_back([(self.settings.names.requests_subscription, msg)])
        self._intake_failed(exc)

    def _events(self, msgs: list[Received]) -> bool:
        """Apply events, save each changed batch, ack what is stored; a batch whose save fails is
        reverted and its events held for a later pass (never nacked: see ``launcher.held``), the
        others' acked. True if nothing was held."""
        decoded = []
        for msg in msgs:
            try:
                decoded.append((msg, decode_event(msg.data, msg.attributes)))
            except BadInput as exc:
                self.log.warning("event_rejected", error=str(exc), message_id=msg.message_id)
        for _, event in decoded:
            if event.type == "worker_exited":
                self.reconciler.exits.setdefault(event.batch_id, set()).add(event.worker)
        touched = {e.batch_id for _, e in decoded if e.batch_id in self.batches}
        saved = {k: self.batches[k].copy() for k in touched}
        changed = apply_events(self.batches, [e for _, e in decoded])
        errors = {k: e for k in changed if (e := self._save_events(self.batches[k], saved[k])) is not None}
        hold = {k: failures.hold_message(e) for k, e in errors.items()}  # else give back
        held = [m for m, e in decoded if hold.get(e.batch_id) is True]
        back = [m for m, e in decoded if hold.get(e.batch_id) is False]
        if held:
            self.held.hold(held)
        if back:
            self.inbox.give_back([(self.settings.names.events_subscription, m) for m in back])
        if changed - errors.keys():
            failpoints.hit(failpoints.EVENT_SAVED_BEFORE_ACK, batch_ids=sorted(changed - errors.keys()))
        kept = {m.ack_id for m in held + back}
        batch_of = {m.ack_id: e.batch_id for m, e in decoded}
        self._ack_events([(m, batch_of.get(m.ack_id, "")) for m in msgs if m.ack_id not in kept])
        return not kept

    def _ack_events(self, acked: list[tuple[Received, str]]) -> None:
        """Ack stored events (undecodable ones too); log those that came again: a leader died (or
        was slow) between applying them and acking them, or a dead leader's last pull held them."""
        sub = self.settings.names.events_subscription
        for i in range(0, len(acked), 1000):
            self.pubsub.ack(sub, [m.ack_id for m, _ in acked[i : i + 1000]])
        again = [batch_id for m, batch_id in acked if m.delivery_attempt > 1]
        if again:
            self.log.info("events_redelivered", messages=len(again), batch_ids=sorted(set(again) - {""}))

    def _save_events(self, batch: BatchState, before: BatchState) -> Exception | None:
        """Store ``batch``; on an error, put it back as ``before`` and return the error."""
        try:
            self.store.save(batch)
        except Exception as exc:
            batch.restore(before)
            self.metrics.reconcile_errors.inc()
            self.log.warning("progress_not_saved", batch_id=batch.batch_id, error=str(exc))
            if isinstance(exc, Conflict):
                self._reload(batch.batch_id)
            self._intake_failed(exc)
            return exc
        self._intake_tries = 0
        self.metrics.parts_done.inc(len(batch.done) - len(before.done))
        self.metrics.parts_dead.inc(max(0, len(batch.dead) - len(before.dead)))
        return None

    def _rebalance(self) -> None:
        """Divide the worker budget (if any) before Jobs are launched or resized; on an error no Job
        is launched or grown until a pass divides it again (the budget is never overshot)."""
        if self.sharing is None:
            return
        try:
            self.sharing.rebalance(list(self.batches.values()), self.reconciler.observe)
        except Exception as exc:
            self.sharing.freeze()
            self.metrics.reconcile_errors.inc()
            if isinstance(exc, BatchctlError):
                self.log.warning("rebalance_failed", error=str(exc))
            else:
                self.log.exception("rebalance_crashed")

    def _reconcile_all(self) -> None:
        self._rebalance()
        counts: dict[str, int] = {}
        now = time.time()
        for batch in list(self.batches.values()):
            if batch.state not in TERMINAL or (batch.state in (SUCCEEDED, CANCELLED) and not batch.cleaned):
                self._reconcile_one(batch)
            elif settled(batch) and ended(batch) + SETTLED_HELD_S < now:
                del self.batches[batch.batch_id]  # settled: the store keeps it; `retry` loads it again
                self.reconciler.forget(batch.batch_id)
                continue
            counts[batch.state] = counts.get(batch.state, 0) + 1
        for state in ("pending", "queued", "running", SUCCEEDED, FAILED, "cancelled", REJECTED):
            self.metrics.batches.labels(state=state).set(counts.get(state, 0))
        if self.reconciler.awaits_events():
            self.inbox.want_empty.set()

    def _reconcile_one(self, batch: BatchState) -> None:
        """Reconcile one batch; its error is its own (``launcher.failures``), never the others'."""
        now = time.monotonic()
        if now < max(self._quiet_until, self._not_before.get(batch.batch_id, 0.0)):
            return
        try:
            self.reconciler.reconcile(batch)
        except Conflict as exc:
            self.log.warning("reconcile_conflict", batch_id=batch.batch_id, error=str(exc))
            self._reload(batch.batch_id)
            return
        except Exception as exc:
            self._reconcile_failed(batch, exc)
            return
        self._tries.pop(batch.batch_id, None)

    def _reconcile_failed(self, batch: BatchState, exc: Exception) -> None:
        self.metrics.reconcile_errors.inc()
        tries = self._tries.get(batch.batch_id, 0) + 1
        self._tries[batch.batch_id] = tries
        verdict = failures.judge(exc, tries)
        log = self.log.bind(batch_id=batch.batch_id, tries=tries, wait_s=verdict.wait_s)
        if isinstance(exc, BatchctlError):
            log.warning("reconcile_failed", error=str(exc))
        else:
            log.exception("reconcile_crashed")
        until = time.monotonic() + verdict.wait_s
        if verdict.everyone:
            self._quiet_until = max(self._quiet_until, until)
        self._not_before[batch.batch_id] = until
        if verdict.give_up:
            try:
                self.reconciler.apply(batch, Finish(FAILED, failures.reason(exc)))
            except Exception as again:  # stays for the next pass
                log.warning("batch_not_failed", error=str(again))
                return
            self._tries.pop(batch.batch_id, None)
