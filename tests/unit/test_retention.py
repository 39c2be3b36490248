"""``launcher.retention``: which finished batches are forgotten, and when.

Checks: durations ``7d``/``12h``/``30m``/``30s`` parse to seconds, anything else (no unit,
two units, zero, over ten years, blanks inside) is refused; ``BATCHCTL_RETENTION`` defaults to
7 days and a bad value is one BadInput naming the variable; ``expired`` picks exactly the
succeeded, failed and cancelled batches whose end lies at least the retention in the past
(oldest first), never an unfinished one, and falls back to the creation time for a record
without an end; the sweep interval is a tenth of the retention within 1 s..60 s.
"""

from __future__ import annotations

import pytest

from batchctl.core.errors import BadInput
from batchctl.launcher.retention import ends_of, expired, parse_duration, retention_from_env, sweep_interval
from batchctl.launcher.state import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, BatchState
from tests.unit.test_state import request

NOW = 1_800_000_000.0


def batch(batch_id: str, state: str, *, finished: float | None, created: float = NOW - 10**6) -> BatchState:
    return BatchState(request(batch_id=batch_id, created=created), state=state, finished=finished, created=created)


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800), ("12h", 43200), ("30m", 1800), ("30s", 30),
                                               ("1s", 1), (" 2h ", 7200), ("3650d", 3650 * 86400)])
def test_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "1h30m", "0s", "3651d", "-1d", "1.5h", "7 d", "7D", "1w"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|outside"):
        parse_duration(text)


def test_retention_defaults_to_seven_days() -> None:
    assert retention_from_env({}) == retention_from_env({"BATCHCTL_RETENTION": ""}) == 7 * 86400


def test_a_bad_retention_names_the_variable() -> None:
    with pytest.raises(BadInput, match=r"^BATCHCTL_RETENTION: 'forever' is not a duration"):
        retention_from_env({"BATCHCTL_RETENTION": "forever"})


def test_only_finished_batches_past_their_retention_expire_oldest_first() -> None:
    batches = [
        batch("young", SUCCEEDED, finished=NOW - 29),
        batch("exact", FAILED, finished=NOW - 30),
        batch("old", CANCELLED, finished=NOW - 3000),
        batch("running", RUNNING, finished=None),
        batch("pending", PENDING, finished=None),
        batch("stale-running", RUNNING, finished=NOW - 3000),  # a retry reopened it: not finished
    ]
    assert expired(ends_of(batches), now=NOW, retention_s=30) == ["old", "exact"]


def test_a_finished_record_without_an_end_counts_from_its_creation() -> None:
    old, young = (batch("legacy", SUCCEEDED, finished=None, created=NOW - age) for age in (100, 10))
    assert expired(ends_of([old]), now=NOW, retention_s=30) == ["legacy"]
    assert expired(ends_of([young]), now=NOW, retention_s=30) == []


def test_ends_read_from_the_store_count_like_those_in_memory() -> None:
    """Settled batches are no longer held: their ends come from the store, ties broken by id."""
    assert expired({"b": NOW - 100, "a": NOW - 100, "c": NOW - 5}, now=NOW, retention_s=30) == ["a", "b"]


@pytest.mark.parametrize(("retention", "interval"), [(3.0, 1.0), (30.0, 3.0), (7 * 86400.0, 60.0)])
def test_sweeps_run_at_a_tenth_of_the_retention_within_bounds(retention: float, interval: float) -> None:
    assert sweep_interval(retention) == interval


def test_an_unreadable_batch_is_never_forgotten_by_retention() -> None:
    """A batch loaded from a corrupt state document has no trustworthy end (a document cut short
    gives none at all): retention leaves it, and its object, for a human (before: the chaos run's
    cut-short ConfigMap was forgotten, object and all, on the first sweep after the reload)."""
    broken = BatchState(request=request(10, created=0.0), state=FAILED, corrupt=True,
                        reason="stored state unreadable (ConfigMap p-b1-state: ...)")
    fine = BatchState(request=request(10, batch_id="b2", created=5.0), state=FAILED, finished=10.0)
    assert ends_of([broken, fine]) == {"b2": 10.0}
