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
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate

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

    Memory and time are flat in the part size: only the open part's count and size carry
    from block to block, and within a block each cut is found by bisecting the block's
    running sizes (C-level ``accumulate``), so a part costs O(log block) however many
    records ``--records-per-part`` allows.
    """
    result = PartPlan()
    part = _OpenPart()
    for block in blocks:
        result.records += len(block)
        _cut(block, part, result, limits)
    if part.count:
        part.close(result)
    return result


@dataclass
class _OpenPart:
    """The part being planned: its records so far and their cost (bytes + one separator each)."""

    count: int = 0
    cost: int = 0

    def close(self, result: PartPlan) -> None:
        result.counts.append(self.count)
        result.bytes += self.cost - 1
        self.count = self.cost = 0


def _cut(block: list[bytes], part: _OpenPart, result: PartPlan, limits: PartLimits) -> None:
    """Add a block's records to the open part, closing every part they complete."""
    costs = [0, *accumulate(len(record) + 1 for record in block)]
    budget = limits.max_part_bytes + 1  # a part's cost counts one separator too many
    i, n = 0, len(block)
    while i < n:
        by_count = i + limits.records_per_part - part.count
        by_bytes = bisect_right(costs, budget - part.cost + costs[i], lo=i) - 1
        end = min(by_count, by_bytes, n)
        if end == i and part.count:  # the next record does not fit: close, retry in a fresh part
            part.close(result)
            continue
        end = max(end, i + 1)  # an empty part takes at least one record, whatever its size
        part.count += end - i
        part.cost += costs[end] - costs[i]
        i = end
        if part.count >= limits.records_per_part or (i < n and end == by_bytes):
            part.close(result)


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
