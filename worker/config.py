"""The worker's configuration: environment variables the launcher sets, flags for running by hand.

Pure: ``WorkerConfig.from_sources(environ, flags)`` reads nothing else, and reports
every bad value in one ``BadInput`` naming the variable or flag it came from.
A flag, when given, wins over its variable.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchctl.core.errors import BadInput
from batchctl.core.names import BATCH_ID_RE, Names, validate_batch_id
from batchctl.core.settings import WORK_ACK_DEADLINE_S

DEFAULT_HANDLER = "batchctl.worker.demo:handle"
HANDLER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class Option:
    """One setting: its field, variable, flag and how its text becomes a value."""

    field: str
    env: str
    flag: str
    parse: Callable[[str], Any]
    rule: str


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError
        return value

    return parse


def _float_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:  # also rejects nan
            raise ValueError
        return value

    return parse


def _handler_spec(text: str) -> str:
    if not HANDLER_RE.match(text):
        raise ValueError
    return text


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError
    return text.strip()


OPTIONS = (
    Option("batch_id", "BATCHCTL_BATCH_ID", "--batch-id", validate_batch_id, "a valid batch id"),
    Option("subscription", "BATCHCTL_SUBSCRIPTION", "--subscription", _text, "a subscription name or path"),
    Option("handler", "BATCHCTL_HANDLER", "--handler", _handler_spec, "MODULE:FUNC"),
    Option("concurrency", "BATCHCTL_CONCURRENCY", "--concurrency", _int_between(1, 256), "an integer 1..256"),
    Option("empty_pulls", "BATCHCTL_EMPTY_PULLS", "--empty-pulls", _int_between(1, 100), "an integer 1..100"),
    Option(
        "pull_timeout_s",
        "BATCHCTL_PULL_TIMEOUT_S",
        "--pull-timeout",
        _float_between(0.1, 60),
        "seconds 0.1..60",
    ),
    Option(
        "drain_budget_s",
        "BATCHCTL_DRAIN_BUDGET_S",
        "--drain-budget",
        _float_between(0, 3600),
        "seconds 0..3600",
    ),
    Option("lease_s", "BATCHCTL_LEASE_S", "--lease", _int_between(1, 600), "an integer 1..600 (seconds)"),
    Option(
        "unreachable_s",
        "BATCHCTL_UNREACHABLE_S",
        "--unreachable-timeout",
        _float_between(1, 3600),
        "seconds 1..3600",
    ),
    Option("prefetch", "BATCHCTL_PREFETCH", "--prefetch", _int_between(0, 10000), "an integer 0..10000"),
    Option(
        "prefetch_bytes",
        "BATCHCTL_PREFETCH_BYTES",
        "--prefetch-bytes",
        _int_between(0, 1 << 30),
        "bytes 0..1073741824",
    ),
    Option(
        "part_timeout_s",
        "BATCHCTL_PART_TIMEOUT_S",
        "--part-timeout",
        _float_between(1, 7 * 86400),
        "seconds 1..604800",
    ),
    Option(
        "max_delivery_attempts",
        "BATCHCTL_MAX_DELIVERY_ATTEMPTS",
        "--max-delivery-attempts",
        _int_between(5, 100),
        "an integer 5..100",
    ),
    Option("ack_deadline_s", "BATCHCTL_ACK_DEADLINE_S", "--subscription-ack-deadline", _int_between(10, 600),
           "an integer 10..600 (seconds)"),
    Option("worker_id", "BATCHCTL_WORKER_ID", "--worker-id", _text, "a non-empty name"),
    Option("results_dir", "BATCHCTL_RESULTS_DIR", "--results-dir", lambda t: Path(_text(t)), "a directory"),
    Option("output", "BATCHCTL_OUTPUT", "--output", _text, "gs://BUCKET/PREFIX/ or a folder"),
    # at most core.storage.CONNECTIONS, the connections kept to the bucket
    Option("writers", "BATCHCTL_WRITERS", "--writers", _int_between(0, 64), "an integer 0..64"),
)


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker runs; every default is chosen for a pod of a batch Job."""

    batch_id: str
    """The batch whose parts this worker drains; parts of another batch are rejected."""
    subscription: str
    """Work subscription, short name or ``projects/…/subscriptions/…``; default ``P-<batch>-work``."""
    handler: str = DEFAULT_HANDLER
    """``MODULE:FUNC`` called once per part."""
    concurrency: int = 1
    """Parts handled at once. 1 keeps a long part from holding back others' share of the batch."""
    empty_pulls: int = 3
    """Consecutive empty pulls, with nothing in flight, that mean drained; one proves nothing."""
    pull_timeout_s: float = 1.0
    """Longest wait of one pull, and the least spacing of empty pulls: drain takes about
    ``empty_pulls * pull_timeout_s`` (3 s), inside the 5 s target on the emulator and real Pub/Sub."""
    drain_budget_s: float = 20.0
    """After SIGTERM, how long in-flight parts may run before they are nacked. The Job's
    ``terminationGracePeriodSeconds`` is this + 10, leaving time to nack and report."""
    lease_s: int = WORK_ACK_DEADLINE_S
    """Ack deadline the worker keeps renewing on held parts, every ``min(lease_s, 10) / 3`` s.
    A killed worker's parts return within this long of the last renewal (a part pulled
    less than one renewal period before the kill keeps the subscription's ack deadline)."""
    unreachable_s: float = 30.0
    """How long pulls may fail to reach Pub/Sub before the worker gives up with exit 3. Longer than
    a usual blip (a restart of a Pub/Sub frontend); the Job then replaces the pod, which retries."""
    prefetch: int | None = None
    """Parts pulled ahead of a free slot, waiting for one (their leases renewed like running parts').
    None: about half a second of work (``worker.prefetch``): many short parts per pull round trip,
    one long part per slot. A stop gives them back at once. 0: no prefetch."""
    prefetch_bytes: int = 16 * 1024 * 1024
    """Bytes of waiting parts beyond which no more are pulled (at most one pull over)."""
    part_timeout_s: float = 2 * 3600.0
    """Longest a handler may run on one part. Past it the part is nacked (the try counts as a
    delivery attempt) and, since a Python thread cannot be stopped, the worker stops pulling
    and exits 1 so its pod is replaced. Two hours: twice the official client's default maximum
    lease (1 h), so a genuinely long part is not cut; a deadlocked handler still ends."""
    max_delivery_attempts: int | None = None
    """The work subscription's max delivery attempts, as the launcher created it (it passes the
    batch's value). None: read the subscription (needs ``pubsub.subscriptions.get``), else 5."""
    ack_deadline_s: int | None = None
    """The work subscription's ack deadline: how long a part whose nack failed may stay leased
    before its first renewal. None: the batch default (``core.topology``)."""
    worker_id: str = ""
    """Name in events and logs; default ``hostname-pid`` (the pod name in a Job)."""
    results_dir: Path = Path("batchctl-results")
    """Where handlers (the demo one) write per-part results."""
    output: str | None = None
    """The batch's ``--output DEST``: each part's returned result goes to ``DEST/part-NNNNNN.jsonl``."""
    writers: int | None = None
    """Threads writing results (``worker.writer``) beside the handler slots, so uploads overlap
    handling; each part is acked only once its object is written. None: 4 for ``gs://``, 0 for
    a folder (0: written on the handler's slot). At most 10: the Storage client keeps 10
    connections per host."""

    @property
    def renew_every_s(self) -> float:
        """Lease renewal period: before either our lease or Pub/Sub's 10 s minimum deadline lapses."""
        return min(self.lease_s, 10) / 3

    @classmethod
    def from_sources(
        cls, environ: Mapping[str, str], flags: Mapping[str, str | None] | None = None, *, prefix: str
    ) -> WorkerConfig:
        """Build from variables and flags (``flags`` keyed by field name, None = not given)."""
        flags = flags or {}
        values: dict[str, Any] = {}
        problems: list[str] = []
        for option in OPTIONS:
            flag_text = flags.get(option.field)
            text = flag_text if flag_text is not None else environ.get(option.env)
            if text is None or text == "":
                continue
            source = option.flag if flag_text is not None else option.env
            try:
                values[option.field] = option.parse(text)
            except (ValueError, BadInput):
                problems.append(f"{source}={text!r}: must be {option.rule}")
        _fill_batch_and_subscription(values, problems, prefix)
        if problems:
            raise BadInput("; ".join(problems))
        values.setdefault("worker_id", f"{socket.gethostname()}-{os.getpid()}")
        return cls(**values)


def _fill_batch_and_subscription(values: dict[str, Any], problems: list[str], prefix: str) -> None:
    """Either names the other: a batch gives ``P-<batch>-work``, a work subscription gives its batch."""
    names = Names(prefix)
    if "batch_id" not in values and "subscription" in values:
        short = str(values["subscription"]).rsplit("/", 1)[-1]
        head, tail = f"{prefix}-", "-work"
        if short.startswith(head) and short.endswith(tail) and len(short) > len(head) + len(tail):
            candidate = short[len(head) : -len(tail)]
            if BATCH_ID_RE.match(candidate):
                values["batch_id"] = candidate
    if "batch_id" not in values:
        if not any(p.startswith(("BATCHCTL_BATCH_ID", "--batch-id")) for p in problems):
            problems.append("BATCHCTL_BATCH_ID (or --batch-id) is not set")
        return
    values.setdefault("subscription", names.work(values["batch_id"]))
