"""Names derived from a batch id: Pub/Sub topics and subscriptions, Kubernetes objects."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from batchctl.core.errors import BadInput

BATCH_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_BATCH = "batchctl.dev/batch-id"

PUBSUB_MANAGED_BY = "managed-by"
PUBSUB_BATCH = "batchctl-batch-id"
PUBSUB_CREATED = "batchctl-created"
"""Pub/Sub label keys (lowercase letters, digits, ``-``, ``_``: no ``/`` as in Kubernetes labels)."""


def validate_batch_id(batch_id: str) -> str:
    """Return ``batch_id`` if it matches the contract's pattern, else raise BadInput."""
    if not isinstance(batch_id, str) or not BATCH_ID_RE.fullmatch(batch_id):
        raise BadInput(
            f"invalid batch id {batch_id!r}: must match {BATCH_ID_RE.pattern} "
            "(lowercase letters, digits and '-', at most 40 characters)"
        )
    return batch_id


def generate_batch_id() -> str:
    """A sortable, unique batch id: ``b-<yymmdd-hhmmss>-<4 hex>``."""
    return time.strftime("b-%y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(2)


@dataclass(frozen=True)
class Names:
    """Every resource name of one deployment prefix."""

    prefix: str

    @property
    def requests_topic(self) -> str:
        return f"{self.prefix}-requests"

    @property
    def requests_subscription(self) -> str:
        return f"{self.prefix}-requests-launcher"

    @property
    def events_topic(self) -> str:
        return f"{self.prefix}-events"

    @property
    def events_subscription(self) -> str:
        return f"{self.prefix}-events-launcher"

    @property
    def requests_dead_letters(self) -> str:
        """Topic and subscription for control messages the launcher failed to handle too often.

        Not ``P-requests-dead``: that is batch ``requests``'s dead-letter topic (and gc's to delete)."""
        return f"{self.prefix}-requests-dead-letters"

    @property
    def events_dead_letters(self) -> str:
        """Topic and subscription for events the launcher failed to apply too often."""
        return f"{self.prefix}-events-dead-letters"

    def work(self, batch_id: str) -> str:
        """Work topic and subscription share this name."""
        return f"{self.prefix}-{batch_id}-work"

    def dead(self, batch_id: str) -> str:
        """Dead-letter topic and subscription share this name."""
        return f"{self.prefix}-{batch_id}-dead"

    def job(self, batch_id: str, n: int) -> str:
        return f"{self.prefix}-{batch_id}-{n}"

    def state_object(self, batch_id: str) -> str:
        return f"{self.prefix}-{batch_id}-state"

    @property
    def lease(self) -> str:
        return f"{self.prefix}-launcher"

    def pubsub_labels(self, batch_id: str | None = None, *, created: float | None = None) -> dict[str, str]:
        """Labels of a Pub/Sub topic or subscription: of one batch, or (no id) shared by all.
        ``created`` (Unix seconds) lets ``gc`` spare a batch whose submit is still publishing."""
        labels = {PUBSUB_MANAGED_BY: "batchctl"}
        if batch_id is not None:
            labels[PUBSUB_BATCH] = batch_id
        if created is not None:
            labels[PUBSUB_CREATED] = str(int(created))
        return labels

    def batch_labels(self, batch_id: str) -> dict[str, str]:
        return {LABEL_NAME: "batchctl", LABEL_COMPONENT: "worker", LABEL_BATCH: batch_id}
