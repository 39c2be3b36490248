"""The prefetch window rule.

Checks: one part per slot before any part is timed; about half a second of work ahead
(short parts: many, capped at 1,000; long parts: one per slot); a fixed window wins;
the running average moves toward new part times.
"""

from __future__ import annotations

from batchctl.worker.prefetch import MAX_WINDOW, PartTimes, window


def test_one_part_per_slot_until_a_part_is_timed() -> None:
    assert window(concurrency=4, average_part_s=None, fixed=None) == 4


def test_short_parts_get_a_large_window_capped() -> None:
    """1 ms parts: 500 per slot; 10 µs parts: the cap."""
    assert window(concurrency=1, average_part_s=0.001, fixed=None) == 500
    assert window(concurrency=8, average_part_s=0.00001, fixed=None) == MAX_WINDOW


def test_long_parts_get_one_per_slot() -> None:
    """Two-second parts: nothing beyond one waiting part per slot, so other workers share the queue."""
    assert window(concurrency=2, average_part_s=2.0, fixed=None) == 2


def test_a_fixed_window_wins() -> None:
    assert window(concurrency=2, average_part_s=0.001, fixed=0) == 0
    assert window(concurrency=2, average_part_s=None, fixed=7) == 7


def test_the_average_follows_part_times() -> None:
    times = PartTimes()
    times.add(1.0)
    assert times.average == 1.0
    for _ in range(50):
        times.add(0.0)
    assert times.average is not None and times.average < 0.01
