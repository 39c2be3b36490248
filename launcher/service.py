"""The launcher's main loop: while leader, take requests and events, reconcile every batch.

Two puller threads feed a queue from the control and events subscriptions so a
request wakes the loop at once; the loop applies them in order, saves what
changed, acks only what is stored, then reconciles every unfinished batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from batchctl.core import logs, topology
from batchctl.core.admission import Rejection, batch_named, check_size, malformed
from batchctl.core.errors import BadInput, BatchctlError
from batchctl.core.messages import decode_control, decode_event
from batchctl.core.profiles import Profile
from batchctl.core.pubsub import PubSub, Received
from batchctl.core.settings import Settings
from batchctl.launcher.backend import Backend
from batchctl.launcher.control import Controller
from batchctl.launcher.kube import Conflict
from batchctl.launcher.metrics import Metrics
from batchctl.launcher.progress import apply_events
from batchctl.launcher.reconciler import Reconciler
from batchctl.launcher.retention import Retention, retention_from_env
from batchctl.launcher.state import FAILED, REJECTED, SUCCEEDED, TERMINAL, BatchState
from batchctl.launcher.store import StateStore


class Elector(Protocol):
    """What the loop needs of leader election (``launcher.leader``)."""

    @property
    def is_leader(self) -> bool: ...
    watching: bool

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
                 wake: threading.Event | None = None, profiles: Mapping[str, Profile] | None = None) -> None:
        self.settings, self.pubsub, self.store, self.backend = settings, pubsub, store, backend
        self.elector, self.tuning = elector, tuning
        self.metrics = metrics or Metrics()
        self.batches: dict[str, BatchState] = {}
        self.reconciler = Reconciler(settings, pubsub, store, backend, self.metrics)
        if profiles is None:
            from batchctl.launcher.app import open_profiles

            profiles = open_profiles(settings)
        self.controller = Controller(pubsub, store, backend, self.batches, profiles=profiles,
                                     metrics=self.metrics)
        self.retention = Retention(pubsub, store, backend, retention_from_env(settings.environ))
        self.inbox: queue.Queue[tuple[str, Received]] = queue.Queue()
        self.wake = wake or backend.changed
        self.stopping = threading.Event()
        self.last_loop = time.monotonic()
        self.log = logs.get("launcher")
        self._leading = False

    # ---- lifecycle -------------------------------------------------------------------
    def run(self) -> None:
        """Run until ``stop()``; returns after a clean shutdown."""
        topology.ensure_shared(self.pubsub)
        self.elector.start()
        names = self.settings.names
        pullers = [
            threading.Thread(target=self._pull_loop, args=(sub,), name=f"pull-{sub}", daemon=True)
            for sub in (names.requests_subscription, names.events_subscription)
        ]
        for thread in pullers:
            thread.start()
        self.log.info("launcher_started", backend=self.settings.backend, namespace=self.settings.namespace)
        try:
            while not self.stopping.is_set():
                self.last_loop = time.monotonic()
                self.wake.wait(self.tuning.tick_s)
                self.wake.clear()
                self._step()
        finally:
            for thread in pullers:
                thread.join(timeout=self.tuning.pull_timeout_s + 5)
            self._give_back()
            self.elector.stop(release=True)
            self.backend.close()
            self.log.info("launcher_stopped")

    def _give_back(self) -> None:
        """Nack what was pulled but not handled, so a successor gets it now, not after its lease."""
        held: dict[str, list[str]] = {}
        while True:
            try:
                sub, msg = self.inbox.get_nowait()
            except queue.Empty:
                break
            held.setdefault(sub, []).append(msg.ack_id)
        for sub, ack_ids in held.items():
            try:
                self.pubsub.nack(sub, ack_ids)
            except Exception as exc:  # shutting down: the lease lapses on its own
                self.log.warning("give_back_failed", subscription=sub, error=str(exc))

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def healthy(self) -> bool:
        return time.monotonic() - self.last_loop < 60

    def ready(self, checks: list[Callable[[], object]]) -> bool:
        try:
            for check in checks:
                check()
        except BatchctlError:
            return False
        return bool(self.elector.watching)

    # ---- one pass --------------------------------------------------------------------
    def _step(self) -> None:
        leading = self.elector.is_leader
        self.metrics.is_leader.set(1 if leading else 0)
        if leading and not self._leading:
            self._take_over()
        self._leading = leading
        if not leading:
            return
        try:
            self._consume()
            self._reconcile_all()
            self.retention.sweep(self.batches)
        except BatchctlError as exc:
            self.metrics.reconcile_errors.inc()
            self.log.warning("reconcile_failed", error=str(exc))
            if isinstance(exc, Conflict):
                self._take_over()
        except Exception:  # a bug must cost one pass, not the service
            self.metrics.reconcile_errors.inc()
            self.log.exception("reconcile_crashed")

    def _take_over(self) -> None:
        """(Re)load every batch from the store: the store, not memory, is the truth."""
        self.batches.clear()
        self.batches.update({b.batch_id: b for b in self.store.load_all()})
        running = [b.batch_id for b in self.batches.values() if b.state not in TERMINAL]
        self.log.info("batches_loaded", total=len(self.batches), running=len(running))

    def _pull_loop(self, subscription: str) -> None:
        while not self.stopping.is_set():
            if not self._leading:
                self.stopping.wait(0.2)
                continue
            try:
                msgs = self.pubsub.pull(subscription, max_messages=self.tuning.max_events,
                                        timeout_s=self.tuning.pull_timeout_s)
            except BatchctlError as exc:
                self.log.warning("pull_failed", subscription=subscription, error=str(exc))
                self.stopping.wait(1.0)
                continue
            except Exception:
                self.log.exception("pull_crashed", subscription=subscription)
                self.stopping.wait(1.0)
                continue
            for msg in msgs:
                self.inbox.put((subscription, msg))
            if msgs:
                self.wake.set()
            else:
                self.stopping.wait(0.05)

    def _consume(self) -> None:
        names = self.settings.names
        controls: list[Received] = []
        events: list[Received] = []
        while True:
            try:
                sub, msg = self.inbox.get_nowait()
            except queue.Empty:
                break
            (controls if sub == names.requests_subscription else events).append(msg)
        for msg in controls:
            self._control(msg)
        if events:
            self._events(events)

    def _control(self, msg: Received) -> None:
        names = self.settings.names
        rejection: Rejection | None = check_size(len(msg.data))
        if rejection is None:
            try:
                control = decode_control(msg.data, msg.attributes)
            except BadInput as exc:
                rejection = malformed(exc)
        if rejection is not None:
            self.controller.refuse(batch_named(msg.data, msg.attributes), rejection, msg.message_id)
            self.pubsub.ack(names.requests_subscription, [msg.ack_id])
            return
        self.controller.handle(control, msg.message_id)
        self.pubsub.ack(names.requests_subscription, [msg.ack_id])
        batch = self.batches.get(control.batch_id)
        if batch is not None and batch.state not in TERMINAL:
            self.reconciler.reconcile(batch)

    def _events(self, msgs: list[Received]) -> None:
        decoded = []
        for msg in msgs:
            try:
                decoded.append(decode_event(msg.data, msg.attributes))
            except BadInput as exc:
                self.log.warning("event_rejected", error=str(exc), message_id=msg.message_id)
        touched = {e.batch_id for e in decoded if e.batch_id in self.batches}
        before = {k: (len(self.batches[k].done), len(self.batches[k].dead)) for k in touched}
        changed = apply_events(self.batches, decoded)
        for batch_id in changed:
            batch = self.batches[batch_id]
            self.metrics.parts_done.inc(len(batch.done) - before[batch_id][0])
            self.metrics.parts_dead.inc(max(0, len(batch.dead) - before[batch_id][1]))
            self.store.save(batch)
        ack_ids = [m.ack_id for m in msgs]
        for i in range(0, len(ack_ids), 1000):
            self.pubsub.ack(self.settings.names.events_subscription, ack_ids[i : i + 1000])

    def _reconcile_all(self) -> None:
        counts: dict[str, int] = {}
        for batch in list(self.batches.values()):
            if batch.state not in TERMINAL or (batch.state == SUCCEEDED and not batch.cleaned):
                try:
                    self.reconciler.reconcile(batch)
                except Conflict:
                    raise
                except BatchctlError as exc:
                    self.metrics.reconcile_errors.inc()
                    self.log.warning("reconcile_failed", batch_id=batch.batch_id, error=str(exc))
            counts[batch.state] = counts.get(batch.state, 0) + 1
        for state in ("pending", "running", SUCCEEDED, FAILED, "cancelled", REJECTED):
            self.metrics.batches.labels(state=state).set(counts.get(state, 0))
