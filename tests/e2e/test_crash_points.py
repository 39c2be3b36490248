"""The launcher crashes at every step boundary (issue 12), by fault injection at named points.

Launcher A (a real ``batchctl launcher`` process, Kubernetes backend: strict API server, test
kubelet) runs with ``BATCHCTL_FAILPOINT`` naming one point (``launcher.failpoints``) and SIGKILLs
itself there; launcher B, without it, takes over. As Kubernetes tests its Job controller
(``test/integration/job``: stop the controller between two writes), each scenario then asserts
three things: no part lost (every part done, its handler's marker present), ``parts_done`` exact,
and the Job count: one distinct Job, counted both as the launchers' Job POSTs (the kubelet's own
requests left out) and as the Jobs in the API server.

- ``job-created-before-save``: B re-plans the same Job name first, meets 409 and records that Job
  (the batch's record counts the Job even when it ran to the end with no launcher);
- ``request-saved-before-ack``: B resumes the stored batch; the launch request, redelivered after
  its ack deadline, changes nothing (no second launch);
- ``event-saved-before-ack``: the events A saved come back to B while the batch still runs; no part
  is counted twice (B's ``batchctl_parts_done`` counts only what A had not saved).

The launcher's subscriptions are created here first with a 10 s ack deadline (the launcher leaves
existing ones as they are), so the redeliveries come 10 s after A's pull instead of 20 s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchctl.core import topology
from batchctl.core.emulator import free_port
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher import failpoints
from batchctl.launcher.app import assemble
from batchctl.launcher.state import SUCCEEDED, TERMINAL, BatchState
from tests.support.containers import IMAGE_ENV
from tests.support.handlers import markers
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import JOBS
from tests.support.kubelet import USER_AGENT, Kubelet
from tests.support.launching import REPO, submit_records, write_records
from tests.support.waiting import wait_for

REDELIVERY_S = 10
"""Ack deadline of the launcher's subscriptions in these tests (Pub/Sub's minimum)."""


@pytest.fixture
def kenv(env: dict[str, str], kube_api: KubeApi) -> dict[str, str]:
    """Launcher environment: Kubernetes backend, one launcher at a time (no Lease to wait for)."""
    return kube_api.launcher_env(env, empty_pulls="2", drain_budget_s="5")


@pytest.fixture
def kubelet(make_kubelet: Callable[..., Kubelet], tmp_path: Path) -> Kubelet:
    """Pods run ``batchctl worker`` with the test handlers; no prefetch, so a part waiting in one pod
    holds no other part back."""
    return make_kubelet(env={**IMAGE_ENV, "PYTHONPATH": str(REPO), "BATCHCTL_RESULTS_DIR": str(tmp_path / "results"),
                             "BATCHCTL_PULL_TIMEOUT_S": "0.5", "BATCHCTL_LEASE_S": "10", "BATCHCTL_PREFETCH": "0"})


@pytest.fixture
def short_deadlines(pubsub: PubSub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's requests and events subscriptions, made before any launcher with a 10 s ack deadline."""
    monkeypatch.setattr(topology, "LAUNCHER_ACK_DEADLINE_S", REDELIVERY_S)
    topology.ensure_shared(pubsub)


@dataclass
class Proc:
    """A ``batchctl launcher`` process, its log and its metrics port."""

    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def logged(self, event: str, **fields: Any) -> dict[str, Any] | None:
        return next((r for r in self.lines() if r.get("event") == event
                     and all(r.get(k) == v for k, v in fields.items())), None)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.fixture
def launchers(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``batchctl launcher`` processes (killed at the end if still running)."""
    started: list[Proc] = []

    def start(environ: dict[str, str], name: str, failpoint: str | None = None) -> Proc:
        env = {k: v for k, v in environ.items() if k != failpoints.FAILPOINT_VAR}
        if failpoint is not None:
            env[failpoints.FAILPOINT_VAR] = failpoint
        log, port = tmp_path / f"{name}.log", free_port()
        with log.open("wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "batchctl", "launcher", "--port", str(port)],
                                     env={**env, "BATCHCTL_POD_NAME": name}, cwd=REPO, stdout=out,
                                     stderr=subprocess.STDOUT)
        started.append(proc := Proc(popen, log, port))
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(10)


def crashed_at(proc: Proc, point: str) -> None:
    """``proc`` died of SIGKILL at ``point`` (its last words name it)."""
    assert proc.popen.wait(60) == -signal.SIGKILL, f"launcher A did not die of SIGKILL (log: {proc.log})"
    assert proc.logged("failpoint_hit", point=point), f"launcher A died elsewhere than at {point}"


def stored(settings: Settings, batch_id: str) -> BatchState:
    batch = assemble(settings, elect=False).store.load(batch_id)
    assert batch is not None, f"{batch_id} was never stored"
    return batch


def wait_succeeded(settings: Settings, batch_id: str, timeout: float = 60) -> BatchState:
    store = assemble(settings, elect=False).store

    def terminal() -> BatchState | None:
        batch = store.load(batch_id)
        return batch if batch is not None and batch.state in TERMINAL else None

    batch = wait_for(terminal, timeout=timeout, interval=0.2, what=f"{batch_id} to finish")
    assert batch.state == SUCCEEDED, batch.reason
    return batch


def job_posts(kube_api: KubeApi) -> list[tuple[str, int]]:
    """(name, status) of every Job create a launcher sent, in order."""
    return [(r.body["metadata"]["name"], r.status) for r in kube_api.server.request_log()
            if r.rbac == ("batch", "jobs", "create") and r.user_agent != USER_AGENT]


def jobs_stored(kube_api: KubeApi) -> list[str]:
    return sorted(j["metadata"]["name"] for j in kube_api.server.list_objects(JOBS, kube_api.namespace))


def assert_one_job_all_parts(kube_api: KubeApi, batch: BatchState, job: str, n: int, results: Path) -> None:
    """No part lost, parts_done exact, one distinct Job (in the API server and in the batch's record)."""
    assert batch.done == set(range(n)) and len(batch.done) == n and batch.dead == set()
    assert set(markers(results, "done")) == set(range(n)), "a part counted done has no result marker"
    assert jobs_stored(kube_api) == [job]
    assert [j.name for j in batch.jobs] == [job]


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("short_deadlines")
def test_crash_after_job_create_before_state_save(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
    launchers: Callable[..., Proc],
) -> None:
    """A dies with its Job created and not recorded; the Job runs the parts meanwhile. B plans that Job
    again first (running or ended), meets 409 and records it, and ends the batch on it: one Job, two
    POSTs (201, then 409), and the batch's record names that Job."""
    settings = Settings.from_env(kenv)
    job, n = f"{settings.prefix}-fp1-1", 4
    a = launchers(kenv, "launcher-a", failpoints.JOB_CREATED_BEFORE_SAVE)
    submit_records(pubsub, write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(n)]), "fp1",
                   parts_per_worker=2, max_parallelism=2)
    crashed_at(a, failpoints.JOB_CREATED_BEFORE_SAVE)
    assert stored(settings, "fp1").jobs == [], "the Job's record was saved before the crash point"
    assert job_posts(kube_api) == [(job, 201)]
    b = launchers(kenv, "launcher-b")
    batch = wait_succeeded(settings, "fp1")
    assert job_posts(kube_api) == [(job, 201), (job, 409)]
    assert b.logged("job_already_exists", job=job), "B did not meet the Job A created"
    assert_one_job_all_parts(kube_api, batch, job, n, tmp_path / "results")


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("short_deadlines")
def test_crash_after_request_saved_before_ack(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
    launchers: Callable[..., Proc],
) -> None:
    """A dies with the batch stored and its launch request not acked. B resumes the batch from the store
    and launches its Job; the request comes back to B and changes nothing: one Job, one POST."""
    settings = Settings.from_env(kenv)
    job, n = f"{settings.prefix}-fp2-1", 4
    a = launchers(kenv, "launcher-a", failpoints.REQUEST_SAVED_BEFORE_ACK)
    submit_records(pubsub, write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(n)]), "fp2",
                   parts_per_worker=2, max_parallelism=2)
    crashed_at(a, failpoints.REQUEST_SAVED_BEFORE_ACK)
    before = stored(settings, "fp2")
    assert before.state == "pending" and before.jobs == [] and job_posts(kube_api) == []
    b = launchers(kenv, "launcher-b")
    again = wait_for(lambda: next((r for r in b.lines() if r.get("event") == "request_applied"
                                   and r.get("batch_id") == "fp2"), None),
                     timeout=REDELIVERY_S + 30, what="B to apply the redelivered launch request")
    assert again["delivery_attempt"] >= 2, "B got the request before its ack deadline: A's pull was not it"
    assert job_posts(kube_api) == [(job, 201)], "the redelivered request launched again"
    batch = wait_succeeded(settings, "fp2")
    assert job_posts(kube_api) == [(job, 201)]
    assert_one_job_all_parts(kube_api, batch, job, n, tmp_path / "results")


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("short_deadlines")
def test_crash_between_event_save_and_ack(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
    launchers: Callable[..., Proc],
) -> None:
    """A dies with progress saved and its events not acked. The last part waits for a file, so the batch
    still runs when those events come back to B: B counts none of their parts again (its parts_done
    metric is exactly the parts A had not saved) and the batch ends on its one Job."""
    settings = Settings.from_env(kenv)
    job, n = f"{settings.prefix}-fp3-1", 6
    release = tmp_path / "release"
    records = [{"i": i} for i in range(n - 1)] + [{"wait_for": str(release)}]
    a = launchers(kenv, "launcher-a", failpoints.EVENT_SAVED_BEFORE_ACK)
    submit_records(pubsub, write_records(tmp_path / "in.jsonl", records), "fp3", parts_per_worker=3,
                   max_parallelism=2)
    crashed_at(a, failpoints.EVENT_SAVED_BEFORE_ACK)
    saved = stored(settings, "fp3")
    assert saved.done and [j.name for j in saved.jobs] == [job], "the crash came before any progress was saved"
    assert n - 1 not in saved.done
    b = launchers(kenv, "launcher-b")
    wait_for(lambda: b.logged("events_redelivered"), timeout=REDELIVERY_S + 30,
             what="A's unacked events to come back to B")
    assert stored(settings, "fp3").state == "running", "the batch ended before the redelivery"
    release.touch()
    batch = wait_succeeded(settings, "fp3")
    assert b.metric("batchctl_parts_done_total") == n - len(saved.done), "B counted a redelivered part again"
    assert job_posts(kube_api) == [(job, 201)]
    assert_one_job_all_parts(kube_api, batch, job, n, tmp_path / "results")
