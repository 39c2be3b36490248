"""A batch admitted under a profile that a restarted launcher no longer offers (issue 10 gap).

Checks, on the local backend: launcher 1 offers profile ``a`` (``max_workers: 1``) and admits two
``a`` batches, the second left queued with no Job; launcher 1 stops; launcher 2 starts with a
profiles file without ``a``: the queued batch ends ``failed`` at once (not retried pass after pass)
with a one-line reason naming profile ``a``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from tests.support.launching import fast_worker_env, running_launcher, submit_records, wait_terminal, write_records
from tests.support.waiting import wait_for

HANDLER = "tests.support.handlers:gated"


def test_batch_of_a_removed_profile_ends_failed_naming_it(settings: Settings, pubsub: PubSub, tmp_path: Path) -> None:
    handlers = {"handlers": ["tests.support.handlers:*"]}
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(yaml.safe_dump({"profiles": {"a": {**handlers, "max_workers": 1}, "b": handlers}}))
    offered = Settings.from_env({**settings.environ, "BATCHCTL_PROFILES": str(profiles)})
    gate = tmp_path / "gate"
    gate.touch()
    path = write_records(tmp_path / "in.jsonl", [{"gate": str(gate)} for _ in range(2)])
    worker_env = fast_worker_env(tmp_path / "results")
    with running_launcher(offered, pubsub, worker_env=worker_env) as run:
        for batch_id in ("ra1", "ra2"):
            submit_records(pubsub, path, batch_id, handler=HANDLER, parts_per_worker=2, max_parallelism=1, profile="a")

        def queued() -> bool:
            batch = run.parts.store.load("ra2")
            return batch is not None and batch.state == "queued"

        wait_for(queued, timeout=60, what="ra2 queued behind ra1")
    profiles.write_text(yaml.safe_dump({"profiles": {"b": handlers}}))
    with running_launcher(offered, pubsub, worker_env=worker_env) as run:
        final = wait_terminal(run.parts, "ra2", timeout=30)
        errors = run.launcher.metrics.registry.get_sample_value("batchctl_reconcile_errors_total") or 0.0
    gate.unlink()
    assert final.state == "failed", final
    assert "profile 'a'" in final.reason and "\n" not in final.reason, final.reason
    assert errors <= 2, errors  # failed on its first try (ra1 may fail alongside it), not retried
