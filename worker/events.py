"""The worker's side of the events topic: what it tells the launcher, in the shared wire format.

``part_done`` is what the launcher counts progress by (once per part index, so a
duplicate after a redelivery is harmless). A lost one would leave a batch unfinished
forever, so the settler acks a part only after Pub/Sub confirmed its ``part_done``.
"""

from __future__ import annotations

from concurrent.futures import Future

from batchctl.core.messages import Event, encode_event
from batchctl.core.pubsub import PubSub


class Events:
    """Publishes one worker's events on ``P-events``."""

    def __init__(self, pubsub: PubSub, *, batch_id: str, worker_id: str) -> None:
        self._pubsub = pubsub
        self._batch_id = batch_id
        self._worker_id = worker_id
        self.topic = pubsub.settings.names.events_topic

    def publish(
        self, kind: str, *, part: int | None = None, attempt: int = 0, reason: str = "", parts: tuple[int, ...] = ()
    ) -> Future[str]:
        """Queue one event; the future resolves once Pub/Sub has it."""
        event = Event(
            type=kind,
            batch_id=self._batch_id,
            worker=self._worker_id,
            part=part,
            attempt=attempt,
            reason=reason,
            parts=parts,
        )
        data, attributes = encode_event(event)
        return self._pubsub.publish(self.topic, data, attributes)

    def confirm(self, future: Future[str], *, timeout_s: float) -> str:
        """Wait for one event; ResourceMissing if the events topic is missing, Unreachable on timeout."""
        return self._pubsub.confirm(future, topic=self.topic, timeout_s=timeout_s)

    def part_done(self, part: int, attempt: int) -> Future[str]:
        return self.publish("part_done", part=part, attempt=attempt)

    def parts_done(self, parts: list[int]) -> Future[str]:
        """One ``part_done`` event naming every part in ``parts``."""
        return self.publish("part_done", parts=tuple(parts))

    def part_failed(self, part: int, attempt: int, reason: str) -> Future[str]:
        return self.publish("part_failed", part=part, attempt=attempt, reason=reason)

    def part_started(self, part: int, attempt: int) -> Future[str]:
        """A redelivered part is about to run: if it kills the worker, the launcher still knows the
        attempt it died on."""
        return self.publish("part_started", part=part, attempt=attempt)

    def started(self, *, timeout_s: float) -> None:
        """Announce the worker and wait for it: a missing events topic fails here, before any pull."""
        self.confirm(self.publish("worker_started"), timeout_s=timeout_s)

    def exited(self, reason: str, *, timeout_s: float) -> None:
        """Announce the exit (``drained``, ``terminated``, ``crash`` or ``error: <why>``) and wait for it."""
        self.confirm(self.publish("worker_exited", reason=reason), timeout_s=timeout_s)
