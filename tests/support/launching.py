"""Run a launcher in-process for a test, and submit small batches to it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.core.topology import BatchTopology
from batchctl.launcher.app import Parts, assemble
from batchctl.launcher.local_backend import LocalBackend
from batchctl.launcher.service import Launcher, Tuning
from batchctl.launcher.state import TERMINAL, BatchState
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.submit import SubmitOptions, Submitted, submit
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
FAST_TUNING = Tuning(tick_s=0.1, pull_timeout_s=1.0)


def fast_worker_env(results: Path) -> dict[str, str]:
    """Short drain and lease settings so tests finish in seconds."""
    return {
        "PYTHONPATH": str(REPO),
        "BATCHCTL_RESULTS_DIR": str(results),
        "BATCHCTL_EMPTY_PULLS": "2",
        "BATCHCTL_PULL_TIMEOUT_S": "0.5",
        "BATCHCTL_DRAIN_BUDGET_S": "5",
        "BATCHCTL_LEASE_S": "10",
    }


@dataclass
class Running:
    launcher: Launcher
    thread: threading.Thread
    parts: Parts

    def stop(self) -> None:
        self.launcher.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "launcher did not stop within 30 s"


@contextmanager
def running_launcher(settings: Settings, pubsub: PubSub, *, worker_env: dict[str, str] | None = None,
                     parts: Parts | None = None) -> Iterator[Running]:
    parts = parts or assemble(settings, worker_env=worker_env)
    launcher = Launcher(settings, pubsub, parts.store, parts.backend, parts.elector, tuning=FAST_TUNING,
                        profiles=parts.profiles, chores=parts.chores)
    thread = threading.Thread(target=launcher.run, name="test-launcher", daemon=True)
    thread.start()
    running = Running(launcher, thread, parts)
    try:
        yield running
    finally:
        if thread.is_alive():
            running.stop()
        if isinstance(parts.backend, LocalBackend):
            parts.backend.stop_all(timeout=15)


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def submit_records(pubsub: PubSub, path: Path, batch_id: str, *, records_per_part: int = 1,
                   handler: str = "tests.support.handlers:scripted", parts_per_worker: int = 5,
                   max_parallelism: int = 2, priority: str = "normal", profile: str = "default") -> Submitted:
    return submit(pubsub, SubmitOptions(
        [str(path)], batch_id=batch_id, limits=PartLimits(records_per_part), handler=handler,
        parts_per_worker=parts_per_worker, max_parallelism=max_parallelism, priority=priority, profile=profile,
        topology=BatchTopology(ack_deadline_s=10, max_delivery_attempts=5, min_backoff_s=1, max_backoff_s=2),
    ))


def wait_terminal(parts: Parts, batch_id: str, timeout: float = 90) -> BatchState:
    def terminal() -> BatchState | None:
        batch = parts.store.load(batch_id)
        return batch if batch is not None and batch.state in TERMINAL else None

    return wait_for(terminal, timeout=timeout, interval=0.2, what=f"{batch_id} to finish")
