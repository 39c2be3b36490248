"""The drain rule: consecutive empty pulls while waiting for nothing.

Checks: N empty pulls with nothing held drain; a received part or a nack starts
the count again; empty pulls while parts are in flight, or while a nacked part is
due back, do not count; a nacked part stops being awaited when it is received
again, when its backoff has passed, or at once when it goes to the dead-letter
topic; the expected backoff follows the subscription's policy.
"""

from __future__ import annotations

import pytest

from batchctl.worker.drain import DrainTracker, RetryPolicy

POLICY = RetryPolicy(min_backoff_s=1, max_backoff_s=60, max_delivery_attempts=5)


def test_n_consecutive_empty_pulls_with_nothing_in_flight_drain() -> None:
    """The third empty pull (of 3 needed) says drained, not before."""
    tracker = DrainTracker(3)
    assert [tracker.empty_pull(in_flight=0, now=0) for _ in range(3)] == [False, False, True]


def test_a_received_part_starts_the_count_again() -> None:
    """Two empties, a part, then three more empties are needed."""
    tracker = DrainTracker(3)
    tracker.empty_pull(in_flight=0, now=0)
    tracker.empty_pull(in_flight=0, now=0)
    tracker.received(["m1"])
    assert [tracker.empty_pull(in_flight=0, now=0) for _ in range(3)] == [False, False, True]


def test_empty_pulls_while_parts_are_in_flight_do_not_count() -> None:
    """However many empty pulls come while parts are held, none counts."""
    tracker = DrainTracker(1)
    assert not any(tracker.empty_pull(in_flight=2, now=0) for _ in range(10))
    assert tracker.empty == 0
    assert tracker.empty_pull(in_flight=0, now=0)


def test_a_nacked_part_is_awaited_through_its_backoff() -> None:
    """Nacked on attempt 3 (4 s backoff): empty pulls do not count until 4 * 1.5 + 2 = 8 s have passed."""
    tracker = DrainTracker(2, POLICY)
    tracker.nacked("m1", 3, now=100.0)
    assert not any(tracker.empty_pull(in_flight=0, now=100.0 + t) for t in range(8))
    assert [tracker.empty_pull(in_flight=0, now=108.0 + t) for t in range(2)] == [False, True]


def test_a_nacked_part_received_again_is_no_longer_awaited() -> None:
    """The redelivery came back to this worker: counting resumes from there."""
    tracker = DrainTracker(1, POLICY)
    tracker.nacked("m1", 1, now=0.0)
    tracker.received(["m1"])
    assert tracker.awaited(now=0.5) == 0
    assert tracker.empty_pull(in_flight=0, now=0.5)


def test_a_part_nacked_on_its_last_attempt_is_not_awaited() -> None:
    """Attempt 5 of 5 goes to the dead-letter topic: only the count restarts."""
    tracker = DrainTracker(1, POLICY)
    tracker.empty_pull(in_flight=0, now=0)
    tracker.nacked("m1", 5, now=0.0)
    assert tracker.awaited(now=0.0) == 0
    assert tracker.empty == 0


def test_without_dead_letter_policy_every_nack_comes_back() -> None:
    """max_delivery_attempts None: even attempt 100 is awaited."""
    assert RetryPolicy(max_delivery_attempts=None).comes_back(100)


@pytest.mark.parametrize(("attempt", "due"), [(1, 3.5), (2, 5.0), (3, 8.0), (7, 60 * 1.5 + 2), (0, 3.5)])
def test_expected_backoff_doubles_up_to_the_maximum(attempt: int, due: float) -> None:
    """min * 2^(attempt-1), capped at max, with margin: 1.5x + 2 s."""
    assert POLICY.due_within(attempt) == due


def test_at_least_one_empty_pull_is_needed() -> None:
    """0 would mean drained before looking."""
    with pytest.raises(ValueError, match="needed"):
        DrainTracker(0)


def test_a_part_whose_nack_failed_is_awaited_past_its_lease() -> None:
    """The nack RPC failed: the part is invisible until its lease lapses, then due after its backoff."""
    tracker = DrainTracker(1, POLICY)
    tracker.nacked("m1", 1, now=0, leased_until=30)
    assert tracker.awaited(now=30) == 1
    assert tracker.awaited(now=30 + POLICY.due_within(1) - 0.01) == 1
    assert tracker.awaited(now=30 + POLICY.due_within(1) + 0.01) == 0


def test_the_launchers_policy_of_ten_attempts_awaits_a_fifth_nack() -> None:
    """With max delivery attempts 10 (passed by the launcher), a part nacked on attempt 5 comes back."""
    tracker = DrainTracker(1, RetryPolicy(max_delivery_attempts=10))
    tracker.nacked("m1", 5, now=0)
    assert tracker.awaited(now=0) == 1
