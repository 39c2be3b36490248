"""Leader election: a coordination.k8s.io Lease (Kubernetes) or a file lock (local).

Only the leader consumes requests and events and launches Jobs. A Lease is taken
or renewed with writes conditional on its resourceVersion, so two replicas racing
for it cannot both win; a leader that cannot renew within the lease duration stops
acting as leader before anyone else may take over.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from batchctl.core import logs
from batchctl.core.errors import BatchctlError
from batchctl.launcher.kube import Conflict, Kube, NotFound, Throttled

LEASE_DURATION_S = 15
RENEW_EVERY_S = 5
RETRY_EVERY_S = 2
RENEW_DEADLINE_FRACTION = 2 / 3
"""client-go's defaults are lease 15 s, renew deadline 10 s: the holder stops acting 5 s before a
candidate, timing the same record on its own clock, may take over."""


def _micro(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Holds (or waits for) the Lease named ``name`` as ``identity``.

    Timing follows client-go's leaderelection, so no two machines' wall clocks are compared:
    a candidate times the Lease from when *it* last saw the record change (holder, renewTime,
    transitions), on its own monotonic clock, and takes it only after ``lease_s`` of silence.
    The holder counts itself leader until ``renew_deadline_s`` after the start of its last
    successful renew, which is shorter than ``lease_s``: it stops acting before anyone may
    take over. ``clock`` only stamps the record (``renewTime``), for humans.
    """

    def __init__(self, kube: Kube, name: str, identity: str, *, lease_s: int = LEASE_DURATION_S,
                 renew_s: float = RENEW_EVERY_S, renew_deadline_s: float | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.name, self.identity = kube, name, identity
        self.lease_s, self.renew_s, self.clock, self.monotonic = lease_s, renew_s, clock, monotonic
        self.renew_deadline_s = renew_deadline_s if renew_deadline_s is not None else lease_s * RENEW_DEADLINE_FRACTION
        self._valid_until = 0.0
        self._leading = False
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._stop = threading.Event()
        self.log = logs.get("leader", identity=identity)
        self.watching = False
        self.wait_s = 0.0
        """How long to wait before the next try: the renew or retry period, or a 429's Retry-After."""
        self.inherited = True
        """Whether this term took over from a holder that may have died holding a pull (it let the Lease
        expire, or it was an earlier process under this identity): then events can stay out of sight for
        one pull timeout plus an ack deadline (``Launcher._take_over``). False when the Lease was new or
        released, since a clean stop ends its pulls and gives back what they held before releasing."""
        self._inherits = True
        self._held_once = False

    @property
    def is_leader(self) -> bool:
        return self.monotonic() < self._valid_until

    def step(self) -> bool:
        """One try to acquire or renew; True if this replica holds the Lease now."""
        started = self.monotonic()
        self.wait_s = 0.0
        try:
            held = self._try(self.clock(), started)
        except Throttled as exc:
            self.log.warning("lease_throttled", error=str(exc), retry_after_s=exc.retry_after_s)
            held, self.wait_s = False, exc.retry_after_s
        except BatchctlError as exc:
            self.log.warning("lease_error", error=str(exc))
            held = False
        self.watching = True
        if held and not self.is_leader:
            self.inherited = self._inherits
        if held:
            self._valid_until = started + self.renew_deadline_s
            self._held_once = True
        elif self.monotonic() >= self._valid_until:
            self._valid_until = 0.0
        # else: a failed renew keeps the leader acting until its renew deadline, as client-go does
        leading = self.is_leader
        if leading != self._leading:  # also a lease that lapsed by the clock (a freeze) is logged
            self.log.info("leadership_acquired" if leading else "leadership_lost", lease=self.name)
        self._leading = leading
        return held

    def _try(self, now: float, started: float) -> bool:
        try:
            lease = self.kube.get_lease(self.name)
        except NotFound:
            return self._create(now)
        spec = lease.get("spec") or {}
        version = lease["metadata"].get("resourceVersion")
        holder = spec.get("holderIdentity") or ""
        duration = int(spec.get("leaseDurationSeconds") or self.lease_s)
        record = (holder, spec.get("renewTime"), spec.get("acquireTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, started
        expired = started > self._observed_at + duration
        if holder == self.identity:
            patch = {"renewTime": _micro(now), "leaseDurationSeconds": self.lease_s}
            self._inherits = not self._held_once  # an earlier process of this name held it
        elif expired or not holder:
            self._inherits = bool(holder)
            patch = {"holderIdentity": self.identity, "acquireTime": _micro(now), "renewTime": _micro(now),
                     "leaseDurationSeconds": self.lease_s,
                     "leaseTransitions": int(spec.get("leaseTransitions") or 0) + 1}
        else:
            return False
        body: dict[str, Any] = {"spec": patch}
        if version:
            body["metadata"] = {"resourceVersion": version}
        try:
            self.kube.patch_lease(self.name, body)
        except Conflict:
            return False
        return True

    def _create(self, now: float) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_s,
                     "acquireTime": _micro(now), "renewTime": _micro(now), "leaseTransitions": 0},
        }
        try:
            self.kube.create_lease(body)
        except Conflict:
            return False
        self._inherits = False
        return True

    def run(self) -> None:
        """Campaign until ``stop()``. Nothing escapes: a bug costs one try, not the thread."""
        while not self._stop.is_set():
            try:
                held = self.step()
            except Exception:
                self.log.exception("lease_step_crashed")
                held = False
            self._stop.wait(max(self.wait_s, self.renew_s if held else RETRY_EVERY_S))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        thread.start()
        return thread

    def stop(self, *, release: bool = True) -> None:
        """Stop campaigning; a leader gives the Lease up so a successor need not wait it out."""
        self._stop.set()
        if release and self.is_leader:
            self._valid_until = 0.0
            try:
                lease = self.kube.get_lease(self.name)
                body = {"metadata": {"resourceVersion": lease["metadata"].get("resourceVersion")},
                        "spec": {"holderIdentity": "", "renewTime": _micro(0)}}
                self.kube.patch_lease(self.name, body)
            except BatchctlError as exc:
                self.log.warning("lease_release_failed", error=str(exc))


class FileElector:
    """Local backend: the leader is whoever holds an exclusive lock on ``launcher.lock``."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "launcher.lock"
        self._file: IO[str] | None = None
        self._stop = threading.Event()
        self.watching = True
        self.inherited = True
        """As ``LeaseElector.inherited``: the lock file still names a process (it died holding the lock,
        which the kernel then released); a clean stop empties the file before letting go."""

    @property
    def is_leader(self) -> bool:
        return self._file is not None

    def step(self) -> bool:
        if self._file is None:
            handle = open(self.path, "a+")  # noqa: SIM115 - held open while leading
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            handle.seek(0)
            self.inherited = bool(handle.read().strip())
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self._file = handle
        return True

    def start(self) -> threading.Thread:
        def loop() -> None:  # runs until stop(), like LeaseElector's: a dead thread fails /healthz
            while not self._stop.is_set():
                self.step()
                self._stop.wait(0.5)

        thread = threading.Thread(target=loop, name="leader-election", daemon=True)
        thread.start()
        return thread

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        if self._file is not None and release:
            self._file.seek(0)
            self._file.truncate()  # a clean stop: the next holder need not wait for our pulls
            self._file.close()
            self._file = None
