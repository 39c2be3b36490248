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
from batchctl.launcher.kube import Conflict, Kube, NotFound

LEASE_DURATION_S = 15
RENEW_EVERY_S = 5
RETRY_EVERY_S = 2


def _micro(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> float:
    if not value:
        return 0.0
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


class LeaseElector:
    """Holds (or waits for) the Lease named ``name`` as ``identity``."""

    def __init__(self, kube: Kube, name: str, identity: str, *, lease_s: int = LEASE_DURATION_S,
                 renew_s: float = RENEW_EVERY_S, clock: Callable[[], float] = time.time) -> None:
        self.kube, self.name, self.identity = kube, name, identity
        self.lease_s, self.renew_s, self.clock = lease_s, renew_s, clock
        self._valid_until = 0.0
        self._stop = threading.Event()
        self.log = logs.get("leader", identity=identity)
        self.watching = False

    @property
    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    def step(self) -> bool:
        """One try to acquire or renew; True if this replica holds the Lease now."""
        started = time.monotonic()
        now = self.clock()
        try:
            held = self._try(now)
        except BatchctlError as exc:
            self.log.warning("lease_error", error=str(exc))
            held = False
        self.watching = True
        was = self.is_leader
        self._valid_until = started + self.lease_s - 1 if held else 0.0
        if held != was:
            self.log.info("leadership_acquired" if held else "leadership_lost", lease=self.name)
        return held

    def _try(self, now: float) -> bool:
        try:
            lease = self.kube.get_lease(self.name)
        except NotFound:
            return self._create(now)
        spec = lease.get("spec") or {}
        version = lease["metadata"].get("resourceVersion")
        holder = spec.get("holderIdentity") or ""
        expired = now > _parse(spec.get("renewTime")) + int(spec.get("leaseDurationSeconds") or self.lease_s)
        if holder == self.identity:
            patch = {"renewTime": _micro(now), "leaseDurationSeconds": self.lease_s}
        elif expired or not holder:
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
        return True

    def run(self) -> None:
        while not self._stop.is_set():
            held = self.step()
            self._stop.wait(self.renew_s if held else RETRY_EVERY_S)

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
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self._file = handle
        return True

    def start(self) -> threading.Thread:
        def loop() -> None:
            while not self._stop.is_set() and not self.step():
                self._stop.wait(0.5)

        thread = threading.Thread(target=loop, name="leader-election", daemon=True)
        thread.start()
        return thread

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        if self._file is not None and release:
            self._file.close()
            self._file = None
