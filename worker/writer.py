"""Writing part results off the handler's slot: a small, bounded pool of writer threads.

A slot runs the handler and encodes its result (``results``), hands the part to this pool
and takes the next part. A writer writes ``DEST/part-NNNNNN.jsonl`` and only then reports
the part ``written``: its ``part_done`` event and, once that is confirmed, its ack follow.
So uploads overlap handling, and the ack still never comes before the object (at least
once: a part redelivered for any reason overwrites its own object). A write that fails,
after the storage client's own bounded retries (``core.storage.RETRY_S``), reports the part
``failed``: ``part_failed`` and a nack; it is redelivered and written again.

``writers_for`` picks the pool's size: 16 threads for a ``gs://`` DEST, whose uploads wait on the
network, none for a folder, whose write is a few system calls: handing them to a thread costs more
CPU and drain time than making them on the slot (bench/results_sink.py: +19 % CPU on the slot
against +34 % with 4 threads, drain 1.5 s against 2.1 s for 2000 parts). With none, ``submit``
writes on the caller's thread, and the same reports follow.

Bounded: ``writers`` writes at once, ``queued`` more waiting, and at most ``max_bytes`` of
waiting bodies (one body always goes, whatever its size). When full, ``submit`` blocks the
slot: the slots stay busy and the pull loop stops pulling. A waiting part is still held
(``lease``): its lease is renewed, it counts as in flight for drain and for the part timeout.

Stop: the drain budget covers writes (a part being written is held, and the worker waits for
its held parts); then ``stop()`` drops the parts still waiting (the worker has nacked everything
it held by then, so none of them is acked) and lets running writes end on their own: the
threads are daemons, and a part whose write ends after the stop finds its outcome taken, so it
is not acked.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchctl.worker.lease import Held
from batchctl.worker.results import PartResult

REMOTE_WRITERS = 16
"""Writer threads for a ``gs://`` DEST unless ``BATCHCTL_WRITERS`` says (at most 64, the connections
``core.storage`` keeps). Each waits out its upload's round trip (tens of ms to Cloud Storage), so they
bound a worker's pace: W writers at ~50 ms write at most 20 W parts/s. 4 made ~80 parts/s, a tenth of
what a light handler does; 16: ~320 (bench/results_latency.py: behind ~55 ms, the pace of the raw
client with as many threads until the emulator's own ~170 uploads/s bound both)."""

MAX_BYTES = 64 * 1024 * 1024
"""Bodies waiting for a writer beyond which ``submit`` blocks."""


@dataclass(eq=False)
class Job:
    """One part's encoded result, from its slot to its writer."""

    held: Held
    index: int
    attempt: int
    result: PartResult

    @property
    def body(self) -> bytes:
        return self.result.body


def writers_for(*, remote: bool, configured: int | None) -> int:
    """Writer threads: as configured, else ``REMOTE_WRITERS`` for a bucket and 0 (on the slot) for a folder."""
    if configured is not None:
        return configured
    return REMOTE_WRITERS if remote else 0


Write = Callable[[int, bytes, int], None]
"""``write(index, body, records)``: create or overwrite the part's object (``Sink.write_part``)."""


class ResultWriter:
    """``writers`` daemon threads writing ``Job``s; ``written(job)`` or ``failed(job, reason)`` after each.

    Jobs travel on a ``SimpleQueue`` (a put wakes one writer); one lock guards the counts, and
    its condition wakes only those waiting for room or for idleness: a part costs two
    uncontended lock round trips beside its queue hand-over.
    """

    def __init__(
        self,
        write: Write,
        *,
        written: Callable[[Job], None],
        failed: Callable[[Job, str], None],
        log: Any,
        writers: int,
        queued: int | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._write = write
        self._written = written
        self._failed = failed
        self._log = log
        self.writers = writers
        self.queued = 2 * writers if queued is None else queued
        self._max_bytes = max_bytes
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._waiting = 0
        self._waiting_bytes = 0
        self._running = 0
        self._stopped = False
        self._changed = threading.Condition(threading.Lock())

    def start(self) -> None:
        for n in range(self.writers):
            threading.Thread(target=self._run, name=f"writer-{n}", daemon=True).start()

    def submit(self, job: Job) -> bool:
        """Queue ``job``, blocking while the pool is full (with no threads: write it now, on this
        thread); False (not taken) once stopped."""
        if not self.writers:
            return self._inline(job)
        size = len(job.body)
        with self._changed:
            if not self._has_room(size):
                self._changed.wait_for(lambda: self._stopped or self._has_room(size))
            if self._stopped:
                return False
            self._waiting += 1
            self._waiting_bytes += size
        self._jobs.put(job)
        return True

    def _inline(self, job: Job) -> bool:
        with self._changed:
            if self._stopped:
                return False
            self._running += 1
        try:
            self._one(job)
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()
        return True

    def _has_room(self, size: int) -> bool:
        return not self._waiting or (self._waiting < self.queued and self._waiting_bytes + size <= self._max_bytes)

    def pending(self) -> int:
        """Parts waiting for a writer or being written."""
        with self._changed:
            return self._waiting + self._running

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no part waits or is being written; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._waiting and not self._running, timeout=max(0.0, timeout))

    def stop(self) -> int:
        """Drop the waiting parts (returns how many) and end the threads after their current write."""
        with self._changed:
            self._stopped = True
            dropped = self._waiting
            self._waiting = self._waiting_bytes = 0
            self._changed.notify_all()
        for _ in range(self.writers):
            self._jobs.put(None)
        return dropped

    # ---- a writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._changed:
                if self._stopped:  # dropped by ``stop``
                    continue
                self._waiting -= 1
                self._waiting_bytes -= len(job.body)
                self._running += 1
                self._changed.notify_all()
            try:
                self._one(job)
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()

    def _one(self, job: Job) -> None:
        """Write, then report; a writer outlives every exception (a report that raises is logged)."""
        try:
            self._write(job.index, job.body, job.result.records)
        except BaseException as exc:  # any failure: the part is nacked, never acked
            reason = f"result not written: {type(exc).__name__}: {exc}"
            self._report(self._failed, job, reason)
            return
        self._report(self._written, job)

    def _report(self, report: Callable[..., None], job: Job, *args: str) -> None:
        try:
            report(job, *args)
        except Exception as exc:  # a bug here must not end the writer (its part is given back at exit)
            with contextlib.suppress(Exception):
                self._log.error("writer_report_failed", part=job.index, error=f"{type(exc).__name__}: {exc}")
