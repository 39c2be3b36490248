"""The whole pipeline on the local backend: real emulator, launcher in-process, workers as processes.

Checks: a batch is launched with the computed parallelism, drained and succeeds with
parts_done exact and its Pub/Sub resources deleted; status and list report it; a
cancel stops workers and deletes the work subscription; dead parts fail the batch
and retry completes it; a worker killed after another exited 0 gets a follow-up Job; a
handler that cannot be imported fails the batch with a reason that names it.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.frontend.cli import main
from batchctl.launcher.local_backend import LocalBackend
from batchctl.launcher.state import BatchState
from tests.support.handlers import markers
from tests.support.launching import (
    fast_worker_env,
    running_launcher,
    submit_records,
    wait_terminal,
    write_records,
)
from tests.support.pulling import leftovers
from tests.support.waiting import wait_for


def test_batch_runs_to_success_and_cleans_up(
    settings: Settings,
    pubsub: PubSub,
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """40 parts, 5 per worker, at most 3 workers: succeeded, parts_done exact, topics gone."""
    results = tmp_path / "results"
    path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(40)])
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(results)) as run:
        submit_records(pubsub, path, "ok", max_parallelism=3)
        batch = wait_terminal(run.parts, "ok")
        assert batch.state == "succeeded"
        assert batch.done == set(range(40)) and not batch.dead
        assert batch.jobs[0].parallelism == 3
        wait_for(lambda: run.parts.store.load("ok").cleaned, timeout=30, what="cleanup")  # type: ignore[union-attr]
    assert sorted(set(markers(results, "done"))) == list(range(40))
    assert leftovers(pubsub, settings.prefix) == ([], [])
    assert main(["status", "ok", "--json"], environ=env) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "succeeded" and status["parts_done"] == status["parts_total"] == 40
    assert status["jobs"] == [f"{settings.prefix}-ok-1"]
    assert main(["list", "--json"], environ=env) == 0
    assert [row["batch_id"] for row in json.loads(capsys.readouterr().out)] == ["ok"]


def test_cancel_stops_workers_and_deletes_work_subscription(
    settings: Settings,
    pubsub: PubSub,
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Cancel mid-batch: state cancelled, workers gone, work subscription deleted; exit 0."""
    results = tmp_path / "results"
    path = write_records(tmp_path / "in.jsonl", [{"sleep": 2} for _ in range(20)])
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(results)) as run:
        submit_records(pubsub, path, "stopme")
        wait_for(lambda: markers(results, "started"), timeout=30, what="a part to start")
        assert main(["cancel", "stopme", "--json"], environ=env) == 0
        assert json.loads(capsys.readouterr().out)["state"] == "cancelled"
        backend = run.parts.backend
        assert isinstance(backend, LocalBackend)
        wait_for(
            lambda: sum(j.active for j in backend.observe("stopme")) == 0, timeout=20, what="workers to stop"
        )
    assert not pubsub.subscription_exists(settings.names.work("stopme"))
    assert len(set(markers(results, "done"))) < 20


def test_dead_parts_fail_the_batch_and_retry_completes_it(
    settings: Settings,
    pubsub: PubSub,
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    """A part that fails 5 times is dead: batch failed; after the cause is fixed, retry succeeds."""
    results = tmp_path / "results"
    poison = tmp_path / "poison"
    poison.touch()
    records = [{"i": i} for i in range(6)] + [{"fail_while": str(poison)}]
    path = write_records(tmp_path / "in.jsonl", records)
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(results)) as run:
        submit_records(pubsub, path, "flaky", handler="tests.support.handlers:fail_while_file_exists")
        batch = wait_terminal(run.parts, "flaky", timeout=120)
        assert batch.state == "failed" and batch.dead == {6} and batch.done == set(range(6))
        poison.unlink()
        assert main(["retry", "flaky"], environ=env) == 0
        batch = wait_for(lambda: _succeeded(run.parts.store, "flaky"), timeout=90, what="retry to finish")
        assert batch.done == set(range(7)) and not batch.dead - batch.done
        assert batch.retries == 1


def test_worker_killed_after_another_exited_gets_follow_up_job(
    settings: Settings,
    pubsub: PubSub,
    tmp_path: Path,
) -> None:
    """Work-queue semantics: once one worker exits 0 no new one starts; a later kill -9 orphans
    a part, and the launcher launches Job 2 for it."""
    results = tmp_path / "results"
    path = write_records(tmp_path / "in.jsonl", [{"sleep": 8}] + [{"i": i} for i in range(5)])
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(results)) as run:
        submit_records(pubsub, path, "orphan", parts_per_worker=3, max_parallelism=2)
        backend = run.parts.backend
        assert isinstance(backend, LocalBackend)
        wait_for(lambda: 0 in markers(results, "started"), timeout=30, what="the slow part to start")
        job = backend._jobs[f"{settings.prefix}-orphan-1"]
        wait_for(lambda: any(p.poll() == 0 for p in job.procs), timeout=30, what="one worker to drain")
        holder = next(p for p in job.procs if p.poll() is None)
        holder.send_signal(signal.SIGKILL)
        batch = wait_terminal(run.parts, "orphan", timeout=120)
        assert batch.state == "succeeded" and batch.done == set(range(6))
        names = [j.name for j in batch.jobs]
        assert len(names) >= 2 and names == [f"{settings.prefix}-orphan-{n}" for n in range(1, len(names) + 1)]


def _succeeded(store: object, batch_id: str) -> object:
    batch = store.load(batch_id)  # type: ignore[attr-defined]
    return batch if batch is not None and batch.state == "succeeded" else None


def test_a_handler_that_cannot_be_imported_fails_the_batch_saying_why(
    settings: Settings, pubsub: PubSub, tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str],
) -> None:
    """Workers exit 2 at once; the batch fails without follow-up Jobs, and status names the handler's error."""
    path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(4)])
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(tmp_path / "results")) as run:
        submit_records(pubsub, path, "nohandler", handler="no_such_module_xyz:handle")

        def explained() -> BatchState | None:
            batch = run.parts.store.load("nohandler")
            return batch if batch is not None and "no_such_module_xyz" in batch.reason else None

        batch = wait_for(explained, timeout=60, what="the failure reason to name the handler")
    assert batch.state == "failed" and len(batch.jobs) == 1
    assert batch.reason.startswith("worker configuration error (exit 2): ")
    assert main(["status", "nohandler", "--json"], environ=env) == 0  # status reports; it does not judge
    assert "no_such_module_xyz" in json.loads(capsys.readouterr().out)["reason"]
