"""``InFlight``: requests on a small pool, bounded in number and bytes, confirmed oldest first.

Checks: a send beyond ``max_requests`` waits for the oldest to finish; so does one that
would pass ``max_bytes``, while a single request larger than ``max_bytes`` still goes
alone; ``confirmed`` counts the messages of finished requests; the first failure is
raised with the positions of the messages its request held.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from batchctl.core.inflight import InFlight, RequestFailed

BLOCKED_S = 0.2
"""How long a send that must wait is seen still waiting (a bounded negative check)."""


class Gated:
    """A fake send: each request waits for its own gate; ``name`` = the request object."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.started: list[str] = []
        self.fail: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        with self._lock:
            gate = self.gates.setdefault(name, threading.Event())
            self.started.append(name)
        assert gate.wait(timeout=10), f"{name} never released"
        if name in self.fail:
            raise ValueError(f"{name} rejected")
        return name

    def release(self, name: str) -> None:
        with self._lock:
            self.gates.setdefault(name, threading.Event()).set()


def send_in_thread(in_flight: InFlight, name: str, size: int) -> threading.Thread:
    thread = threading.Thread(target=in_flight.send, args=(name,), kwargs={"first": 0, "count": 1, "size": size})
    thread.start()
    return thread


def test_a_send_beyond_max_requests_waits_for_the_oldest() -> None:
    fake = Gated()
    with InFlight(fake, max_requests=2, max_bytes=1000) as in_flight:
        in_flight.send("a", first=0, count=3, size=1)
        in_flight.send("b", first=3, count=3, size=1)
        third = send_in_thread(in_flight, "c", 1)
        third.join(timeout=BLOCKED_S)
        assert third.is_alive()
        fake.release("a")
        third.join(timeout=10)
        assert not third.is_alive()
        assert in_flight.confirmed == 3
        fake.release("b")
        fake.release("c")
        in_flight.settle(0)
        assert in_flight.confirmed == 7


def test_bytes_bound_what_is_in_flight_but_one_large_request_goes_alone() -> None:
    fake = Gated()
    with InFlight(fake, max_requests=4, max_bytes=100) as in_flight:
        in_flight.send("big", first=0, count=1, size=500)  # nothing in flight: allowed
        small = send_in_thread(in_flight, "small", 10)
        small.join(timeout=BLOCKED_S)
        assert small.is_alive() and fake.started == ["big"]
        fake.release("big")
        small.join(timeout=10)
        assert not small.is_alive()
        fake.release("small")
        in_flight.settle(0)
        assert in_flight.confirmed == 2


def test_the_first_failure_names_the_positions_its_request_held() -> None:
    fake = Gated()
    fake.fail.add("second")
    for name in ("first", "second", "third"):
        fake.release(name)
    with pytest.raises(RequestFailed) as raised, InFlight(fake, max_requests=4, max_bytes=1000) as in_flight:
        in_flight.send("first", first=0, count=100, size=1)
        in_flight.send("second", first=100, count=100, size=1)
        in_flight.send("third", first=200, count=50, size=1)
        in_flight.settle(0)
    failed: Any = raised.value
    assert (failed.first, failed.count) == (100, 100)
    assert isinstance(failed.cause, ValueError)
    assert in_flight.confirmed == 100
