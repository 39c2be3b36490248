"""Undoing a submit that did not finish: signals, every delete tried, the request's fate respected.

``interruptible()`` turns SIGTERM (and SIGINT, which Python already raises as
``KeyboardInterrupt``) into an exception while a submit creates and publishes, so a
stopped submit rolls back like a failed one instead of leaving topics and half the parts;
it then ends as ``Stopped`` (exit 143).
``roll_back`` deletes what was created, trying every delete and naming what it could not
remove; it keeps the batch when the launch request may already be stored (a publish
that failed without a refusal), since the launcher would then launch against nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from batchctl.core import topology
from batchctl.core.errors import EXIT_TERMINATED, BatchctlError
from batchctl.core.pubsub import PubSub, may_have_stored


class Interrupted(BaseException):  # like KeyboardInterrupt: no ``except Exception`` may swallow it
    """Raised in ``submit`` by the SIGTERM handler; ``interruptible`` turns it into ``Stopped``."""


class Stopped(BatchctlError):
    """Raised when SIGTERM stopped a submit, after its rollback."""

    exit_code = EXIT_TERMINATED


class FateUnknown(BatchctlError):
    """Raised when sending the launch request failed in a way that may have stored it."""


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block SIGTERM raises ``Interrupted`` (once; a second one during the rollback is
    ignored). Only on the main thread, where Python runs signal handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    except Interrupted as exc:
        raise Stopped(f"{exc}: the batch was rolled back") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def roll_back(pubsub: PubSub, created: list[str], error: BaseException, *, sending: bool, log: Any) -> None:
    """Delete what was created, unless the launch request may be stored (then raise ``FateUnknown``).

    ``sending``: the failure came while the launch request was being sent.
    """
    if sending and may_have_stored(error):
        log.error("submit_request_fate_unknown", kept=created, error=str(error))
        raise FateUnknown(
            f"the launch request may have reached Pub/Sub ({error}); the batch was kept so a launcher "
            "that got it has its parts: see 'batchctl status', or 'batchctl cancel' it"
        ) from error
    left = topology.undo(pubsub, created)
    if left:
        log.error("submit_rollback_incomplete", left=left, error=str(error))
    else:
        log.warning("submit_rolled_back", created=created, error=str(error))
