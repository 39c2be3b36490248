"""Pub/Sub's terms as batchctl uses them: deadlines, retry policies, which codes mean what, the
errors a call raises and the shapes it returns. No client here: ``batchctl.core.pubsub`` makes the calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type

from batchctl.core.errors import BadInput, BatchctlError, Unreachable

ADMIN_TIMEOUT_S = 10.0
ADMIN_RETRY = Retry(
    initial=0.2,
    maximum=2.0,
    multiplier=2.0,
    timeout=15.0,
    predicate=lambda exc: isinstance(exc, (gexc.ServiceUnavailable, gexc.DeadlineExceeded)),
)
UNREACHABLE_ERRORS = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError)
MAX_REQUEST_BYTES = 9 * 1024 * 1024
"""A publish request stays under Pub/Sub's 10 MB request limit (a single larger message goes alone)."""
PUBLISH_TIMEOUT_S = 60.0
"""How long one publish request may take, retries included, before the publish fails."""
PUBLISH_ATTEMPT_S = 30.0
PUBLISH_RETRY = Retry(
    initial=0.1,
    maximum=5.0,
    multiplier=2.0,
    timeout=PUBLISH_TIMEOUT_S,
    # The codes the client library itself retries a publish on.
    predicate=if_exception_type(
        gexc.Aborted,
        gexc.Cancelled,
        gexc.DeadlineExceeded,
        gexc.InternalServerError,
        gexc.ResourceExhausted,
        gexc.ServiceUnavailable,
        gexc.Unknown,
    ),
)
PUBLISH_REQUESTS_IN_FLIGHT = 4
PULL_RETRYABLE = (
    gexc.DeadlineExceeded,
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.Unknown,
    gexc.Aborted,
    gexc.ResourceExhausted,
    gexc.Cancelled,
)
"""Pull failures worth another try: the codes the client library retries a pull on, and a timeout."""
SETTLE_RETRYABLE = (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.Unknown, gexc.Aborted)
"""Codes on which an ack or a deadline change is retried (within its bounded time)."""
_MESSAGE_OVERHEAD_BYTES = 32
"""Per-message framing counted against a request's size, on top of data and attributes."""


class ResourceMissing(BadInput):
    """Raised when a data call (pull, publish) names a topic or subscription that does not exist."""


class PullUnanswered(Unreachable):
    """Raised when a pull gets no answer: its deadline passed (``timed_out``) or a retryable code came back."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class PublishFailed(BatchctlError):
    """Raised when Pub/Sub rejects or does not confirm a publish; names what was lost."""


REFUSED = (gexc.NotFound, gexc.PermissionDenied, gexc.InvalidArgument, gexc.Unauthenticated, gexc.FailedPrecondition)
"""Publish errors that mean Pub/Sub did not store the message (any other may come after it did)."""


def may_have_stored(error: BaseException) -> bool:
    """Whether a failed publish may still have been stored: only a refusal says it was not."""
    cause: BaseException = error
    while isinstance(cause, BatchctlError) and cause.__cause__ is not None:
        cause = cause.__cause__
    return not isinstance(cause, REFUSED)


@dataclass(frozen=True)
class Received:
    """One pulled message."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    delivery_attempt: int


@dataclass(frozen=True)
class SubscriptionSpec:
    """How a subscription is created; every field is chosen, none left to defaults."""

    ack_deadline_s: int = 60
    dead_letter_topic: str | None = None
    max_delivery_attempts: int = 5
    min_backoff_s: int = 10
    max_backoff_s: int = 600
    """0: no retry policy, Pub/Sub delivers a nacked or lapsed message again at once."""
    retain_acked: bool = False
    expiration_ttl_days: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    """Pub/Sub labels (billing reports and ``gcloud --filter`` select by them)."""
