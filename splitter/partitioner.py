"""Cut a record stream into parts that respect Pub/Sub's limits.

A part is its records joined by newlines: at most ``records_per_part`` records and
``max_part_bytes`` bytes. The total number of parts is an attribute of every part, so
the cut is planned first (``plan``: one pass that keeps only a count per part) and
the parts are then built and published in a second pass over the same input
(``build``), which cuts exactly where the plan says. Memory stays flat: neither pass
holds more than a block of records.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from batchctl.core.errors import BadInput

MAX_PART_BYTES_CEILING = 9_500_000
"""Hard ceiling: under Pub/Sub's 10 MB message limit with room for attributes."""
DEFAULT_MAX_PART_BYTES = 1024 * 1024
DEFAULT_RECORDS_PER_PART = 100


@dataclass(frozen=True)
class PartLimits:
    records_per_part: int = DEFAULT_RECORDS_PER_PART
    max_part_bytes: int = DEFAULT_MAX_PART_BYTES

    def __post_init__(self) -> None:
        if self.records_per_part < 1:
            raise BadInput(f"--records-per-part {self.records_per_part}: must be at least 1")
        if not 1 <= self.max_part_bytes <= MAX_PART_BYTES_CEILING:
            raise BadInput(
                f"--max-part-bytes {self.max_part_bytes}: must be between 1 and {MAX_PART_BYTES_CEILING}"
            )


@dataclass(frozen=True)
class Part:
    index: int
    data: bytes
    records: int
    sha256: str


@dataclass
class PartPlan:
    """How many records go in each part, and the totals."""

    counts: array[int] = field(default_factory=lambda: array("L"))
    records: int = 0
    bytes: int = 0

    def __len__(self) -> int:
        return len(self.counts)


def plan(blocks: Iterable[list[bytes]], limits: PartLimits) -> PartPlan:
    """Decide the cut: greedy, a new part when the next record would break either limit.

    Works a part at a time (a C-level ``sum`` over the next ``records_per_part`` lengths),
    falling back to record by record only for a part that the byte limit cuts short.
    """
    result = PartPlan()
    lengths: list[int] = []
    for block in blocks:
        lengths.extend(map(len, block))
        result.records += len(block)
        taken = _cut(lengths, result, limits, final=False)
        del lengths[:taken]
    _cut(lengths, result, limits, final=True)
    return result


def _cut(lengths: list[int], result: PartPlan, limits: PartLimits, *, final: bool) -> int:
    """Append the parts that ``lengths`` completes; return how many records they took."""
    per_part, max_bytes = limits.records_per_part, limits.max_part_bytes
    i, n = 0, len(lengths)
    while n - i >= per_part or (final and i < n):
        end = min(i + per_part, n)
        size = sum(lengths[i:end]) + (end - i - 1)
        if size > max_bytes:  # the byte limit ends this part early: within the window, so no carry
            end, size = i + 1, lengths[i]
            while end < n and size + 1 + lengths[end] <= max_bytes:
                size += 1 + lengths[end]
                end += 1
        result.counts.append(end - i)
        result.bytes += size
        i = end
    return i


def build(blocks: Iterable[list[bytes]], cut: PartPlan, *, only: set[int] | None = None) -> Iterator[Part]:
    """The parts of ``cut`` from a second pass over the same records (or just those in ``only``)."""
    pending: list[bytes] = []
    index = 0
    for block in blocks:
        pending.extend(block)
        taken = 0
        while index < len(cut) and len(pending) - taken >= cut.counts[index]:
            n = cut.counts[index]
            if only is None or index in only:
                data = b"\n".join(pending[taken : taken + n])
                yield Part(index, data, n, hashlib.sha256(data).hexdigest())
            taken += n
            index += 1
        del pending[:taken]
    if pending or index != len(cut):
        raise BadInput("the input changed between reading it and publishing it")
