"""How long a finished batch is kept, and forgetting it once that has passed.

``BATCHCTL_RETENTION`` (a duration: ``7d`` by default, ``12h``, ``30m``, ``30s``) starts when a
batch ends (``succeeded``, ``failed``, ``cancelled``). After it the launcher deletes what is
left of the batch: its Pub/Sub topics and subscriptions (a failed batch's dead-letter topic
and subscription, kept until then for ``retry``), its Jobs, the local backend's files, and
last its state, so ``status`` and ``list`` no longer know it. Each step is idempotent and the
state goes last: a launcher that dies half-way forgets the batch on its next sweep.

``expired`` decides (pure); ``Retention.sweep`` applies, at most every ``SWEEP_EVERY_S``, so a
launcher holding thousands of finished batches does not pay for them on every tick.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, MutableMapping

from batchctl.core import logs, topology
from batchctl.core.errors import BadInput
from batchctl.core.pubsub import PubSub
from batchctl.launcher.backend import Backend
from batchctl.launcher.state import TERMINAL, BatchState
from batchctl.launcher.store import StateStore, ended

RETENTION_VAR = "BATCHCTL_RETENTION"
DEFAULT_RETENTION = "7d"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_RE = re.compile(r"^(\d+)([smhd])$")
MAX_RETENTION_S = 3650 * 86400
SWEEP_EVERY_S = 60.0
"""Longest time between sweeps; shorter when the retention itself is short (a tenth of it)."""


def parse_duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``30s`` -> seconds (1 s .. 3650 d); ValueError otherwise."""
    match = DURATION_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 7d, 12h, 30m or 30s")
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if not 1 <= seconds <= MAX_RETENTION_S:
        raise ValueError(f"{text!r} is outside 1s..3650d")
    return float(seconds)


def retention_from_env(environ: Mapping[str, str]) -> float:
    """``BATCHCTL_RETENTION`` in seconds (unset or empty: 7 days); BadInput naming the variable."""
    raw = environ.get(RETENTION_VAR, "").strip() or DEFAULT_RETENTION
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise BadInput(f"{RETENTION_VAR}: {exc}") from None


def ends_of(batches: Iterable[BatchState]) -> dict[str, float]:
    """Finished batch id -> when it ended, for the batches in memory. A batch loaded from an
    unreadable state document is left out: it has no trustworthy end, and it stays for a human."""
    return {b.batch_id: ended(b) for b in batches if b.state in TERMINAL and not b.corrupt}


def expired(ends: Mapping[str, float], *, now: float, retention_s: float) -> list[str]:
    """Ids of the finished batches (id -> end) whose retention has passed, oldest first."""
    return sorted((i for i, end in ends.items() if end + retention_s <= now), key=lambda i: (ends[i], i))


def sweep_interval(retention_s: float) -> float:
    return max(1.0, min(SWEEP_EVERY_S, retention_s / 10))


class Retention:
    """Applies ``expired``: forgets each batch whose retention has passed."""

    def __init__(self, pubsub: PubSub, store: StateStore, backend: Backend, retention_s: float) -> None:
        self.pubsub, self.store, self.backend = pubsub, store, backend
        self.retention_s = retention_s
        self.interval = sweep_interval(retention_s)
        self.next_sweep = 0.0
        self.log = logs.get("retention")

    def sweep(self, batches: MutableMapping[str, BatchState], *, now: float | None = None) -> list[str]:
        """Forget every expired batch, held in ``batches`` or settled in the store (if a sweep is due)."""
        clock = time.monotonic()
        if clock < self.next_sweep:
            return []
        self.next_sweep = clock + self.interval
        ends = {**self.store.settled_ends(), **ends_of(batches.values())}
        gone = expired(ends, now=time.time() if now is None else now, retention_s=self.retention_s)
        for batch_id in gone:
            batch = batches.get(batch_id) or self.store.load(batch_id)
            if batch is not None:
                self.forget(batch)
            batches.pop(batch_id, None)
        return gone

    def forget(self, batch: BatchState) -> None:
        """Delete the batch's Pub/Sub resources, Jobs and files, then its state."""
        topology.delete_batch(self.pubsub, batch.batch_id)
        self.backend.forget(batch.batch_id, [job.name for job in batch.jobs])
        self.store.delete(batch.batch_id)
        self.log.info("batch_forgotten", batch_id=batch.batch_id, state=batch.state,
                      ended=round(ended(batch), 3), retention_s=self.retention_s)

