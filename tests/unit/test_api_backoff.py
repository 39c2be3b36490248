"""How long the launcher waits before calling a failing Kubernetes API again. Pure.

Checks: ``backoff_s`` doubles from 1 s up to its cap; ``retry_wait`` is the server's Retry-After
after a 429 (whatever the tries), else that backoff, capped at ``API_MAX_BACKOFF_S`` by default;
a batch's own backoff (``judge``) keeps its 30 s cap.
"""

from __future__ import annotations

import pytest

from batchctl.core.errors import Unreachable
from batchctl.launcher import failures
from batchctl.launcher.fence import NotLeader
from batchctl.launcher.kube import Conflict, Forbidden, Invalid, Throttled


@pytest.mark.parametrize(("tries", "wait"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (60, 8.0)])
def test_unreachable_backs_off_to_the_api_cap(tries: int, wait: float) -> None:
    """1, 2, 4, 8, 8... s: a minute's outage costs about ten tries, and a recovery is seen within 8 s."""
    assert failures.retry_wait(Unreachable("down"), tries) == wait
    assert failures.API_MAX_BACKOFF_S == 8.0


@pytest.mark.parametrize("tries", [1, 5, 50])
def test_a_429_waits_its_retry_after(tries: int) -> None:
    """Retry-After is the server's word, not a guess that grows."""
    assert failures.retry_wait(Throttled("slow down", retry_after_s=2.5), tries) == 2.5


def test_backoff_never_below_one_second_nor_above_its_cap() -> None:
    assert [failures.backoff_s(t, cap=5.0) for t in range(0, 6)] == [1.0, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert failures.judge(Unreachable("down"), 10).wait_s == failures.MAX_BACKOFF_S == 30.0


@pytest.mark.parametrize(("error", "held"), [
    (Unreachable("the API is away"), True),
    (Throttled("429", retry_after_s=2.0), True),
    (Conflict("stale resourceVersion"), True),
    (NotLeader("not the leader: saving batch b skipped"), True),
    (Forbidden("403 quota", status=403), False),
    (Invalid("422 too large", status=422), False),
    (ValueError("a bug"), False),
])
def test_messages_are_held_only_through_errors_that_pass(error: Exception, held: bool) -> None:
    """Held messages are tried again on every pass; given back, each failure costs a delivery
    attempt, so an error that may never pass ends at the dead-letter limit instead of looping."""
    assert failures.hold_message(error) is held
