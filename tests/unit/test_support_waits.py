"""The test-support loops that pull until a subscription is quiet are bounded.

Checks: ``pulling.drain`` and ``EventLog.poll`` fail with an AssertionError, after their
timeout, against a subscription that never goes quiet, instead of hanging the suite.
"""

from __future__ import annotations

from typing import Any

import pytest

from batchctl.core.pubsub import Received
from tests.support.parts import EventLog
from tests.support.pulling import drain


class _Endless:
    """A stand-in whose pull always returns one more message (a runaway publisher)."""

    def pull(self, subscription: str, *, max_messages: int, timeout_s: float) -> list[Received]:
        return [Received(ack_id="a", message_id="m", data=b"{}", attributes={"type": "x"}, delivery_attempt=1)]

    def ack(self, subscription: str, ack_ids: Any) -> None:
        """Nothing to settle."""


def test_drain_gives_up_on_a_subscription_that_never_empties() -> None:
    """drain() raises after its timeout instead of looping forever."""
    with pytest.raises(AssertionError, match=r"still delivering after 0\.2s"):
        drain(_Endless(), "sub", timeout=0.2)  # type: ignore[arg-type]


def test_event_log_poll_gives_up_on_endless_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """EventLog.poll() raises after its timeout instead of looping forever."""
    monkeypatch.setattr("tests.support.parts.decode_event", lambda data, attributes: object())
    log = EventLog(_Endless(), "sub")  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match=r"events still arriving after 0\.2s"):
        log.poll(timeout=0.2)
