"""Worker test support: a batch made the way the splitter makes it, what workers report, the workers.

``publish_batch`` creates a batch's topology and publishes N parts in the part
format; ``EventLog`` is a subscription of the test's own on the events topic;
``WorkerProcess`` runs ``python -m batchctl.worker`` as a real subprocess.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchctl.core.messages import Event, decode_event
from batchctl.core.pubsub import PubSub, SubscriptionSpec
from batchctl.core.topology import BatchTopology, create_batch
from tests.support.waiting import wait_for

TEST_TOPOLOGY = BatchTopology(ack_deadline_s=10, max_delivery_attempts=5, min_backoff_s=1, max_backoff_s=1)
"""Short everything: the emulator's minimum ack deadline, one second between redeliveries."""


def encode_part(
    batch_id: str, index: int, total: int, records: Sequence[Any], fmt: str = "jsonl"
) -> tuple[bytes, dict[str, str]]:
    """Data and attributes of one part, exactly as the splitter publishes them."""
    lines = [json.dumps(r) if fmt == "jsonl" else str(r) for r in records]
    data = "\n".join(lines).encode()
    attributes = {
        "batch_id": batch_id,
        "part": str(index),
        "parts": str(total),
        "records": str(len(lines)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": fmt,
    }
    return data, attributes


def publish_batch(
    pubsub: PubSub,
    batch_id: str,
    parts: Sequence[Sequence[Any]],
    *,
    topology: BatchTopology = TEST_TOPOLOGY,
    fmt: str = "jsonl",
) -> str:
    """Create the batch's topology, publish every part and wait for all; returns the work name."""
    create_batch(pubsub, batch_id, topology)
    work = pubsub.settings.names.work(batch_id)
    futures = [
        pubsub.publish(work, *encode_part(batch_id, i, len(parts), records, fmt)) for i, records in enumerate(parts)
    ]
    for future in futures:
        future.result(timeout=60)
    return work


@dataclass
class EventLog:
    """Every event workers published on this prefix's events topic since ``open``."""

    pubsub: PubSub
    subscription: str
    events: list[Event] = field(default_factory=list)

    @classmethod
    def open(cls, pubsub: PubSub) -> EventLog:
        """Create the events topic (if missing) and a subscription of our own on it."""
        names = pubsub.settings.names
        pubsub.create_topic(names.events_topic, exist_ok=True)
        name = f"{names.events_topic}-test"
        pubsub.create_subscription(name, names.events_topic, SubscriptionSpec(ack_deadline_s=60), exist_ok=True)
        return cls(pubsub, name)

    def poll(self, timeout: float = 60.0) -> list[Event]:
        """Pull what arrived since the last poll (without waiting long), ack it, return all so far.

        Fails after ``timeout`` seconds of events arriving without a pause (a runaway publisher).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self.pubsub.pull(self.subscription, max_messages=1000, timeout_s=0.5)
            if not batch:
                return self.events
            self.pubsub.ack(self.subscription, [m.ack_id for m in batch])
            self.events.extend(decode_event(m.data, m.attributes) for m in batch)
        raise AssertionError(f"events still arriving after {timeout}s ({len(self.events)} so far)")

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.poll() if e.type == kind]

    def done_parts(self) -> set[int]:
        return {p for e in self.of("part_done") for p in e.done_parts}


# ---- worker processes ----------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """``python -m batchctl.worker`` as a real subprocess, its stderr (JSON logs) in a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    exited_at: float | None = None
    """Wall-clock time ``exit_code`` first saw the process gone."""

    @classmethod
    def start(cls, env: Mapping[str, str], folder: Path, name: str, *args: str, **variables: str) -> WorkerProcess:
        """Start a worker; ``variables`` are extra BATCHCTL_* settings (``concurrency="2"``)."""
        full_env = {**env, "PYTHONPATH": str(ROOT), "BATCHCTL_WORKER_ID": name, "BATCHCTL_LOG_LEVEL": "DEBUG"}
        full_env.update({f"BATCHCTL_{k.upper()}": v for k, v in variables.items()})
        log = folder / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "batchctl.worker", *args],
                env=full_env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(name, proc, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and self.exited_at is None:
            self.exited_at = time.time()
        return code

    def wait(self, timeout: float) -> int:
        """The exit code, waiting up to ``timeout`` seconds (polling, to note the exit time)."""
        wait_for(lambda: self.poll() is not None, timeout=timeout, interval=0.02, what=f"{self.name} to exit")
        return self.proc.returncode

    def signal(self, signum: int) -> float:
        """Send a signal; returns when (wall clock)."""
        self.proc.send_signal(signum)
        return time.time()

    def stop(self) -> None:
        """Kill it if still running (test cleanup)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """Parsed JSON log lines whose ``event`` is ``event``."""
        found = []
        for line in self.text().splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found

    def last_ack_at(self) -> float | None:
        exits = self.log_events("worker_exited")
        return exits[-1]["last_ack_at"] if exits else None
