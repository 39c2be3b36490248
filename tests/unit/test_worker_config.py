"""Worker configuration from variables and flags.

Checks: defaults; every variable parsed; flags win over variables; the batch id and
the subscription derive from each other; every bad value reported at once, naming
its variable or flag; lease renewal period.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchctl.core.errors import BadInput
from batchctl.worker.config import DEFAULT_HANDLER, WorkerConfig


def test_defaults_from_only_a_batch_id() -> None:
    """With just BATCHCTL_BATCH_ID every other setting takes its documented default."""
    config = WorkerConfig.from_sources({"BATCHCTL_BATCH_ID": "b1"}, prefix="bx")
    assert config.subscription == "bx-b1-work"
    assert config.handler == DEFAULT_HANDLER
    assert (config.concurrency, config.empty_pulls, config.pull_timeout_s) == (1, 3, 1.0)
    assert (config.drain_budget_s, config.lease_s) == (20.0, 20)
    assert config.results_dir == Path("batchctl-results")
    assert config.worker_id


def test_every_variable_is_read() -> None:
    """Each BATCHCTL_* variable lands in its field, parsed."""
    environ = {
        "BATCHCTL_BATCH_ID": "b1",
        "BATCHCTL_SUBSCRIPTION": "projects/p/subscriptions/custom",
        "BATCHCTL_HANDLER": "pkg.mod:fn",
        "BATCHCTL_CONCURRENCY": "4",
        "BATCHCTL_EMPTY_PULLS": "5",
        "BATCHCTL_PULL_TIMEOUT_S": "0.5",
        "BATCHCTL_DRAIN_BUDGET_S": "7.5",
        "BATCHCTL_LEASE_S": "12",
        "BATCHCTL_WORKER_ID": "pod-1",
        "BATCHCTL_RESULTS_DIR": "/tmp/out",
    }
    config = WorkerConfig.from_sources(environ, prefix="bx")
    assert config == WorkerConfig(
        batch_id="b1",
        subscription="projects/p/subscriptions/custom",
        handler="pkg.mod:fn",
        concurrency=4,
        empty_pulls=5,
        pull_timeout_s=0.5,
        drain_budget_s=7.5,
        lease_s=12,
        worker_id="pod-1",
        results_dir=Path("/tmp/out"),
    )


def test_flags_win_over_variables() -> None:
    """A flag given overrides its variable; a flag left None does not."""
    environ = {"BATCHCTL_BATCH_ID": "b1", "BATCHCTL_CONCURRENCY": "4"}
    config = WorkerConfig.from_sources(environ, {"concurrency": "2", "batch_id": None}, prefix="bx")
    assert (config.batch_id, config.concurrency) == ("b1", 2)


@pytest.mark.parametrize("subscription", ["bx-my-batch-work", "projects/p/subscriptions/bx-my-batch-work"])
def test_batch_id_derives_from_a_work_subscription(subscription: str) -> None:
    """Without a batch id, a subscription named P-<id>-work (short or full path) gives it."""
    config = WorkerConfig.from_sources({"BATCHCTL_SUBSCRIPTION": subscription}, prefix="bx")
    assert config.batch_id == "my-batch"


def test_missing_batch_id_is_bad_input() -> None:
    """Neither a batch id nor a work subscription to derive it from: BadInput naming the variable."""
    with pytest.raises(BadInput, match="BATCHCTL_BATCH_ID"):
        WorkerConfig.from_sources({"BATCHCTL_SUBSCRIPTION": "other-sub"}, prefix="bx")


def test_every_bad_value_is_reported_at_once_by_name() -> None:
    """Bad variables and flags are listed together, each named as the user wrote it."""
    environ = {
        "BATCHCTL_BATCH_ID": "Bad_Id",
        "BATCHCTL_CONCURRENCY": "0",
        "BATCHCTL_PULL_TIMEOUT_S": "nan",
        "BATCHCTL_HANDLER": "no-colon",
    }
    with pytest.raises(BadInput) as caught:
        WorkerConfig.from_sources(environ, {"lease_s": "forever"}, prefix="bx")
    message = str(caught.value)
    for name in ("BATCHCTL_BATCH_ID", "BATCHCTL_CONCURRENCY", "BATCHCTL_PULL_TIMEOUT_S", "BATCHCTL_HANDLER"):
        assert name in message
    assert "--lease='forever'" in message
    assert "\n" not in message


def test_empty_variable_means_unset() -> None:
    """An empty variable (as a template may render it) falls back to the default."""
    config = WorkerConfig.from_sources({"BATCHCTL_BATCH_ID": "b1", "BATCHCTL_CONCURRENCY": ""}, prefix="bx")
    assert config.concurrency == 1


@pytest.mark.parametrize(("lease_s", "period"), [(30, 10 / 3), (3, 1.0), (600, 10 / 3)])
def test_leases_are_renewed_before_either_deadline_lapses(lease_s: int, period: float) -> None:
    """Renewal every min(lease, 10 s Pub/Sub minimum) / 3."""
    config = WorkerConfig(batch_id="b", subscription="s", lease_s=lease_s)
    assert config.renew_every_s == pytest.approx(period)


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("64", True), ("65", False), ("-1", False)])
def test_writers_range_up_to_the_connections_kept(value: str, ok: bool) -> None:
    """``BATCHCTL_WRITERS`` takes 0..64: as many as the connections ``core.storage`` keeps to the bucket."""
    environ = {"BATCHCTL_BATCH_ID": "b1", "BATCHCTL_WRITERS": value}
    if ok:
        assert WorkerConfig.from_sources(environ, prefix="bx").writers == int(value)
    else:
        with pytest.raises(BadInput, match="BATCHCTL_WRITERS"):
            WorkerConfig.from_sources(environ, prefix="bx")
