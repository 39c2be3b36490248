"""Fault injection at the launcher's seams: a state store that fails when told, a switchable elector."""

from __future__ import annotations

import threading
from collections.abc import Callable

from batchctl.core.errors import Unreachable
from batchctl.launcher.planner import Launch, ObservedJob
from batchctl.launcher.state import BatchState
from batchctl.launcher.store import StateStore


class FlakyStore:
    """Wraps a real store; ``fail_save(when)`` makes the next save whose state matches ``when`` raise
    Unreachable once (nothing written), ``fail_load_all()`` the next listing (load_all, or
    load_unsettled as a takeover lists)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._save_faults: list[Callable[[BatchState], bool]] = []
        self._load_all_faults = 0
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def fail_save(self, when: Callable[[BatchState], bool] = lambda _: True) -> None:
        with self._lock:
            self._save_faults.append(when)

    def fail_load_all(self, times: int = 1) -> None:
        with self._lock:
            self._load_all_faults += times

    def load(self, batch_id: str) -> BatchState | None:
        return self.store.load(batch_id)

    def load_all(self) -> list[BatchState]:
        self._list_fault("load_all")
        return self.store.load_all()

    def load_unsettled(self) -> list[BatchState]:
        self._list_fault("load_unsettled")
        return self.store.load_unsettled()

    def settled_ends(self) -> dict[str, float]:
        return self.store.settled_ends()

    def _list_fault(self, what: str) -> None:
        with self._lock:
            if self._load_all_faults:
                self._load_all_faults -= 1
                self.failed.append(what)
                raise Unreachable(f"injected: the store is unreachable ({what})")

    def create(self, state: BatchState) -> bool:
        return self.store.create(state)

    def delete(self, batch_id: str) -> None:
        self.store.delete(batch_id)

    def save(self, state: BatchState) -> None:
        with self._lock:
            fault = next((f for f in self._save_faults if f(state)), None)
            if fault is not None:
                self._save_faults.remove(fault)
                self.failed.append(f"save {state.batch_id} {state.state}")
                raise Unreachable(f"injected: the store is unreachable (save {state.batch_id})")
        self.store.save(state)


class ActiveBackend:
    """A backend whose Jobs never end and run nothing: events alone move a batch."""

    def __init__(self) -> None:
        self.launched: dict[str, list[str]] = {}
        self.deleted: list[str] = []
        self.changed = threading.Event()

    def launch(self, batch: BatchState, launch: Launch) -> bool:
        self.launched.setdefault(batch.batch_id, []).append(launch.name)
        return True

    def observe(self, batch_id: str) -> list[ObservedJob]:
        return [ObservedJob(name, active=1, finished=False) for name in self.launched.get(batch_id, [])]

    def delete_jobs(self, batch_id: str) -> None:
        self.deleted.append(batch_id)
        self.launched.pop(batch_id, None)

    def forget(self, batch_id: str, job_names: list[str]) -> None:
        self.launched.pop(batch_id, None)

    def job_batches(self) -> dict[str, str]:
        return {name: batch for batch, names in self.launched.items() for name in names}

    def close(self) -> None:
        """Nothing to release."""


class SwitchElector:
    """Leadership as the test says: ``is_leader`` is a plain attribute."""

    def __init__(self, leader: bool = True) -> None:
        self.is_leader = leader
        self.watching = True
        self.inherited = True

    def start(self) -> threading.Thread:
        return threading.current_thread()

    def stop(self, *, release: bool = True) -> None:
        """Nothing to give up."""
