"""The Kubernetes test harness is faithful where the launcher relies on it, and it can fail.

Checks, through the official client over HTTP: 409 on a duplicate create and on a stale
resourceVersion (Lease and ConfigMap, PATCH and PUT); watch events ADDED/MODIFIED/DELETED, resumed
from a resourceVersion, 410 once compacted; label selectors; status-subresource separation;
garbage collection on Job deletion; the request log's RBAC verbs; an injected kmock reaction.
And the test kubelet: parallelism, no new pod after a success, replacement up to backoffLimit,
FailJob on exit code 2, eviction ignored, activeDeadlineSeconds, deletion kills pods (SIGTERM, then
SIGKILL after the grace period), the entrypoint and environment of a pod.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
from kubernetes import client, watch

from tests.support.containers import IMAGE_ENV
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import CONFIGMAPS, JOBS, PODS
from tests.support.kubelet import Kubelet
from tests.support.waiting import wait_for

NS = "default"
LABELS = {"app.kubernetes.io/name": "batchctl"}

# Pod programs. WAIT_FOR_RELEASE waits (30 s at most) for the file "release" in MARKS; in FIRST_WINS,
# the first pod to claim the mark exits at once with FIRST_EXIT (default 0) and the others wait.
WAIT_FOR_RELEASE = """
import os, pathlib, time
marks = pathlib.Path(os.environ["MARKS"])
deadline = time.monotonic() + 30
while not (marks / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
"""
FIRST_WINS = (
    """
import os, pathlib, sys
try:
    os.close(os.open(pathlib.Path(os.environ["MARKS"]) / "first", os.O_CREAT | os.O_EXCL))
    sys.exit(int(os.environ.get("FIRST_EXIT", "0")))
except FileExistsError:
    pass
"""
    + WAIT_FOR_RELEASE
)
IGNORES_SIGTERM = (
    "import os, pathlib, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "pathlib.Path(os.environ['MARKS'], f'ignoring-{os.getpid()}').touch()\ntime.sleep(30)\n"
)
"""Ignores SIGTERM; marks ``ignoring-<pid>`` once the handler is in place (before that, SIGTERM kills)."""


def job_manifest(
    name: str,
    program: str,
    marks: Path,
    *,
    parallelism: int = 1,
    backoff_limit: int = 0,
    grace: int = 1,
    env: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A work-queue Job (completions unset) whose single container runs a Python program."""
    variables = {"MARKS": str(marks), **(env or {})}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {
            "parallelism": parallelism,
            "backoffLimit": backoff_limit,
            **spec,
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": grace,
                    "containers": [
                        {
                            "name": "worker",
                            "image": "batchctl:test",
                            "command": [sys.executable, "-c", program],
                            "env": [{"name": k, "value": v} for k, v in variables.items()],
                        }
                    ],
                },
            },
        },
    }


FAIL_ON_2 = {
    "rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In", "values": [2]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
}


def conditions(kube_api: KubeApi, name: str) -> dict[str, str]:
    """The Job's true conditions: type → reason."""
    job = kube_api.server.read_object(JOBS, NS, name) or {}
    return {
        c["type"]: c.get("reason", "")
        for c in (job.get("status") or {}).get("conditions", [])
        if c["status"] == "True"
    }


def api_error(call: Callable[[], Any]) -> tuple[int, str]:
    """The status and reason of the ApiException a call raises."""
    with pytest.raises(client.ApiException) as caught:
        call()
    return caught.value.status, json.loads(caught.value.body)["reason"]


# ---- the API server ---------------------------------------------------------------------------------


def test_duplicate_create_answers_409_already_exists(kube_api: KubeApi, tmp_path: Path) -> None:
    """A second create of the same Job name is refused, as the launcher's idempotent launch expects."""
    kube_api.batch.create_namespaced_job(NS, job_manifest("j", "pass", tmp_path))
    status = api_error(lambda: kube_api.batch.create_namespaced_job(NS, job_manifest("j", "pass", tmp_path)))
    assert status == (409, "AlreadyExists")


def test_stale_lease_patch_answers_409_conflict(kube_api: KubeApi) -> None:
    """Leader election relies on it: a Lease patch carrying an old resourceVersion is refused."""
    coord = kube_api.coordination
    lease = coord.create_namespaced_lease(
        NS, {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}
    )
    stale = lease.metadata.resource_version
    coord.patch_namespaced_lease(
        "leader", NS, {"metadata": {"resourceVersion": stale}, "spec": {"holderIdentity": "b"}}
    )
    status = api_error(
        lambda: coord.patch_namespaced_lease(
            "leader", NS, {"metadata": {"resourceVersion": stale}, "spec": {"holderIdentity": "c"}}
        )
    )
    assert status == (409, "Conflict")
    assert coord.read_namespaced_lease("leader", NS).spec.holder_identity == "b"


def test_stale_configmap_patch_answers_409_conflict(kube_api: KubeApi) -> None:
    """State in a ConfigMap is safe from lost updates: a stale patch is refused, a fresh one applies."""
    core = kube_api.core
    first = core.create_namespaced_config_map(NS, {"metadata": {"name": "state"}, "data": {"n": "1"}})
    fresh = core.patch_namespaced_config_map(
        "state", NS, {"metadata": {"resourceVersion": first.metadata.resource_version}, "data": {"n": "2"}}
    )
    assert int(fresh.metadata.resource_version) > int(first.metadata.resource_version)
    status = api_error(
        lambda: core.patch_namespaced_config_map(
            "state",
            NS,
            {"metadata": {"resourceVersion": first.metadata.resource_version}, "data": {"n": "3"}},
        )
    )
    assert status == (409, "Conflict")


def test_replace_checks_resource_version(kube_api: KubeApi) -> None:
    """PUT is served: with the current resourceVersion it replaces, with a stale one it answers 409."""
    coord = kube_api.coordination
    lease = coord.create_namespaced_lease(
        NS, {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}
    )
    lease.spec.holder_identity = "b"
    replaced = coord.replace_namespaced_lease("leader", NS, lease)
    assert replaced.spec.holder_identity == "b"
    assert api_error(lambda: coord.replace_namespaced_lease("leader", NS, lease)) == (409, "Conflict")


def test_watch_sees_added_modified_deleted(kube_api: KubeApi) -> None:
    """A watch from a list's resourceVersion sees each later change once, with increasing versions."""
    core = kube_api.core
    listed = core.list_namespaced_config_map(NS)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("c", NS, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("c", NS)
    events = [
        (e["type"], int(e["object"].metadata.resource_version))
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            NS,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=1,
        )
    ]
    assert [kind for kind, _ in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert [version for _, version in events] == sorted({version for _, version in events})


def test_watch_from_compacted_version_answers_410(kube_api: KubeApi) -> None:
    """After compaction, resuming an old watch fails with 410 Gone, so clients must re-list."""
    core = kube_api.core
    old = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    kube_api.server.compact()
    with pytest.raises(client.ApiException) as caught:
        list(
            watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=old, timeout_seconds=1)
        )
    assert caught.value.status == 410


def test_label_selector_filters_lists(kube_api: KubeApi, tmp_path: Path) -> None:
    """Lists honour label selectors (kmock alone ignores them)."""
    kube_api.batch.create_namespaced_job(NS, job_manifest("mine", "pass", tmp_path))
    other = job_manifest("other", "pass", tmp_path)
    other["metadata"]["labels"] = {"app.kubernetes.io/name": "else"}
    kube_api.batch.create_namespaced_job(NS, other)
    names = [
        j.metadata.name
        for j in kube_api.batch.list_namespaced_job(
            NS, label_selector="app.kubernetes.io/name=batchctl"
        ).items
    ]
    assert names == ["mine"]


def test_status_changes_only_through_the_status_subresource(kube_api: KubeApi, tmp_path: Path) -> None:
    """A patch of the Job ignores its status; a patch of /status changes nothing else."""
    batch = kube_api.batch
    batch.create_namespaced_job(NS, job_manifest("j", "pass", tmp_path))
    batch.patch_namespaced_job("j", NS, {"status": {"active": 5}})
    batch.patch_namespaced_job_status("j", NS, {"status": {"active": 1}, "metadata": {"labels": {"x": "y"}}})
    job = kube_api.server.read_object(JOBS, NS, "j")
    assert job is not None
    assert job["status"] == {"active": 1}
    assert "x" not in job["metadata"]["labels"]


def test_background_delete_collects_pods_but_default_orphans_them(kube_api: KubeApi, tmp_path: Path) -> None:
    """batch/v1 orphans a Job's pods by default; propagationPolicy=Background deletes them."""
    batch, core = kube_api.batch, kube_api.core
    for name in ("orphaning", "collecting"):
        job = batch.create_namespaced_job(NS, job_manifest(name, "pass", tmp_path))
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job.metadata.uid}
        core.create_namespaced_pod(
            NS,
            {
                "metadata": {"name": f"{name}-pod", "ownerReferences": [owner]},
                "spec": {"containers": [{"name": "w", "image": "x"}]},
            },
        )
    batch.delete_namespaced_job("orphaning", NS)
    batch.delete_namespaced_job("collecting", NS, propagation_policy="Background")
    assert [p["metadata"]["name"] for p in kube_api.server.list_objects(PODS, NS)] == ["orphaning-pod"]


def test_foreground_delete_answers_with_the_job_until_its_pods_are_gone(
    kube_api: KubeApi, tmp_path: Path
) -> None:
    """Like a real server: the Job object (not a Status) comes back, marked, while a running pod remains.

    The official client 37 cannot read that answer as the V1Status it expects (pydantic rejects
    ``status``), so callers pass ``_preload_content=False``.
    """
    job = kube_api.batch.create_namespaced_job(NS, job_manifest("fg", "pass", tmp_path))
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "fg", "uid": job.metadata.uid}
    kube_api.core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": "fg-pod", "ownerReferences": [owner]},
            "spec": {"nodeName": "n", "containers": [{"name": "w", "image": "x"}]},
        },
    )
    answer = kube_api.batch.delete_namespaced_job(
        "fg", NS, propagation_policy="Foreground", _preload_content=False
    )
    body = json.loads(answer.data)
    assert (body["kind"], body["metadata"]["finalizers"]) == ("Job", ["foregroundDeletion"])
    kube_api.core.delete_namespaced_pod("fg-pod", NS, grace_period_seconds=0)  # what the kubelet does
    assert kube_api.server.read_object(JOBS, NS, "fg") is None


def test_request_log_names_rbac_verbs(kube_api: KubeApi) -> None:
    """Every request is logged as (group, resource, verb), as a Role names it."""
    core = kube_api.core
    kube_api.server.clear_request_log()
    core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    core.read_namespaced_config_map("c", NS)
    core.list_namespaced_config_map(NS)
    core.patch_namespaced_config_map("c", NS, {"data": {"a": "b"}})
    core.replace_namespaced_config_map("c", NS, {"metadata": {"name": "c"}})
    watcher = watch.Watch()
    for _ in watcher.stream(core.list_namespaced_config_map, NS, timeout_seconds=1):
        watcher.stop()  # the initial ADDED event is enough
    core.delete_namespaced_config_map("c", NS)
    kube_api.batch.list_namespaced_job(NS)
    assert [r.rbac for r in kube_api.server.request_log()] == [
        ("", "configmaps", verb) for verb in ("create", "get", "list", "patch", "update", "watch", "delete")
    ] + [("batch", "jobs", "list")]


def test_a_kmock_reaction_overrides_the_emulation(kube_api: KubeApi, tmp_path: Path) -> None:
    """A test can inject a failure: the reaction answers and the emulated state is untouched."""
    kube_api.server["post", kmock.resource("batch/v1/jobs")] << 503
    with pytest.raises(client.ApiException) as caught:
        kube_api.batch.create_namespaced_job(NS, job_manifest("j", "pass", tmp_path))
    assert caught.value.status == 503
    assert kube_api.server.list_objects(JOBS) == []
    assert kube_api.server.list_objects(CONFIGMAPS) == []


# ---- the kubelet -------------------------------------------------------------------------------------


def test_kubelet_runs_up_to_parallelism_pods(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """Parallelism 3 means three pods at once, each a Pod object labelled for its Job, and active=3."""
    kubelet = make_kubelet()
    kube_api.batch.create_namespaced_job(NS, job_manifest("par", WAIT_FOR_RELEASE, tmp_path, parallelism=3))
    wait_for(
        lambda: (kube_api.server.read_object(JOBS, NS, "par") or {}).get("status", {}).get("active") == 3,
        timeout=10,
        what="active=3",
    )
    pods = kube_api.server.list_objects(PODS, NS)
    assert len(kubelet.pods("par")) == len(pods) == 3
    assert all(p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "par" for p in pods)
    assert all(p["metadata"]["name"].startswith("par-") and len(p["metadata"]["name"]) == 9 for p in pods)
    (tmp_path / "release").touch()
    kubelet.wait_idle(15)
    assert conditions(kube_api, "par") == {
        "SuccessCriteriaMet": "CompletionsReached",
        "Complete": "CompletionsReached",
    }


def test_kubelet_starts_no_pod_after_one_succeeded(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """Work queue: once a pod exited 0, a pod killed later is not replaced; the Job still completes."""
    kubelet = make_kubelet()
    kube_api.batch.create_namespaced_job(
        NS, job_manifest("wq", FIRST_WINS, tmp_path, parallelism=2, backoff_limit=3)
    )
    wait_for(lambda: any(p.phase == "Succeeded" for p in kubelet.pods("wq")), timeout=10, what="a success")
    [survivor] = [p for p in kubelet.pods("wq") if p.phase == "Running"]
    kubelet.kill(survivor, signal.SIGKILL)
    kubelet.wait_idle(15)
    assert sorted((p.phase, p.exit_code) for p in kubelet.pods("wq")) == [("Failed", 137), ("Succeeded", 0)]
    status = (kube_api.server.read_object(JOBS, NS, "wq") or {})["status"]
    assert (status["succeeded"], status["failed"], "Complete" in conditions(kube_api, "wq")) == (1, 1, True)


def test_kubelet_replaces_failed_pods_up_to_backoff_limit(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """backoffLimit 2: three failed pods in all, then FailureTarget and Failed (BackoffLimitExceeded)."""
    kubelet = make_kubelet()
    kube_api.batch.create_namespaced_job(
        NS, job_manifest("bo", "raise SystemExit(1)", tmp_path, backoff_limit=2)
    )
    kubelet.wait_idle(15)
    assert [p.exit_code for p in kubelet.pods("bo")] == [1, 1, 1]
    assert conditions(kube_api, "bo") == {
        "FailureTarget": "BackoffLimitExceeded",
        "Failed": "BackoffLimitExceeded",
    }
    assert (kube_api.server.read_object(JOBS, NS, "bo") or {})["status"]["failed"] == 3


def test_kubelet_fails_job_at_once_on_exit_code_2(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """podFailurePolicy FailJob on exit code 2: no replacement, the other pod gets SIGTERM, Job Failed."""
    kubelet = make_kubelet()
    manifest = job_manifest(
        "cfg",
        FIRST_WINS,
        tmp_path,
        parallelism=2,
        backoff_limit=5,
        env={"FIRST_EXIT": "2"},
        podFailurePolicy=FAIL_ON_2,
    )
    kube_api.batch.create_namespaced_job(NS, manifest)
    kubelet.wait_idle(15)
    assert sorted(p.exit_code or 0 for p in kubelet.pods("cfg")) == [2, 128 + signal.SIGTERM]
    assert conditions(kube_api, "cfg") == {"FailureTarget": "PodFailurePolicy", "Failed": "PodFailurePolicy"}


def test_kubelet_ignores_an_evicted_pod_and_replaces_it(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """An evicted pod (DisruptionTarget, Ignore rule) is replaced and not counted against backoffLimit."""
    kubelet = make_kubelet()
    manifest = job_manifest("ev", WAIT_FOR_RELEASE, tmp_path, podFailurePolicy=FAIL_ON_2)
    kube_api.batch.create_namespaced_job(NS, manifest)
    wait_for(lambda: kubelet.pods("ev"), timeout=10, what="a pod")
    kubelet.evict(kubelet.pods("ev")[0])
    wait_for(lambda: len(kubelet.pods("ev")) == 2, timeout=10, what="a replacement pod")
    (tmp_path / "release").touch()
    kubelet.wait_idle(15)
    assert "Complete" in conditions(kube_api, "ev")
    assert "failed" not in (kube_api.server.read_object(JOBS, NS, "ev") or {})["status"]


def test_kubelet_fails_job_past_active_deadline(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """activeDeadlineSeconds: the Job fails with DeadlineExceeded and its pods are terminated."""
    kubelet = make_kubelet()
    kube_api.batch.create_namespaced_job(
        NS, job_manifest("dl", WAIT_FOR_RELEASE, tmp_path, activeDeadlineSeconds=1)
    )
    kubelet.wait_idle(15)
    assert conditions(kube_api, "dl")["Failed"] == "DeadlineExceeded"
    assert [p.exit_code for p in kubelet.pods("dl")] == [128 + signal.SIGTERM]


def test_deleting_a_job_kills_its_pods(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """Foreground delete: pods get SIGTERM, SIGKILL after the 1 s grace period, then the Job is gone."""
    kubelet = make_kubelet()
    kube_api.batch.create_namespaced_job(NS, job_manifest("del", IGNORES_SIGTERM, tmp_path, parallelism=2))
    wait_for(lambda: len(list(tmp_path.glob("ignoring-*"))) == 2, timeout=10, what="two pods ignoring SIGTERM")
    started = time.monotonic()
    kube_api.batch.delete_namespaced_job("del", NS, propagation_policy="Foreground", _preload_content=False)
    wait_for(lambda: kube_api.server.read_object(JOBS, NS, "del") is None, timeout=10, what="the Job gone")
    assert time.monotonic() - started >= 1.0
    assert [p.exit_code for p in kubelet.pods("del")] == [128 + signal.SIGKILL] * 2
    assert kube_api.server.list_objects(PODS, NS) == []


def test_kubelet_runs_entrypoint_with_the_pod_environment(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """No command: entrypoint + args; env has literals, $(VAR), fieldRef and the image's environment."""
    program = (
        "import os; print(os.environ['POD'], os.environ['NS'], os.environ['GREETING'], os.environ['BASE'])"
    )
    kubelet = make_kubelet(entrypoint=[sys.executable, "-c"], env={**IMAGE_ENV, "BASE": "base"})
    manifest = job_manifest("env", "", tmp_path)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    del container["command"]
    container["args"] = [program]
    container["env"] = [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "WHO", "value": "world"},
        {"name": "GREETING", "value": "hello-$(WHO)"},
    ]
    kube_api.batch.create_namespaced_job(NS, manifest)
    kubelet.wait_idle(15)
    [pod] = kubelet.pods("env")
    assert pod.log_path.read_text().split() == [pod.name, NS, "hello-world", "base"]


def test_pod_gets_only_its_spec_env_and_the_image_env(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod's process environment is its container's env, the image's env and HOSTNAME: nothing of the test's."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")  # in the test's environment, so never in a pod's
    program = "import json, os; print(json.dumps(sorted(os.environ)))"
    kubelet = make_kubelet()
    manifest = job_manifest("only", program, tmp_path, env={"FROM_JOB": "1"})
    kube_api.batch.create_namespaced_job(NS, manifest)
    kubelet.wait_idle(15)
    [pod] = kubelet.pods("only")
    seen = set(json.loads(pod.log_path.read_text()))
    assert seen - {"LC_CTYPE"} == {*IMAGE_ENV, "HOSTNAME", "MARKS", "FROM_JOB"}  # LC_CTYPE: Python sets it itself
