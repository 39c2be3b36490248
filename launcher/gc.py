"""``batchctl gc``: find and remove orphans, what batchctl left behind without a batch to own it.

An orphan is a batch's Pub/Sub topic or subscription (``P-<id>-work``, ``P-<id>-dead``) whose
batch has no state, or a Job (or local Job record) ``P-<id>-<n>`` labelled with a batch ``<id>``
that has no state (a Job of another prefix, or without a batch label, is not this gc's):
left by a crash, by a state deleted by hand, or by a submit killed before it could undo what
it created. The shared control and events topics are never orphans.

A submit creates its topics before the launcher records the batch, and may publish for a
long while in between; so a topic or subscription whose ``batchctl-created`` label is younger
than ``GRACE_S`` is spared. Resources without that label (made before labels existed, or by
hand) are judged by name alone.

``find_orphans`` decides (pure); ``collect`` reads what exists, ``remove`` deletes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from batchctl.core.names import BATCH_ID_RE, PUBSUB_CREATED
from batchctl.core.pubsub import PubSub
from batchctl.launcher.backend import Backend
from batchctl.launcher.store import StateStore

GRACE_S = 3600.0
"""How long a batch's fresh topics may exist before the launcher records it (a submit still publishing)."""

Labels = Mapping[str, Mapping[str, str]]
"""Resource short name -> its labels."""


@dataclass(frozen=True)
class Orphans:
    topics: list[str] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)
    jobs: dict[str, list[str]] = field(default_factory=dict)
    """Batch id -> names of its Jobs."""

    def __bool__(self) -> bool:
        return bool(self.topics or self.subscriptions or self.jobs)

    def lines(self, verb: str) -> list[str]:
        """One line per orphan: ``<verb> topic NAME`` etc."""
        return ([f"{verb} topic {t}" for t in self.topics] + [f"{verb} subscription {s}" for s in self.subscriptions]
                + [f"{verb} job {j} (batch {b})" for b, names in sorted(self.jobs.items()) for j in names])


def batch_of(name: str, prefix: str) -> str | None:
    """The batch id in ``P-<id>-work`` / ``P-<id>-dead``, or None for any other name."""
    match = re.fullmatch(rf"{re.escape(prefix)}-(.+)-(?:work|dead)", name)
    return match.group(1) if match and BATCH_ID_RE.fullmatch(match.group(1)) else None


def young(labels: Mapping[str, str], *, now: float, grace_s: float) -> bool:
    created = labels.get(PUBSUB_CREATED, "")
    return created.isdigit() and now - int(created) < grace_s


def find_orphans(*, prefix: str, known: set[str], topics: Labels, subscriptions: Labels,
                 jobs: Mapping[str, str], now: float, grace_s: float = GRACE_S) -> Orphans:
    """What to delete: batch resources of no known batch (and not young), this prefix's Jobs of no known batch."""

    def orphaned(resources: Labels) -> list[str]:
        return sorted(name for name, labels in resources.items()
                      if (batch := batch_of(name, prefix)) is not None and batch not in known
                      and not young(labels, now=now, grace_s=grace_s))

    by_batch: dict[str, list[str]] = {}
    for job, batch in sorted(jobs.items()):
        if batch not in known and re.fullmatch(rf"{re.escape(prefix)}-{re.escape(batch)}-\d+", job):
            by_batch.setdefault(batch, []).append(job)
    return Orphans(orphaned(topics), orphaned(subscriptions), by_batch)


def collect(pubsub: PubSub, store: StateStore, backend: Backend, *, now: float) -> Orphans:
    """Read the batches, Pub/Sub resources and Jobs there are, and decide."""
    known = {batch.batch_id for batch in store.load_all()}
    return find_orphans(prefix=pubsub.settings.prefix, known=known, topics=pubsub.labels_of_all("topic"),
                        subscriptions=pubsub.labels_of_all("subscription"), jobs=backend.job_batches(), now=now)


def remove(pubsub: PubSub, backend: Backend, orphans: Orphans) -> None:
    """Delete the orphans: subscriptions before topics, Jobs with their files."""
    for name in orphans.subscriptions:
        pubsub.delete_subscription(name)
    for name in orphans.topics:
        pubsub.delete_topic(name)
    for batch_id, names in orphans.jobs.items():
        backend.forget(batch_id, names)
