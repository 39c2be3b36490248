"""The worker's rules for redelivered parts (``batchctl.worker.solo``), pure.

Checks: only a second or later delivery is a redelivery (0 and 1 are first deliveries: Pub/Sub
sends 0 without a dead-letter policy); a redelivery waits behind first deliveries and otherwise
runs alone; pulls take one part at a time while redelivered parts are about, else the whole room.
"""

from __future__ import annotations

import pytest

from batchctl.worker.solo import Turn, may_give_back, pull_size, redelivered, turn


@pytest.mark.parametrize(("attempt", "expected"), [(0, False), (1, False), (2, True), (5, True), (100, True)])
def test_redelivered_from_the_second_delivery(attempt: int, expected: bool) -> None:
    assert redelivered(attempt) is expected


@pytest.mark.parametrize(("waiting", "expected"), [(0, Turn.ALONE), (1, Turn.LATER), (500, Turn.LATER)])
def test_a_redelivery_runs_after_first_deliveries_then_alone(waiting: int, expected: Turn) -> None:
    assert turn(waiting_first_deliveries=waiting) is expected


@pytest.mark.parametrize(("room", "careful", "expected"),
                         [(0, False, 0), (0, True, 0), (1, True, 1), (40, True, 1), (40, False, 40)])
def test_one_part_per_pull_while_redeliveries_are_about(room: int, careful: bool, expected: int) -> None:
    assert pull_size(room, careful=careful) == expected


@pytest.mark.parametrize(("attempt", "most", "may"), [
    (1, 5, True), (2, 5, True), (3, 5, True), (4, 5, False), (5, 5, False), (1, 2, False), (9, None, True),
])
def test_a_part_is_given_back_only_with_two_deliveries_to_spare(attempt: int, most: int | None, may: bool) -> None:
    """Giving back costs a delivery: never so many that a healthy part, bounced between workers that
    each run another redelivered part alone, reaches the dead-letter topic without a real try."""
    assert may_give_back(attempt, most) is may
