"""The worker environment a launcher gives every Job, read back by the worker.

Checks: the batch's real retry policy (max delivery attempts, ack deadline) goes in
the environment and comes out in the worker's configuration and drain policy.
"""

from __future__ import annotations

from batchctl.core.messages import BatchRequest
from batchctl.core.settings import Settings
from batchctl.launcher.backend import worker_env
from batchctl.launcher.state import BatchState
from batchctl.worker.config import WorkerConfig


def test_the_batchs_retry_policy_reaches_the_worker() -> None:
    """--max-delivery-attempts 10 and --ack-deadline 120 at submit: the worker reads 10 and 120."""
    settings = Settings.from_env({"PUBSUB_EMULATOR_HOST": "localhost:1", "BATCHCTL_PREFIX": "bx"})
    request = BatchRequest(batch_id="b1", parts=3, records=3, bytes=3, handler="m:f",
                           max_delivery_attempts=10, ack_deadline_s=120)
    env = worker_env(settings, BatchState(request=request))
    config = WorkerConfig.from_sources(env, prefix=settings.prefix)
    assert (config.max_delivery_attempts, config.ack_deadline_s) == (10, 120)
    assert config.subscription == "bx-b1-work"


def test_without_the_policy_the_worker_leaves_it_unknown() -> None:
    """Started by hand without the variables: None, so the worker reads the subscription or defaults."""
    config = WorkerConfig.from_sources({"BATCHCTL_BATCH_ID": "b1"}, prefix="bx")
    assert (config.max_delivery_attempts, config.ack_deadline_s) == (None, None)
