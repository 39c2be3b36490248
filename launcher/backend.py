"""What a backend does for the reconciler, and the worker environment both backends give."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from batchctl.core.settings import Settings
from batchctl.launcher.planner import Launch, ObservedJob
from batchctl.launcher.state import BatchState


class Backend(Protocol):
    """Runs "Jobs": Kubernetes Jobs, or groups of local worker processes."""

    changed: threading.Event
    """Set when the backend sees a Job change, so the launcher reconciles without waiting a tick."""

    def launch(self, batch: BatchState, launch: Launch) -> bool:
        """Start the Job; False if it already existed (a repeated launch is harmless)."""
        ...

    def observe(self, batch_id: str) -> list[ObservedJob]:
        """The batch's Jobs as they are now."""
        ...

    def resize(self, batch_id: str, job: str, parallelism: int) -> None:
        """Set the Job's parallelism: extra workers are stopped (SIGTERM), missing ones started."""
        ...

    def delete_jobs(self, batch_id: str) -> None:
        """Stop and delete every Job of the batch (their workers get SIGTERM)."""
        ...

    def forget(self, batch_id: str, job_names: list[str]) -> None:
        """Delete whatever the backend still keeps of a batch past its retention: Jobs and files."""
        ...

    def job_batches(self) -> dict[str, str]:
        """Every Job there is (not only this process's), name -> batch id: what ``gc`` judges."""
        ...

    def close(self) -> None: ...


JOB_OWNED = (
    "BATCHCTL_BATCH_ID",
    "BATCHCTL_SUBSCRIPTION",
    "BATCHCTL_HANDLER",
    "BATCHCTL_OUTPUT",
    "BATCHCTL_PREFIX",
    "BATCHCTL_MAX_DELIVERY_ATTEMPTS",
    "BATCHCTL_ACK_DEADLINE_S",
    "BATCHCTL_WORKER_ID",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
)
"""Variables only a worker's Job may give it: where its batch is. A pod gets nothing else from the
launcher (its image supplies PATH, HOME and its own ENV), so the local backend strips these from
the environment its workers inherit: a key missing from ``worker_env`` fails there as in a pod."""


def worker_env(settings: Settings, batch: BatchState) -> dict[str, str]:
    """The environment that configures ``batchctl worker`` for this batch.

    The emulator addresses go along when the launcher has them: a worker pod of the ``emulator``
    manifests overlay reaches the emulators only through them.

    It carries the work subscription's real retry policy (max delivery attempts, ack
    deadline): a worker usually may not read the subscription, and it needs the policy
    to know which nacked parts will come back and must be awaited before it drains.
    """
    env = {
        "BATCHCTL_BATCH_ID": batch.batch_id,
        "BATCHCTL_SUBSCRIPTION": settings.names.work(batch.batch_id),
        "BATCHCTL_HANDLER": batch.request.handler,
        "BATCHCTL_PREFIX": settings.prefix,
        "BATCHCTL_MAX_DELIVERY_ATTEMPTS": str(batch.request.max_delivery_attempts),
        "BATCHCTL_ACK_DEADLINE_S": str(batch.request.ack_deadline_s),
        "GOOGLE_CLOUD_PROJECT": settings.project or "",
    }
    if settings.emulator_host:
        env["PUBSUB_EMULATOR_HOST"] = settings.emulator_host
    if batch.request.output:
        env["BATCHCTL_OUTPUT"] = batch.request.output
    storage_emulator = settings.environ.get("STORAGE_EMULATOR_HOST")
    if storage_emulator:
        env["STORAGE_EMULATOR_HOST"] = storage_emulator
    return env


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What a local worker inherits from the launcher: its "image", without the Job-owned variables."""
    return {key: value for key, value in environ.items() if key not in JOB_OWNED}
