"""How the launcher treats an error met while reconciling one batch. Pure.

Errors are contained per batch: one batch's error never stops the others. What happens next
depends on the error's class (see ``batchctl.launcher.kube`` for the API's):

- ``Throttled`` (429): every API call waits out the server's Retry-After; the try is not counted.
- ``Unreachable`` (API or Pub/Sub down, 5xx): retried with backoff for as long as it lasts; not
  the batch's fault, never fails it.
- ``ProfileGone`` (the batch's profile was removed from the profiles file after admission): no
  retry brings it back (the file is read at start), so the batch ends ``failed`` at once, the
  reason naming the profile.
- anything else (a 401/403/422 such as a quota or an admission policy, bad input such as an
  untagged image, or a bug): retried with backoff, and after ``MAX_TRIES`` in a row the batch
  ends ``failed`` with the error as its reason (``retry`` starts it again).
"""

from __future__ import annotations

from dataclasses import dataclass

from batchctl.core.errors import ProfileGone, Unreachable
from batchctl.launcher.fence import NotLeader
from batchctl.launcher.kube import Conflict, Throttled

MAX_TRIES = 3
"""Consecutive failed passes of one batch before a permanent error fails it."""
MAX_BACKOFF_S = 30.0
API_MAX_BACKOFF_S = 8.0
"""Longest wait between tries of what notices the API is back (the Job watch, taking requests and
events): a minute's outage costs about ten tries of each, and the launcher resumes within 8 s."""


@dataclass(frozen=True)
class Verdict:
    give_up: bool
    """End the batch ``failed`` with the error as its reason."""
    wait_s: float
    """Leave the batch alone this long."""
    everyone: bool = False
    """The wait is the API server's (429): it applies to every batch."""


def backoff_s(tries: int, *, cap: float = MAX_BACKOFF_S) -> float:
    """Exponential backoff after the ``tries``-th consecutive failure (1-based): 1, 2, 4... s, at most ``cap``."""
    return min(cap, 2.0 ** max(0, tries - 1))


def retry_wait(error: BaseException, tries: int, *, cap: float = API_MAX_BACKOFF_S) -> float:
    """How long to wait before trying an API call again: the server's Retry-After after a 429,
    else ``backoff_s``."""
    if isinstance(error, Throttled):
        return error.retry_after_s
    return backoff_s(tries, cap=cap)


def hold_message(error: BaseException) -> bool:
    """Whether a request or events whose handling met ``error`` are held for a later pass
    (``launcher.held``): an outage, throttling, a conflict (the batch is reloaded) or the Lease
    lost (a non-leader gives them back at once) passes. Anything else may recur on every try, so
    they are given back: each nack costs a delivery attempt, and Pub/Sub's dead-letter limit ends
    what never passes."""
    return isinstance(error, (Unreachable, Conflict, NotLeader))


def judge(error: BaseException, tries: int) -> Verdict:
    """What to do after the ``tries``-th consecutive failure (1-based) of a batch's pass."""
    backoff = backoff_s(tries)
    if isinstance(error, Throttled):
        return Verdict(give_up=False, wait_s=error.retry_after_s, everyone=True)
    if isinstance(error, Unreachable):
        return Verdict(give_up=False, wait_s=backoff)
    if isinstance(error, ProfileGone):
        return Verdict(give_up=True, wait_s=0.0)
    return Verdict(give_up=tries >= MAX_TRIES, wait_s=backoff)


def reason(error: BaseException) -> str:
    """A failed batch's reason: the error's own words, one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return f"cannot proceed: {text}"[:500]
