"""One Job per need (issue 12): follow-ups only on facts, on the Kubernetes backend.

Each scenario asserts no part lost, ``parts_done`` exact, and the number of Jobs:
- a launcher stopped while its Job runs, restarted after the Job ended: 1 Job (the new leader
  applies the events workers published meanwhile before it plans; before, it launched Job 2 at once);
- a launcher process frozen (SIGSTOP) past its lease while a second one takes over, then resumed
  (SIGCONT): it creates no Job and writes no state (it does not hold the Lease); 1 Job.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchctl.core.emulator import free_port
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher.app import Parts, assemble
from tests.support.containers import IMAGE_ENV
from tests.support.handlers import markers
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import JOBS
from tests.support.kubelet import Kubelet
from tests.support.launching import REPO, running_launcher, submit_records, wait_terminal, write_records
from tests.support.waiting import wait_for


@pytest.fixture
def ksettings(env: dict[str, str], kube_api: KubeApi) -> Settings:
    """Kubernetes backend with leader election, fast worker knobs passed through the Job (as in
    test_kube_launcher)."""
    return Settings.from_env(kube_api.launcher_env(env, election=True, empty_pulls="2", drain_budget_s="5"))


@pytest.fixture
def kubelet(make_kubelet: Callable[..., Kubelet], tmp_path: Path) -> Kubelet:
    image = {**IMAGE_ENV, "PYTHONPATH": str(REPO), "BATCHCTL_RESULTS_DIR": str(tmp_path / "results"),
             "BATCHCTL_PULL_TIMEOUT_S": "0.5", "BATCHCTL_LEASE_S": "10"}
    return make_kubelet(env=image)


def jobs_created(kube_api: KubeApi) -> list[str]:
    return [j["metadata"]["name"] for j in kube_api.server.list_objects(JOBS, kube_api.namespace)]


def job_ended(kube_api: KubeApi, name: str) -> bool:
    job = kube_api.server.read_object(JOBS, kube_api.namespace, name) or {}
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def done_stored(parts: Parts, batch_id: str) -> int:
    batch = parts.store.load(batch_id)
    return len(batch.done) if batch is not None else 0


def test_takeover_after_the_job_ended_launches_no_follow_up(
    ksettings: Settings, pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """The leader goes away while Job 1 runs (some progress stored); the Job drains every part with
    no leader running; the next leader finds it ended with parts "remaining" in the state, applies
    the queued events first, and finishes the batch with that one Job (before: Job 2 at once)."""
    path = write_records(tmp_path / "in.jsonl", [{"sleep": 0.2} for _ in range(40)])
    job1 = ksettings.names.job("takeover", 1)
    with running_launcher(ksettings, pubsub) as first:
        submit_records(pubsub, path, "takeover", parts_per_worker=20, max_parallelism=2)
        wait_for(lambda: done_stored(first.parts, "takeover") >= 4, timeout=60, what="some progress stored")
        first.stop()
    wait_for(lambda: job_ended(kube_api, job1), timeout=90, what="Job 1 to end with no leader")
    stored = assemble(ksettings, elect=False).store.load("takeover")
    assert stored is not None and 4 <= len(stored.done) < 40  # the state lags: events wait in Pub/Sub
    with running_launcher(ksettings, pubsub, parts=assemble(ksettings)) as second:
        batch = wait_terminal(second.parts, "takeover", timeout=90)
    assert batch.state == "succeeded" and batch.done == set(range(40))
    assert jobs_created(kube_api) == [job1]
    assert sorted(set(markers(tmp_path / "results", "done"))) == list(range(40))


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def metrics_of(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


@pytest.mark.timeout(240)
def test_frozen_leader_resumed_makes_no_job_and_no_write(
    ksettings: Settings, pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """Leader A (a real process) launches Job 1 and is frozen (SIGSTOP) past its lease; B takes
    over and finishes the batch; A is resumed (SIGCONT) remembering the batch running with parts
    left and Job 1 ended. A creates no Job and writes no state: it logs leadership_lost, never
    job_launched again. One Job, every part done once."""
    release = tmp_path / "release"
    path = write_records(tmp_path / "in.jsonl", [{"wait_for": str(release)} for _ in range(6)])
    log = tmp_path / "launcher-a.log"
    port = free_port()
    with log.open("wb") as out:
        leader = subprocess.Popen([sys.executable, "-m", "batchctl", "launcher", "--port", str(port)],
                                  env={**ksettings.environ, "BATCHCTL_POD_NAME": "launcher-a"}, cwd=REPO,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        job1 = ksettings.names.job("frozen", 1)
        wait_for(lambda: any(e.get("event") == "leadership_acquired" for e in log_events(log)), timeout=60,
                 what="A to lead")
        submit_records(pubsub, path, "frozen", parts_per_worker=3, max_parallelism=2)
        wait_for(lambda: kube_api.server.read_object(JOBS, kube_api.namespace, job1), timeout=60, what="Job 1")
        leader.send_signal(signal.SIGSTOP)
        b = Settings.from_env({**ksettings.environ, "BATCHCTL_POD_NAME": "launcher-b"})
        with running_launcher(b, pubsub, parts=assemble(b)) as follower:
            wait_for(lambda: follower.launcher.elector.is_leader, timeout=60, what="B to take over")
            release.touch()
            batch = wait_terminal(follower.parts, "frozen", timeout=90)
            cleaned = wait_for(lambda: (s := follower.parts.store.load("frozen")) and s.cleaned and s, timeout=30,
                               what="cleanup")
            version = cleaned.version
            leader.send_signal(signal.SIGCONT)
            wait_for(lambda: any(e.get("event") == "leadership_lost" for e in log_events(log)), timeout=30,
                     what="A to see it lost the Lease")
            wait_for(lambda: "batchctl_leader 0.0" in metrics_of(port), timeout=30,
                     what="A's loop to turn as a follower")  # it woke and ran passes without the Lease
            after = follower.parts.store.load("frozen")
    finally:
        leader.send_signal(signal.SIGCONT)
        leader.terminate()
        leader.wait(30)
    assert batch.state == "succeeded" and batch.done == set(range(6))
    assert jobs_created(kube_api) == [job1]
    assert after is not None and after.version == version, "A wrote the batch state after waking"
    launched = [e for e in log_events(log) if e.get("event") in ("job_launched", "job_already_exists")]
    assert {e["job"] for e in launched} <= {job1}  # A may have been frozen inside its Job create
