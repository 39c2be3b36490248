"""The whole pipeline on the Kubernetes backend: real emulator, kmock API server over HTTP reached
through a kubeconfig by the real client, and a test kubelet running each Job's pods as
``batchctl worker`` processes with the pod's environment.

Checks: submit → Job (the create request's body validated against the OpenAPI schema) → drain → succeeded → cleaned up;
a worker killed after another exited 0 gets a follow-up Job; a launcher killed mid-batch and
restarted creates no duplicate Job and finishes with parts_done exact; of two launchers only
the leader launches, and the other takes over when the leader dies; in the manifests' two
namespaces every request the launcher made is allowed by that namespace's Role, and no Role
grants anything unused.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchctl.core.names import Names
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher.app import assemble
from tests.support.containers import IMAGE_ENV
from tests.support.handlers import markers
from tests.support.k8s_schema import allows, granted, load_role_rules, render_kustomize, validate
from tests.support.kube_fixtures import KubeApi
from tests.support.kubelet import USER_AGENT, Kubelet
from tests.support.launching import REPO, running_launcher, submit_records, wait_terminal, write_records
from tests.support.pulling import leftovers
from tests.support.waiting import wait_for


@pytest.fixture
def kenv(env: dict[str, str], kube_api: KubeApi) -> dict[str, str]:
    """Launcher environment: Kubernetes backend, fast worker knobs passed through the Job."""
    return kube_api.launcher_env(env, election=True, empty_pulls="2", drain_budget_s="5")


@pytest.fixture
def ksettings(kenv: dict[str, str]) -> Settings:
    return Settings.from_env(kenv)


@pytest.fixture
def kubelet(make_kubelet: Callable[..., Kubelet], tmp_path: Path) -> Kubelet:
    """Pods run from a test image: batchctl's image ENV, the test handlers on PYTHONPATH and fast
    pull settings. Where Pub/Sub is (emulator, project, prefix) comes only from the Job's env."""
    image = {**IMAGE_ENV, "PYTHONPATH": str(REPO), "BATCHCTL_RESULTS_DIR": str(tmp_path / "results"),
             "BATCHCTL_PULL_TIMEOUT_S": "0.5", "BATCHCTL_LEASE_S": "10"}
    return make_kubelet(env=image)


def jobs_created(kube_api: KubeApi) -> list[dict[str, Any]]:
    return [r for r in kube_api.server.list_objects(_jobs(), kube_api.namespace)]


def job_creates(kube_api: KubeApi) -> list[tuple[str, int]]:
    """(name, status) of every Job create the launcher sent (the kubelet's own requests left out)."""
    return [(r.body["metadata"]["name"], r.status) for r in kube_api.server.request_log()
            if r.rbac == ("batch", "jobs", "create") and r.user_agent != USER_AGENT]


def _jobs() -> Any:
    from tests.support.kube_objects import JOBS

    return JOBS


def test_pipeline_on_kubernetes_succeeds_and_cleans_up(
    ksettings: Settings, pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """30 parts: one valid Job with computed parallelism, every part done once, resources deleted."""
    path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(30)])
    with running_launcher(ksettings, pubsub) as run:
        submit_records(pubsub, path, "kube", parts_per_worker=10, max_parallelism=5)
        batch = wait_terminal(run.parts, "kube", timeout=120)
        assert batch.state == "succeeded" and batch.done == set(range(30))
        wait_for(lambda: run.parts.store.load("kube").cleaned, timeout=30, what="cleanup")  # type: ignore[union-attr]
    jobs = jobs_created(kube_api)
    assert [j["metadata"]["name"] for j in jobs] == [f"{ksettings.prefix}-kube-1"]
    assert jobs[0]["spec"]["parallelism"] == 3
    assert jobs[0]["metadata"]["labels"]["batchctl.dev/batch-id"] == "kube"
    [sent] = [r.body for r in kube_api.server.request_log() if r.rbac == ("batch", "jobs", "create")
              and r.user_agent != USER_AGENT]
    validate(sent)  # the body as the launcher sent it, not as the server stored and defaulted it
    assert sorted(set(markers(tmp_path / "results", "done"))) == list(range(30))
    assert leftovers(pubsub, ksettings.prefix) == ([], [])


def test_worker_killed_after_another_succeeded_gets_follow_up_job(
    ksettings: Settings, pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """Once one pod exits 0 the Job starts no new pod; killing the pod holding a part leaves the
    Job Complete with work left, and the launcher launches Job 2 once the part's lease can have
    lapsed, which finishes it: exactly two Jobs."""
    results = tmp_path / "results"
    path = write_records(tmp_path / "in.jsonl", [{"sleep": 8}] + [{"i": i} for i in range(5)])
    with running_launcher(ksettings, pubsub) as run:
        submit_records(pubsub, path, "orphan", parts_per_worker=3, max_parallelism=2)
        job1 = f"{ksettings.prefix}-orphan-1"
        wait_for(lambda: 0 in markers(results, "started"), timeout=60, what="the slow part to start")
        wait_for(lambda: any(p.exit_code == 0 for p in kubelet.pods(job1)), timeout=60,
                 what="one pod to drain and exit 0")
        holder = next(p for p in kubelet.pods(job1) if p.exit_code is None)
        kubelet.kill(holder, signal.SIGKILL)
        batch = wait_terminal(run.parts, "orphan", timeout=120)
    assert batch.state == "succeeded" and batch.done == set(range(6))
    names = [j["metadata"]["name"] for j in jobs_created(kube_api)]
    # Job 2 waits until the killed pod's lease can have lapsed (it sent no worker_exited), so it
    # finds the part: two Jobs, not an idle Job 2 and then a Job 3 (issue 12).
    assert sorted(names) == [job1, f"{ksettings.prefix}-orphan-2"]
    assert job_creates(kube_api) == [(job1, 201), (f"{ksettings.prefix}-orphan-2", 201)]
    assert [j.name for j in batch.jobs] == [job1, f"{ksettings.prefix}-orphan-2"]
    assert batch.pods.get(job1, 0) >= 2


def test_launcher_restart_resumes_without_duplicate_jobs(
    ksettings: Settings, pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """Stop the launcher mid-batch (state stays in its ConfigMap), start another: same Job,
    no second one, batch succeeds with parts_done exact."""
    results = tmp_path / "results"
    path = write_records(tmp_path / "in.jsonl", [{"sleep": 0.3} for _ in range(20)])
    with running_launcher(ksettings, pubsub) as first:
        submit_records(pubsub, path, "restart", parts_per_worker=10, max_parallelism=2)
        wait_for(lambda: len(set(markers(results, "done"))) >= 3, timeout=60, what="progress")
        first.stop()
    mid = jobs_created(kube_api)
    assert len(mid) == 1
    with running_launcher(ksettings, pubsub, parts=assemble(ksettings)) as second:
        batch = wait_terminal(second.parts, "restart", timeout=120)
    assert batch.state == "succeeded" and batch.done == set(range(20)) and len(batch.done) == 20
    assert [j["metadata"]["name"] for j in jobs_created(kube_api)] == [f"{ksettings.prefix}-restart-1"]
    assert job_creates(kube_api) == [(f"{ksettings.prefix}-restart-1", 201)], "the second launcher created again"
    assert [j.name for j in batch.jobs] == [f"{ksettings.prefix}-restart-1"]


def test_only_the_leader_launches_and_the_other_takes_over(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """Two launchers: one holds the Lease and launches; when it dies without releasing,
    the other takes over after the lease lapses and finishes the next batch."""
    a = Settings.from_env({**kenv, "BATCHCTL_POD_NAME": "launcher-a"})
    b = Settings.from_env({**kenv, "BATCHCTL_POD_NAME": "launcher-b"})
    parts_a, parts_b = assemble(a), assemble(b)
    for parts in (parts_a, parts_b):
        parts.elector.lease_s = 4  # type: ignore[attr-defined]
        parts.elector.renew_s = 1  # type: ignore[attr-defined]
    path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(4)])
    with running_launcher(a, pubsub, parts=parts_a) as run_a, running_launcher(b, pubsub, parts=parts_b) as run_b:
        wait_for(lambda: run_a.launcher.elector.is_leader != run_b.launcher.elector.is_leader,
                 timeout=20, what="exactly one leader")
        leader, follower = (run_a, run_b) if run_a.launcher.elector.is_leader else (run_b, run_a)
        submit_records(pubsub, path, "first")
        assert wait_terminal(leader.parts, "first", timeout=90).state == "succeeded"
        assert follower.launcher.metrics.jobs_launched._value.get() == 0
        leader.parts.elector.stop(release=False)  # dies: the Lease is not given back
        leader.stop()
        wait_for(lambda: follower.launcher.elector.is_leader, timeout=20, what="the follower to take over")
        submit_records(pubsub, write_records(tmp_path / "2.jsonl", [{"i": 1}]), "second")
        assert wait_terminal(follower.parts, "second", timeout=90).state == "succeeded"
        assert follower.launcher.metrics.jobs_launched._value.get() == 1
    lease = kube_api.server.read_object(_lease(), kube_api.namespace, a.names.lease)
    assert lease is not None and lease["spec"]["leaseTransitions"] >= 1


SYSTEM_NAMESPACE, JOBS_NAMESPACE = "batchctl-system", "batchctl-jobs"
ROLES = {SYSTEM_NAMESPACE: "batchctl-launcher", JOBS_NAMESPACE: "batchctl-launcher-jobs"}
"""The manifests' namespaces and the launcher's Role in each (manifests/base/rbac.yaml)."""


def _lease() -> Any:
    from tests.support.kube_objects import LEASES

    return LEASES


def test_launcher_requests_match_the_role(
    ksettings: Settings, pubsub: PubSub, kube_api: KubeApi, make_kubelet: Callable[..., Kubelet],
    env: dict[str, str], tmp_path: Path,
) -> None:
    """In the manifests' two namespaces, every (verb, resource) the launcher (and CLI) sent is allowed
    by the Role of the namespace it was sent to, and no Role grants anything the launcher never used
    (with a budget, so a Job is resized: patch)."""
    from batchctl.frontend.cli import main

    make_kubelet(namespace=JOBS_NAMESPACE, env={**env, "PYTHONPATH": str(REPO), "BATCHCTL_PULL_TIMEOUT_S": "0.5",
                                                "BATCHCTL_RESULTS_DIR": str(tmp_path / "results")})
    kube_api.server.clear_request_log()
    path = write_records(tmp_path / "in.jsonl", [{"sleep": 1} for _ in range(6)])
    # Retention deletes finished batches' state too; a budget of 2 resizes rbac's Job when rbac2 comes (patch).
    env = {**ksettings.environ, "BATCHCTL_RETENTION": "3s", "BATCHCTL_MAX_WORKERS": "2",
           "BATCHCTL_NAMESPACE": SYSTEM_NAMESPACE, "BATCHCTL_JOBS_NAMESPACE": JOBS_NAMESPACE}
    ksettings = Settings.from_env(env)
    job1 = ksettings.names.job("rbac", 1)
    with running_launcher(ksettings, pubsub) as run:
        submit_records(pubsub, path, "rbac", parts_per_worker=3)
        wait_for(lambda: kube_api.server.read_object(_jobs(), JOBS_NAMESPACE, job1), timeout=30, what=job1)
        submit_records(pubsub, path, "rbac2", parts_per_worker=3)
        wait_for(lambda: (kube_api.server.read_object(_jobs(), JOBS_NAMESPACE, job1) or {})["spec"][
            "parallelism"] == 1, timeout=30, what="rbac's Job patched down to its share")
        assert main(["cancel", "rbac2"], environ=env) == 0
        assert wait_terminal(run.parts, "rbac", timeout=90).state == "succeeded"
        assert main(["status", "rbac", "--json"], environ=env) == 0
        assert main(["list"], environ=env) == 0
        wait_for(lambda: run.parts.store.load("rbac") is None, timeout=30, what="rbac forgotten after retention")
    requests = [r for r in kube_api.server.request_log() if r.user_agent != USER_AGENT and r.rbac]
    manifests = render_kustomize(REPO / "manifests" / "base")
    roles = {namespace: load_role_rules(manifests, name) for namespace, name in ROLES.items()}
    # The Role names the Lease of the default prefix; this test runs with its own prefix.
    default_lease = Names("batchctl").lease
    for r in requests:
        group, resource, verb = r.rbac  # type: ignore[misc]
        name = default_lease if r.name == ksettings.names.lease else r.name
        assert r.namespace in roles, f"{verb} {group}/{resource}/{name} sent to namespace {r.namespace}"
        assert allows(roles[r.namespace], verb, group, resource, name), (
            f"Role in {r.namespace} does not allow {verb} {group}/{resource}/{name}")
    for namespace, rules in roles.items():
        used = {(verb, group, resource) for group, resource, verb in (r.rbac for r in requests  # type: ignore[misc]
                                                                      if r.namespace == namespace)}
        unused = granted(rules) - used
        assert not unused, f"Role in {namespace} grants what the launcher never used: {sorted(unused)}"
