"""A worker run in the test's own process, on the real emulator, for fault injection at its seams.

``InProcessWorker`` builds the real ``Worker`` (real ``PubSub``, real leases, settler
and slots) with a Python callable as handler, runs it on a thread and gives its exit
code. Faults are injected by wrapping calls of the worker's own Google client
(``worker.pubsub.subscriber``), or by putting a ``FaultProxy`` between it and the emulator.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchctl.core import logs
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.core.sink import Sink
from batchctl.worker.config import WorkerConfig
from batchctl.worker.runtime import Worker
from batchctl.worker.shutdown import Shutdown


def worker_pubsub(settings: Settings, emulator_host: str | None = None) -> PubSub:
    """A PubSub of the worker's own, whose clients talk to ``emulator_host`` (a proxy, say).

    The Google client reads the emulator address from the environment when a client is
    built: build both now, then put the variable back for everyone else in this process.
    """
    if emulator_host is None:
        return PubSub(settings)
    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    pubsub = PubSub(Settings.from_env({**settings.environ, "PUBSUB_EMULATOR_HOST": emulator_host}))
    try:
        _ = pubsub.publisher, pubsub.subscriber
    finally:
        if before is not None:
            os.environ["PUBSUB_EMULATOR_HOST"] = before
    return pubsub


@dataclass
class InProcessWorker:
    """One ``Worker`` on a thread; ``code`` is its exit code once it returned."""

    worker: Worker
    thread: threading.Thread = field(init=False)
    code: int | None = None

    @classmethod
    def start(
        cls,
        pubsub: PubSub,
        batch_id: str,
        handler: Callable[[Any], object],
        results: Path,
        *,
        sink: Sink | None = None,
        **overrides: Any,
    ) -> InProcessWorker:
        """Start a worker with short test settings; ``overrides`` are ``WorkerConfig`` fields,
        ``sink`` where the results go (``--output``; the handler should then be ``results.wrap``ped)."""
        values: dict[str, Any] = {
            "batch_id": batch_id,
            "subscription": pubsub.settings.names.work(batch_id),
            "empty_pulls": 3,
            "pull_timeout_s": 0.5,
            "drain_budget_s": 5.0,
            "lease_s": 10,
            "worker_id": "inproc",
            "results_dir": results,
            **overrides,
        }
        config = WorkerConfig(**values)
        log = logs.get("worker", batch_id=batch_id, worker=config.worker_id)
        worker = Worker(config, pubsub, handler, shutdown=Shutdown(config.drain_budget_s), log=log, sink=sink)
        running = cls(worker)
        running.thread = threading.Thread(target=running._run, name="inproc-worker", daemon=True)
        running.thread.start()
        return running

    def _run(self) -> None:
        self.code = self.worker.run()

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if the worker still runs after ``timeout`` seconds."""
        self.thread.join(timeout)
        return self.code

    def stop(self) -> None:
        """Ask it to stop (test cleanup) and wait for it briefly."""
        self.worker.shutdown.request("test cleanup")
        self.thread.join(15)


def run_to_exit(
    pubsub: PubSub, batch_id: str, handler: Callable[[Any], object], results: Path, *, timeout: float,
    **overrides: Any,
) -> int | None:
    """Run a worker on ``pubsub`` (its own client, closed afterwards) until it exits: its exit code,
    or None if it still runs after ``timeout`` seconds; it is stopped either way."""
    worker = InProcessWorker.start(pubsub, batch_id, handler, results, **overrides)
    try:
        return worker.wait(timeout=timeout)
    finally:
        worker.stop()
        pubsub.close()
