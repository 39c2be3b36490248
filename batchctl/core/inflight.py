"""Requests sent on a small thread pool, bounded in number and in bytes, confirmed oldest first.

Knows nothing of Pub/Sub: ``PubSub.publish_many`` hands it a ``send`` function and
requests that hold ``count`` messages (from position ``first``) in ``size`` bytes.
The first request that fails raises ``RequestFailed`` naming those positions; on the
way out, requests not yet started are cancelled and running ones are waited for.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class RequestFailed(Exception):
    """Raised when the request holding messages ``first`` to ``first + count - 1`` failed with ``cause``."""

    def __init__(self, first: int, count: int, cause: Exception) -> None:
        super().__init__(first, count, cause)
        self.first, self.count, self.cause = first, count, cause


class InFlight:
    """At most ``max_requests`` requests and ``max_bytes`` in flight (one request is always allowed)."""

    def __init__(self, send: Callable[[Any], Any], *, max_requests: int, max_bytes: int) -> None:
        self._send, self._max_requests, self._max_bytes = send, max_requests, max_bytes
        self._pool = ThreadPoolExecutor(max_requests, thread_name_prefix="batchctl-send")
        self._queue: deque[tuple[int, int, int, Future[Any]]] = deque()  # first, count, size, future
        self._bytes = 0
        self.confirmed = 0
        """Messages in requests that completed."""

    def send(self, request: Any, *, first: int, count: int, size: int) -> None:
        """Send one request once those in flight leave room for it."""
        self.settle(self._max_requests - 1, room_for=size)
        self._queue.append((first, count, size, self._pool.submit(self._send, request)))
        self._bytes += size

    def settle(self, keep: int, *, room_for: int = 0) -> None:
        """Await the oldest requests until at most ``keep`` remain and ``room_for`` more bytes fit."""
        while self._queue and (len(self._queue) > keep or self._bytes + room_for > self._max_bytes):
            first, count, size, future = self._queue.popleft()
            try:
                future.result()
            except Exception as exc:
                raise RequestFailed(first, count, exc) from exc
            self.confirmed += count
            self._bytes -= size

    def __enter__(self) -> InFlight:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for *_, future in self._queue:
            future.cancel()
        self._pool.shutdown(wait=True)
