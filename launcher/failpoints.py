"""Named crash points for tests: the launcher SIGKILLs itself at the step boundary named by
``BATCHCTL_FAILPOINT`` (testing only).

Modelled on etcd's gofail (a failpoint is a named place in the code, inert unless the environment
arms it) and on how Kubernetes tests its Job controller (``test/integration/job``): stop the
controller between two writes, start another, and check that nothing was lost or done twice.
Each point sits between two durable effects whose order makes a restart safe:

- ``job-created-before-save``: a Job was created (or found existing), its record not yet saved
  (``launcher.reconciler``). The next leader re-plans the same name and meets 409.
- ``request-saved-before-ack``: a control request's effect is stored, the message not yet acked
  (``launcher.service``). Pub/Sub redelivers it after its ack deadline; it must change nothing.
- ``event-saved-before-ack``: events changed a batch and it was saved, the events not yet acked
  (``launcher.service``). They come back; each part is still counted once.

The point is hit by SIGKILL to the process itself: no ``finally``, no flush, no Lease release,
as a crash or an OOM kill. The variable is read once, at import; an unarmed ``hit`` is one string
comparison. Several points may be named, comma-separated; each kills on its first hit.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from batchctl.core import logs

FAILPOINT_VAR = "BATCHCTL_FAILPOINT"
JOB_CREATED_BEFORE_SAVE = "job-created-before-save"
REQUEST_SAVED_BEFORE_ACK = "request-saved-before-ack"
EVENT_SAVED_BEFORE_ACK = "event-saved-before-ack"
POINTS = (JOB_CREATED_BEFORE_SAVE, REQUEST_SAVED_BEFORE_ACK, EVENT_SAVED_BEFORE_ACK)

_ARMED = frozenset(p.strip() for p in os.environ.get(FAILPOINT_VAR, "").split(",") if p.strip())


def armed() -> frozenset[str]:
    """The points this process crashes at (empty: every ``hit`` is inert)."""
    return _ARMED


def hit(point: str, **context: Any) -> None:
    """Crash here if ``point`` is armed: log one line naming it, then SIGKILL this process."""
    if not _ARMED or point not in _ARMED:
        return
    logs.get("failpoint", **context).warning("failpoint_hit", point=point, signal="SIGKILL")
    sys.stderr.flush()  # the line only; nothing the launcher holds is flushed
    os.kill(os.getpid(), signal.SIGKILL)
