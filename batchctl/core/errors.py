"""The errors batchctl raises on purpose, and the exit code each maps to.

    BatchctlError                 exit 1 unless a subclass says otherwise
    ├── BadInput                  exit 2: a file, line, flag or variable is wrong
    │   └── BatchExists           exit 2: the batch id is already taken
    └── Unreachable               exit 3: Pub/Sub or the Kubernetes API cannot be reached

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``;
anything else escaping is a bug and is logged with its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_TERMINATED = 143
"""A worker stopped by SIGTERM/SIGINT before the queue was drained (128 + SIGTERM, as a shell
reports it). Not 0: in a work-queue Job a pod that exits 0 says "the queue is empty", after
which Kubernetes starts no replacement pods; an evicted pod that exits non-zero is replaced
(its podFailurePolicy ignores DisruptionTarget)."""


class BatchctlError(Exception):
    """Raised when batchctl stops an operation for a reason it can explain in one line."""

    exit_code = EXIT_FAILED


class BadInput(BatchctlError):
    """Raised when input data, a flag or an environment variable is invalid."""

    exit_code = EXIT_BAD_INPUT


class BatchExists(BadInput):
    """Raised when a submit names a batch id whose topics already exist."""


class ProfileGone(BadInput):
    """Raised when an admitted batch names a profile the launcher no longer offers (removed from
    the profiles file since): no retry brings it back, so the batch ends ``failed`` at once."""


class Unreachable(BatchctlError):
    """Raised when Pub/Sub or the Kubernetes API does not answer; names the endpoint."""

    exit_code = EXIT_UNREACHABLE
