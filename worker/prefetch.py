"""How many parts a worker pulls ahead of its free slots: a pure rule, and the part-time average it reads.

Prefetch pays for itself only when parts are short: a pull round trip then serves many of
them. For long parts it is harmful: parts waiting on one worker are invisible to the
others, which may find the queue empty and exit. So by default the window holds about
``HORIZON_S`` of work: ``concurrency * HORIZON_S / average part time``, at least one part
per slot, at most ``MAX_WINDOW``. Until a part has been timed, one part per slot.
A fixed ``--prefetch N`` replaces the rule (0: no prefetch).
"""

from __future__ import annotations

HORIZON_S = 0.5
"""Seconds of work a worker holds ahead of its slots: a few pull round trips, never a long part's share."""
MAX_WINDOW = 1000
"""At most this many parts wait (the official client's default flow control holds 1,000 messages too)."""
SMOOTHING = 0.1
"""Weight of the newest part time in the running average."""


def window(*, concurrency: int, average_part_s: float | None, fixed: int | None) -> int:
    """Parts to hold beyond the busy slots."""
    if fixed is not None:
        return fixed
    if average_part_s is None:
        return concurrency
    ahead = concurrency * HORIZON_S / max(average_part_s, 1e-6)
    return int(min(MAX_WINDOW, max(concurrency, ahead)))


class PartTimes:
    """Exponentially weighted average of handler seconds (a float written by slots, read by the loop)."""

    def __init__(self) -> None:
        self.average: float | None = None

    def add(self, seconds: float) -> None:
        previous = self.average
        self.average = seconds if previous is None else previous + SMOOTHING * (seconds - previous)
