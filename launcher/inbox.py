"""What the leader's loop consumes: messages pulled from the requests and events subscriptions.

One puller thread per subscription feeds a queue while this replica leads, so a request wakes
the loop at once. Each puller notes when a pull that came back empty *began*: once the loop has
taken everything queued before that moment, every event published before it has been seen
(``accounted_since``), which is what a follow-up Job may be decided on.

Except after a takeover: the previous leader's last pull, if it died with it pending, is held by
Pub/Sub until that pull's deadline and takes messages published meanwhile with it; they come back
one ack deadline later. So a new term counts only empty pulls that began after that
(``forget_empty_pulls(until=...)``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from batchctl.core import logs
from batchctl.core.errors import BatchctlError
from batchctl.core.pubsub import PubSub, Received


class Inbox:
    def __init__(self, pubsub: PubSub, subscriptions: tuple[str, ...], *, active: Callable[[], bool],
                 wake: threading.Event, stopping: threading.Event, pull_timeout_s: float,
                 max_messages: int) -> None:
        self.pubsub, self.subscriptions, self.active = pubsub, subscriptions, active
        self.wake, self.stopping = wake, stopping
        self.pull_timeout_s, self.max_messages = pull_timeout_s, max_messages
        self._queue: queue.Queue[tuple[str, Received]] = queue.Queue()
        self._empty_since: dict[str, float] = {}
        self._count_from = 0.0
        self.threads: list[threading.Thread] = []
        self.want_empty = threading.Event()
        """Set by the loop while a batch waits to be accounted for: an empty pull then wakes it."""
        self.log = logs.get("launcher")

    def start(self) -> None:
        for sub in self.subscriptions:
            thread = threading.Thread(target=self._pull_loop, args=(sub,), name=f"pull-{sub}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=self.pull_timeout_s + 5)

    def alive(self) -> bool:
        """Every puller still runs (they end only when stopping)."""
        return all(t.is_alive() for t in self.threads) or self.stopping.is_set()

    def empty_pull_started(self, subscription: str) -> float:
        """Monotonic time a pull of ``subscription`` that came back empty began (0: none yet)."""
        return self._empty_since.get(subscription, 0.0)

    def forget_empty_pulls(self, until: float = 0.0) -> None:
        """A new term: nothing is accounted for until a pull of this term that began at ``until``
        (monotonic) or later comes back empty."""
        self._count_from = until
        self._empty_since.clear()

    def take(self) -> list[tuple[str, Received]]:
        taken = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                return taken

    def give_back(self, held: list[tuple[str, Received]] | None = None) -> int:
        """Nack ``held`` (default: everything queued) so whoever leads gets it now, not after its lease."""
        by_sub: dict[str, list[str]] = {}
        for sub, msg in self.take() if held is None else held:
            by_sub.setdefault(sub, []).append(msg.ack_id)
        for sub, ack_ids in by_sub.items():
            try:
                self.pubsub.nack(sub, ack_ids)
            except Exception as exc:  # the lease lapses on its own
                self.log.warning("give_back_failed", subscription=sub, error=str(exc))
        return sum(len(ids) for ids in by_sub.values())

    def _pull_loop(self, subscription: str) -> None:
        while not self.stopping.is_set():
            if not self.active():
                self.stopping.wait(0.2)
                continue
            started = time.monotonic()
            try:
                msgs = self.pubsub.pull(subscription, max_messages=self.max_messages, timeout_s=self.pull_timeout_s)
            except BatchctlError as exc:
                self.log.warning("pull_failed", subscription=subscription, error=str(exc))
                self.stopping.wait(1.0)
                continue
            except Exception:
                self.log.exception("pull_crashed", subscription=subscription)
                self.stopping.wait(1.0)
                continue
            for msg in msgs:
                self._queue.put((subscription, msg))
            if msgs:
                self.wake.set()
                continue
            if started >= self._count_from:
                self._empty_since[subscription] = started
            if self.want_empty.is_set():
                self.want_empty.clear()
                self.wake.set()
            self.stopping.wait(0.05)
