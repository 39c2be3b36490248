"""Recovery paths of the launcher on the Kubernetes backend, each forced for real.

The same parts as ``test_kube_launcher.py``: the real emulator, the strict API server reached by the
official client, the test kubelet running each Job's pods as ``batchctl worker`` processes.

Checks:
- a leader SIGKILLed (the Lease is not released) is replaced only once its Lease has expired;
- a launcher SIGKILLed between its Job create and its state save: the next one re-creates the
  same Job name, gets 409 AlreadyExists, records it, and finishes the batch with no third Job;
- Job watches closed and compacted (410 on resume) all through a batch: the launcher re-lists and
  still sees its Job finish (the batch gets cleaned up), with one Job;
- ``cancel`` deletes the batch's Jobs and their pods; ``retry`` of a batch failed on a dead-lettered
  part republishes it and launches a Job that finishes it;
- parts that never arrive: three idle Jobs in a row fail the batch, with the reason.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from batchctl.core.emulator import free_port
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.frontend.cli import main
from batchctl.launcher.app import assemble
from batchctl.launcher.state import CANCELLED, FAILED, SUCCEEDED
from tests.support.containers import IMAGE_ENV
from tests.support.handlers import markers
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import JOBS, LEASES, PODS
from tests.support.kubelet import USER_AGENT, Kubelet
from tests.support.launching import REPO, running_launcher, submit_records, wait_terminal, write_records
from tests.support.waiting import wait_for


@pytest.fixture
def kenv(env: dict[str, str], kube_api: KubeApi) -> dict[str, str]:
    """Launcher environment: Kubernetes backend, fast worker knobs passed through the Job."""
    return kube_api.launcher_env(env, empty_pulls="2", drain_budget_s="5")


@pytest.fixture
def image_env(tmp_path: Path) -> dict[str, str]:
    """The pods' image: batchctl's ENV, the test handlers on PYTHONPATH, fast pull settings."""
    return {**IMAGE_ENV, "PYTHONPATH": str(REPO), "BATCHCTL_RESULTS_DIR": str(tmp_path / "results"),
            "BATCHCTL_PULL_TIMEOUT_S": "0.5", "BATCHCTL_LEASE_S": "10"}


@pytest.fixture
def kubelet(make_kubelet: Callable[..., Kubelet], image_env: dict[str, str]) -> Kubelet:
    return make_kubelet(env=image_env)


@pytest.fixture
def launchers(tmp_path: Path) -> Iterator[Callable[[dict[str, str], str], subprocess.Popen[bytes]]]:
    """Start ``batchctl launcher`` processes (killed at the end if still running)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(environ: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "batchctl", "launcher", "--port", str(free_port())],
                                    env={**environ, "BATCHCTL_POD_NAME": name}, cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _job_names(kube_api: KubeApi) -> list[str]:
    return sorted(j["metadata"]["name"] for j in kube_api.server.list_objects(JOBS, kube_api.namespace))


@pytest.mark.timeout(180)
def test_sigkilled_leader_is_replaced_only_after_its_lease_expires(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
    launchers: Callable[[dict[str, str], str], subprocess.Popen[bytes]],
) -> None:
    """Leader A (a process) is SIGKILLed holding the Lease: B takes over no sooner than renewTime +
    leaseDurationSeconds, A never released it, and B finishes the next batch."""
    elect = {**kenv, "BATCHCTL_LEADER_ELECTION": "true"}
    lease_name = Settings.from_env(elect).names.lease

    def lease() -> dict[str, Any]:
        return kube_api.server.read_object(LEASES, kube_api.namespace, lease_name) or {}

    leader = launchers(elect, "launcher-a")
    wait_for(lambda: lease().get("spec", {}).get("holderIdentity") == "launcher-a", timeout=60,
             what="launcher-a to hold the Lease")
    b = Settings.from_env({**elect, "BATCHCTL_POD_NAME": "launcher-b"})
    with running_launcher(b, pubsub, parts=assemble(b)) as follower:
        wait_for(lambda: follower.launcher.elector.watching, timeout=30, what="b to campaign")
        assert not follower.launcher.elector.is_leader
        leader.send_signal(signal.SIGKILL)
        assert leader.wait(10) == -signal.SIGKILL
        held = lease()["spec"]
        assert held["holderIdentity"] == "launcher-a", "a SIGKILLed leader cannot have released its Lease"
        expires = _epoch(held["renewTime"]) + int(held["leaseDurationSeconds"])
        wait_for(lambda: follower.launcher.elector.is_leader, timeout=int(held["leaseDurationSeconds"]) + 15,
                 what="b to take over")
        assert time.time() >= expires, f"b took over {expires - time.time():.1f}s before the Lease expired"
        assert lease()["spec"]["holderIdentity"] == "launcher-b" and lease()["spec"]["leaseTransitions"] >= 1
        submit_records(pubsub, write_records(tmp_path / "in.jsonl", [{"i": 1}]), "after")
        assert wait_terminal(follower.parts, "after", timeout=90).state == SUCCEEDED


@pytest.mark.timeout(180)
def test_sigkill_between_job_create_and_state_save_reaches_409(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, make_kubelet: Callable[..., Kubelet],
    image_env: dict[str, str], tmp_path: Path,
    launchers: Callable[[dict[str, str], str], subprocess.Popen[bytes]],
) -> None:
    """The API server SIGKILLs launcher A the moment its Job is stored; B re-creates the same name, gets 409,
    records the Job, and the batch finishes with Job 2 (the parts were held elsewhere meanwhile)."""
    settings = Settings.from_env(kenv)
    first_job = f"{settings.prefix}-crash-1"
    victim: list[subprocess.Popen[bytes]] = []

    def kill_at_create(res: Any, obj: dict[str, Any]) -> None:
        if res == JOBS and obj["metadata"]["name"] == first_job and victim:
            victim.pop().send_signal(signal.SIGKILL)

    kube_api.server.after_create.append(kill_at_create)
    victim.append(crashed := launchers(kenv, "launcher-a"))
    submit_records(pubsub, write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(3)]), "crash",
                   parts_per_worker=10, max_parallelism=1)
    assert crashed.wait(60) == -signal.SIGKILL
    stored = assemble(settings, elect=False).store.load("crash")
    assert stored is not None and stored.jobs == [], "the state was saved after the create: no crash in between"
    work = settings.names.work("crash")
    held: list[Any] = []
    wait_for(lambda: held.extend(pubsub.pull(work, max_messages=10, timeout_s=1)) or len(held) == 3, timeout=30,
             what="the test to hold the 3 parts")  # so Job 1's pods find the queue empty and it ends idle
    make_kubelet(env=image_env)
    wait_for(lambda: "Complete" in _conditions(kube_api, first_job), timeout=60, what="Job 1 to end idle")
    with running_launcher(settings, pubsub, parts=assemble(settings)) as run:
        batch = wait_terminal(run.parts, "crash", timeout=120)
    assert batch.state == SUCCEEDED and batch.done == {0, 1, 2}
    creates = [(r.body["metadata"]["name"], r.status) for r in kube_api.server.request_log()
               if r.rbac == ("batch", "jobs", "create") and r.user_agent != USER_AGENT]
    assert creates == [(first_job, 201), (first_job, 409), (f"{settings.prefix}-crash-2", 201)]
    assert [j.name for j in batch.jobs] == [first_job, f"{settings.prefix}-crash-2"]


def _conditions(kube_api: KubeApi, name: str) -> set[str]:
    job = kube_api.server.read_object(JOBS, kube_api.namespace, name) or {}
    return {c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


@pytest.mark.timeout(180)
def test_watch_closed_and_compacted_mid_batch_misses_no_completion(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """Every 0.3 s the server ends all watches and forgets its history; the launcher re-lists, sees its Job
    complete, and cleans the batch up."""
    settings = Settings.from_env(kenv)
    stop = threading.Event()

    def churn() -> None:
        while not stop.wait(0.3):
            kube_api.server.compact()

    thread = threading.Thread(target=churn, daemon=True)
    with running_launcher(settings, pubsub) as run:
        submit_records(pubsub, write_records(tmp_path / "in.jsonl", [{"sleep": 0.3} for _ in range(8)]), "churn",
                       parts_per_worker=8, max_parallelism=1)
        wait_for(lambda: run.parts.store.load("churn"), timeout=30, what="the batch to be accepted")
        thread.start()
        try:
            batch = wait_terminal(run.parts, "churn", timeout=90)
            wait_for(lambda: (run.parts.store.load("churn") or batch).cleaned, timeout=60,
                     what="cleanup, which needs the Job seen finished")
        finally:
            stop.set()
            thread.join(5)
    assert batch.state == SUCCEEDED and batch.done == set(range(8))
    lists = [r for r in kube_api.server.request_log()
             if r.rbac == ("batch", "jobs", "list") and r.user_agent != USER_AGENT]
    assert len(lists) >= 3, "the launcher should re-list after its watches were ended"
    assert kube_api.jobs_created() == [f"{settings.prefix}-churn-1"], "one Job for a batch that needed one"


@pytest.mark.timeout(180)
def test_cancel_deletes_jobs_and_pods(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """A running batch cancelled: its Job and pods are deleted (their processes end), state cancelled."""
    settings = Settings.from_env(kenv)
    release = tmp_path / "never"
    with running_launcher(settings, pubsub) as run:
        submit_records(pubsub, write_records(tmp_path / "in.jsonl", [{"wait_for": str(release)}] * 4), "stop",
                       parts_per_worker=2, max_parallelism=2)
        job = f"{settings.prefix}-stop-1"
        wait_for(lambda: len([p for p in kubelet.pods(job) if p.phase == "Running"]) == 2, timeout=60,
                 what="two pods running")
        assert main(["cancel", "stop"], environ=kenv) == 0
        assert wait_terminal(run.parts, "stop", timeout=60).state == CANCELLED
        wait_for(lambda: job not in _job_names(kube_api), timeout=60, what="the Job deleted")
        wait_for(lambda: not kube_api.server.list_objects(PODS, kube_api.namespace), timeout=60,
                 what="its pods deleted")
    assert all(p.exit_code is not None for p in kubelet.pods(job)), "a pod process outlived its deletion"


@pytest.mark.timeout(240)
def test_dead_lettered_part_fails_the_batch_and_retry_finishes_it(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """Part 1 fails on every delivery: dead-lettered, the batch fails counting 1 dead part. With the fault
    gone, ``retry`` republishes it and launches a Job; the batch succeeds with every part done."""
    settings = Settings.from_env(kenv)
    broken = tmp_path / "broken"
    broken.touch()
    records = [{"i": 0}, {"fail_while": str(broken)}, {"i": 2}]
    with running_launcher(settings, pubsub) as run:
        submit_records(pubsub, write_records(tmp_path / "in.jsonl", records), "dlq",
                       handler="tests.support.handlers:fail_while_file_exists", parts_per_worker=5)
        failed = wait_terminal(run.parts, "dlq", timeout=120)
        assert failed.state == FAILED and failed.dead == {1} and failed.done == {0, 2}
        assert "1 parts dead-lettered" in failed.reason
        jobs_before = _job_names(kube_api)
        broken.unlink()
        assert main(["retry", "dlq"], environ=kenv) == 0
        wait_for(lambda: (b := run.parts.store.load("dlq")) and b.state == SUCCEEDED, timeout=120,
                 what="the retried batch to succeed")
        done = run.parts.store.load("dlq")
    assert done is not None and done.done == {0, 1, 2}
    assert len(_job_names(kube_api)) > len(jobs_before) or len(done.jobs) > len(failed.jobs), "no Job relaunched"
    assert 1 in markers(tmp_path / "results", "done")


@pytest.mark.timeout(240)
def test_three_idle_jobs_fail_a_batch_whose_parts_are_gone(
    kenv: dict[str, str], pubsub: PubSub, make_kubelet: Callable[..., Kubelet], image_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Every part consumed by someone else before any worker ran: three Jobs in a row end without progress,
    and the batch fails saying so, instead of launching forever."""
    settings = Settings.from_env(kenv)
    work = settings.names.work("gone")
    with running_launcher(settings, pubsub) as run:
        submit_records(pubsub, write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(2)]), "gone")
        taken: list[Any] = []
        wait_for(lambda: taken.extend(pubsub.pull(work, max_messages=10, timeout_s=0.5)) or len(taken) == 2,
                 timeout=30, what="the test to take both parts")
        pubsub.ack(work, [m.ack_id for m in taken])
        make_kubelet(env=image_env)  # only now: no worker can have had a part
        batch = wait_terminal(run.parts, "gone", timeout=200)
    assert batch.state == FAILED
    assert "3 Jobs in a row ended without progress; 2 parts missing" in batch.reason
    assert len(batch.jobs) == 3
