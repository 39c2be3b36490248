"""A batch's durable state: its request, which parts are done or dead, its Jobs.

Serialised to a small JSON document (part sets as zlib-compressed bitmaps, so a
batch of a million parts stays far under a ConfigMap's 1 MiB) and kept by a
``StateStore``: ConfigMaps for the Kubernetes backend, files for the local one.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from batchctl.core.messages import BatchRequest

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "pending", "running", "succeeded", "failed", "cancelled"
REJECTED = "rejected"
"""Admission refused the request (``core.admission``): no Job was ever created."""
TERMINAL = (SUCCEEDED, FAILED, CANCELLED, REJECTED)
QUEUED = "queued"
"""Under ``BATCHCTL_MAX_WORKERS``: the batch wants workers and its share of the budget is 0 for now."""


@dataclass(frozen=True)
class JobRecord:
    """A Job the launcher created for the batch (or a local process group)."""

    name: str
    n: int
    parallelism: int
    launched: float
    progress_at_launch: int
    """``BatchState.activity`` when the Job was launched: a Job that ends without moving it was idle."""


@dataclass
class BatchState:
    request: BatchRequest
    state: str = PENDING
    done: set[int] = field(default_factory=set)
    dead: set[int] = field(default_factory=set)
    jobs: list[JobRecord] = field(default_factory=list)
    created: float = 0.0
    finished: float | None = None
    reason: str = ""
    cleaned: bool = False
    retries: int = 0
    retry_floor: int = 0
    """Number of Jobs at the last retry: Jobs before it never count toward an idle streak."""
    failures: int = 0
    """part_failed and part_started events that carried no delivery attempt (and, in states saved
    before ``tried`` existed, every such event): activity when judging a Job idle."""
    tried: dict[int, int] = field(default_factory=dict)
    """Part -> the highest delivery attempt a ``part_failed`` or ``part_started`` reported: activity
    when judging a Job idle, and idempotent, so an event delivered twice (a crash between its save
    and its ack) counts once."""
    last_tries: set[int] = field(default_factory=set)
    """Parts whose last allowed delivery a worker started (``part_started`` at max attempts): if
    not done once no Job runs, their worker died on them, and Pub/Sub dead-letters them."""
    dead_checked: int = 0
    """Number of Jobs when the dead-letter subscription was last counted."""
    nudged_back_at: float = 0.0
    """Wall time by which the parts that count pulled and gave back are deliverable again (their
    retry backoff): a follow-up launched sooner finds an empty queue and ends idle."""
    worker_error: str = ""
    """The last error a worker reported exiting on (``worker_exited`` with ``error: ...``)."""
    pods: dict[str, int] = field(default_factory=dict)
    """Job name -> the most pods the launcher saw it have (active + succeeded + failed)."""
    ran: set[str] = field(default_factory=set)
    """Workers (pod names) that sent any event while the batch ran: each is a pod that ran. Stored,
    so a launcher that takes over counts the pods its predecessors heard from too."""
    queue_position: int = 0
    """1-based place in the line for workers while ``queued`` (0 otherwise)."""
    queued_since: float | None = None
    """When the batch last became ``queued`` (for the queue wait histogram)."""
    version: str | None = field(default=None, compare=False)
    """Store-specific version (a resourceVersion) of what was loaded; not serialised."""
    corrupt: bool = field(default=False, compare=False)
    """Loaded from a document that could not be decoded: shown failed; ``retry`` refuses it."""

    @property
    def batch_id(self) -> str:
        return self.request.batch_id

    @property
    def parts(self) -> int:
        return self.request.parts

    @property
    def progress(self) -> int:
        return len(self.done) + len(self.dead - self.done)

    @property
    def activity(self) -> int:
        """Grows whenever a worker reports anything about a part: the idle-Job yardstick."""
        return self.progress + self.failures + sum(self.tried.values())

    @property
    def remaining(self) -> int:
        return self.parts - self.progress

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "request": asdict(self.request),
            "state": self.state,
            "done": _pack(self.done),
            "dead": _pack(self.dead),
            "jobs": [asdict(j) for j in self.jobs],
            "created": self.created,
            "finished": self.finished,
            "reason": self.reason,
            "cleaned": self.cleaned,
            "retries": self.retries,
            "dead_checked": self.dead_checked,
            "nudged_back_at": self.nudged_back_at,
            "failures": self.failures,
            "tried": {str(k): v for k, v in self.tried.items()},
            "retry_floor": self.retry_floor,
            "worker_error": self.worker_error,
            "queue_position": self.queue_position,
            "queued_since": self.queued_since,
            "pods": self.pods,
            "ran": sorted(self.ran),
            "last_tries": _pack(self.last_tries),
        }
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, version: str | None = None) -> BatchState:
        body = json.loads(text)
        return cls(
            request=BatchRequest(**body["request"]),
            state=body["state"],
            done=_unpack(body["done"]),
            dead=_unpack(body["dead"]),
            jobs=[JobRecord(**j) for j in body["jobs"]],
            created=body["created"],
            finished=body["finished"],
            reason=body.get("reason", ""),
            cleaned=body.get("cleaned", False),
            retries=body.get("retries", 0),
            dead_checked=body.get("dead_checked", 0),
            nudged_back_at=body.get("nudged_back_at", 0.0),
            failures=body.get("failures", 0),
            tried={int(k): int(v) for k, v in body.get("tried", {}).items()},
            retry_floor=body.get("retry_floor", 0),
            worker_error=body.get("worker_error", ""),
            queue_position=body.get("queue_position", 0),
            queued_since=body.get("queued_since"),
            pods={str(k): int(v) for k, v in body.get("pods", {}).items()},
            ran={str(w) for w in body.get("ran", [])},
            last_tries=_unpack(body.get("last_tries", "")),
            version=version,
        )

    def copy(self) -> BatchState:
        return replace(self, done=set(self.done), dead=set(self.dead), jobs=list(self.jobs), pods=dict(self.pods),
                       tried=dict(self.tried), ran=set(self.ran),
                       last_tries=set(self.last_tries))

    def restore(self, saved: BatchState) -> None:
        """Put back every field of ``saved``, a ``copy()`` taken before a change the store refused."""
        for f in fields(self):
            setattr(self, f.name, getattr(saved, f.name))


@contextmanager
def reverting(batch: BatchState) -> Iterator[BatchState]:
    """Changes made to ``batch`` inside stay only if the block completes (its save succeeded).

    The store is the truth: memory must never run ahead of it, or a redelivered message would
    find its effect "done", be acked, and the next reload would drop it.
    """
    saved = batch.copy()
    try:
        yield batch
    except BaseException:
        batch.restore(saved)
        raise


UNREADABLE = (ValueError, KeyError, TypeError, zlib.error, binascii.Error)
"""What decoding a corrupt state document can raise (JSON, fields, base64, zlib)."""


def decode(text: str, *, version: str | None, where: str, batch_id: str | None = None) -> BatchState | None:
    """A stored batch; a corrupt one comes back ``failed`` naming what is wrong. If even its request
    is unreadable (a document cut short, garbage), the store's own name for it (``batch_id``: the
    object's label or file name) stands in, with a request of 0 parts; without one, None. The
    launcher does not rewrite it: it stays for a human to look at."""
    try:
        return BatchState.from_json(text, version=version)
    except UNREADABLE as exc:
        problem = f"{type(exc).__name__}: {exc}"
    try:
        body = json.loads(text)
        request = BatchRequest(**body["request"])
    except UNREADABLE:
        if not batch_id:
            return None
        request = BatchRequest(batch_id=batch_id, parts=0, records=0, bytes=0, handler="", created=0.0)
    return BatchState(request, state=FAILED, created=request.created, version=version, corrupt=True,
                      reason=f"stored state unreadable ({where}: {problem})"[:500])


def _pack(parts: set[int]) -> str:
    if not parts:
        return ""
    bits = bytearray((max(parts) >> 3) + 1)
    for p in parts:
        bits[p >> 3] |= 1 << (p & 7)
    return base64.b64encode(zlib.compress(bytes(bits), 6)).decode()


def _unpack(text: str) -> set[int]:
    if not text:
        return set()
    bits = zlib.decompress(base64.b64decode(text))
    return {i * 8 + b for i, byte in enumerate(bits) if byte for b in range(8) if byte >> b & 1}
