"""The cut: planned a part at a time, it equals the record-by-record greedy cut, and the second
pass builds exactly the planned parts whatever the block boundaries."""

from __future__ import annotations

import hashlib
import random
import tracemalloc

import pytest

from batchctl.splitter.partitioner import PartLimits, build, plan


def greedy(lengths: list[int], limits: PartLimits) -> list[int]:
    """The reference: a new part when the next record would break either limit."""
    counts: list[int] = []
    count = size = 0
    for length in lengths:
        if count and (count >= limits.records_per_part or size + 1 + length > limits.max_part_bytes):
            counts.append(count)
            count = size = 0
        size += length + (1 if count else 0)
        count += 1
    if count:
        counts.append(count)
    return counts


def blocks_of(records: list[bytes], rng: random.Random) -> list[list[bytes]]:
    out, i = [], 0
    while i < len(records):
        step = rng.randint(0, 40)
        out.append(records[i : i + step])
        i += step
    return out


@pytest.mark.parametrize("seed", range(40))
def test_plan_equals_greedy_and_build_follows_it(seed: int) -> None:
    """Random record sizes, limits and block boundaries: same cut as the greedy reference; parts
    rebuilt from other block boundaries hold the records in order, within both limits."""
    rng = random.Random(seed)
    limits = PartLimits(rng.randint(1, 12), rng.randint(20, 200))
    records = [bytes([97 + i % 26]) * rng.randint(0, 20) for i in range(rng.randint(0, 300))]
    cut = plan(blocks_of(records, rng), limits)
    assert list(cut.counts) == greedy([len(r) for r in records], limits)
    assert cut.records == len(records)
    parts = list(build(blocks_of(records, rng), cut))
    assert b"\n".join(p.data for p in parts) == b"\n".join(records)
    assert [p.index for p in parts] == list(range(len(cut)))
    assert all(len(p.data) <= limits.max_part_bytes and p.records <= limits.records_per_part for p in parts)
    assert all(p.sha256 == hashlib.sha256(p.data).hexdigest() for p in parts)
    assert cut.bytes == sum(len(p.data) for p in parts)


def test_build_only_some_parts() -> None:
    """``only`` yields just the named parts, with their own indexes."""
    records = [b"x"] * 10
    cut = plan([records], PartLimits(3))
    assert [p.index for p in build([records], cut, only={1, 3})] == [1, 3]


def test_a_huge_records_per_part_keeps_memory_flat() -> None:
    """--records-per-part 10**9 over 400,000 records: the plan holds a block, never every record's length."""
    blocks = ([b"x"] * 1000 for _ in range(400))
    tracemalloc.start()
    try:
        cut = plan(blocks, PartLimits(records_per_part=10**9, max_part_bytes=9_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert list(cut.counts) == [400_000]
    assert cut.bytes == 2 * 400_000 - 1
    assert peak < 512 * 1024, f"peak {peak} bytes"
