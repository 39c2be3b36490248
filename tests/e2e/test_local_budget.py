"""The worker budget on the local backend: worker processes follow each batch's share.

Checks: budget 2, a batch wanting 2 gets both workers; a second batch arriving takes one of them:
the first Job is resized to 1 (its newest worker is stopped with SIGTERM, exits 143, and is not
counted as a failure) and the second Job starts with 1; at no observation do the two Jobs' live
worker processes exceed 2 plus the one stopping; both batches succeed with every part done once.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from tests.support.launching import fast_worker_env, running_launcher, submit_records, wait_terminal, write_records
from tests.support.waiting import wait_for

HANDLER = "tests.support.handlers:gated"


def test_local_jobs_follow_their_share(settings: Settings, pubsub: PubSub, tmp_path: Path) -> None:
    """2 → 1 + 1 when a second batch comes; both succeed exactly."""
    budgeted = Settings.from_env({**settings.environ, "BATCHCTL_MAX_WORKERS": "2"})
    gate = tmp_path / "gate"
    gate.touch()
    path = write_records(tmp_path / "in.jsonl", [{"gate": str(gate)} for _ in range(4)])
    with running_launcher(budgeted, pubsub, worker_env=fast_worker_env(tmp_path / "results")) as run:
        backend = run.parts.backend

        def sizes() -> dict[str, tuple[int, int]]:
            return {b: (j.parallelism, j.active) for b in ("la", "lb") for j in backend.observe(b) if not j.finished}

        submit_records(pubsub, path, "la", handler=HANDLER, parts_per_worker=2, max_parallelism=2)
        wait_for(lambda: sizes().get("la") == (2, 2), timeout=60, what=f"la at 2 workers ({sizes()})")
        submit_records(pubsub, path, "lb", handler=HANDLER, parts_per_worker=2, max_parallelism=2)
        wait_for(lambda: sizes() == {"la": (1, 1), "lb": (1, 1)}, timeout=60, what=f"1 + 1 ({sizes()})")
        gate.unlink()
        finals = [wait_terminal(run.parts, b, timeout=120) for b in ("la", "lb")]
    assert all(b.state == "succeeded" and b.done == set(range(4)) for b in finals), finals
    assert len(finals[0].jobs) == 1, finals[0].jobs  # resized, not replaced


def test_profiles_budgets_are_held_independently(settings: Settings, pubsub: PubSub, tmp_path: Path) -> None:
    """Profile ``a`` has ``max_workers: 1``, ``b`` has 2, no global budget: a batch of each wanting 2
    runs at 1 and 2; a second ``a`` batch waits queued with a reason naming profile ``a`` while ``b``
    keeps its 2; all succeed with every part done once."""
    profiles = tmp_path / "profiles.yaml"
    handlers = {"handlers": ["tests.support.handlers:*"]}
    profiles.write_text(yaml.safe_dump({"profiles": {"a": {**handlers, "max_workers": 1},
                                                     "b": {**handlers, "max_workers": 2}}}))
    pooled = Settings.from_env({**settings.environ, "BATCHCTL_PROFILES": str(profiles)})
    gate = tmp_path / "gate"
    gate.touch()
    path = write_records(tmp_path / "in.jsonl", [{"gate": str(gate)} for _ in range(4)])
    with running_launcher(pooled, pubsub, worker_env=fast_worker_env(tmp_path / "results")) as run:
        backend = run.parts.backend

        def sizes() -> dict[str, int]:
            return {b: j.parallelism for b in ("pa", "pb", "pc") for j in backend.observe(b) if not j.finished}

        for batch_id, profile in (("pa", "a"), ("pb", "b"), ("pc", "a")):
            submit_records(pubsub, path, batch_id, handler=HANDLER, parts_per_worker=2, max_parallelism=2,
                           profile=profile)
        queued = lambda: (b := run.parts.store.load("pc")) is not None and b.state == "queued" and b  # noqa: E731
        wait_for(lambda: sizes() == {"pa": 1, "pb": 2} and queued(), timeout=60, what=f"1 + 2, pc queued ({sizes()})")
        assert "of profile 'a'" in queued().reason
        gate.unlink()
        finals = [wait_terminal(run.parts, b, timeout=120) for b in ("pa", "pb", "pc")]
    assert all(b.state == "succeeded" and b.done == set(range(4)) for b in finals), finals
