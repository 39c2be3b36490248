"""A fixed number of handler threads; the pull loop asks how much room there is before it pulls.

Room is one item per thread plus ``queued`` items waiting for a thread: the prefetch
window, so that one pull round trip serves several short parts. It is bounded (and
0 turns it off: then no part waits behind a long one while another worker idles).
A thread outlives any exception its work raises (``on_crash`` hears of it).
Threads are daemons: a handler still running when the worker exits (its
part already nacked) does not keep the process alive.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Slots(Generic[T]):
    """``size`` daemon threads, each running ``work(item)`` for one item at a time."""

    def __init__(
        self,
        size: int,
        work: Callable[[T], None],
        *,
        on_crash: Callable[[T, BaseException], None] | None = None,
        queued: int = 0,
        name: str = "slot",
    ) -> None:
        self.size = size
        self.capacity = size + queued
        """Items accepted at once: one per thread plus ``queued`` waiting for a thread (prefetch)."""
        self._work = work
        self._on_crash = on_crash
        self._name = name
        self._busy = 0
        self._changed = threading.Condition()
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()

    def start(self) -> None:
        for n in range(self.size):
            threading.Thread(target=self._run, name=f"{self._name}-{n}", daemon=True).start()

    def wait_free(self, timeout: float) -> int:
        """Wait up to ``timeout`` for room; returns how many more items it takes now (0 on timeout)."""
        with self._changed:
            self._changed.wait_for(lambda: self._busy < self.capacity, timeout=timeout)
            return self.capacity - self._busy

    def wait_room(self, at_least: int, timeout: float) -> int:
        """Room for more items, waiting up to ``timeout`` for ``at_least`` of it while items still
        queue for a thread (so one pull fetches many); as soon as a thread would idle, any room."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.capacity - self._busy >= at_least or self._busy < self.size, timeout=timeout
            )
            room = self.capacity - self._busy
            return room if room >= at_least or self._busy < self.size else 0

    def submit(self, item: T) -> None:
        """Run ``work(item)`` on the next free thread; call only for slots reported free."""
        with self._changed:
            self._busy += 1
        self._queue.put(item)

    def _run(self) -> None:
        """Forever: a slot outlives every exception, or the pull loop would queue parts to no thread."""
        while True:
            item = self._queue.get()
            try:
                self._work(item)
            except BaseException as exc:  # see above; ``on_crash`` reports it
                self._crashed(item, exc)
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()

    def _crashed(self, item: T, exc: BaseException) -> None:
        if self._on_crash is None:
            return
        with contextlib.suppress(BaseException):  # a failing report must not end the slot either
            self._on_crash(item, exc)
