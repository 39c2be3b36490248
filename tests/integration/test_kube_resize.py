"""The strict API server and test kubelet honour a ``spec.parallelism`` patch as the Job controller does.

Checks, through the official client over HTTP:
- a running Job's ``parallelism`` may be patched (down, to 0, up); its template, selector and
  ``completions`` may not (422 Invalid, "field is immutable"), nor a negative parallelism;
- scale down: the extra running pods are deleted (SIGTERM); with ``podReplacementPolicy: Failed``
  no replacement starts while they terminate; a pod that exits 143 under an ``Ignore`` rule for that
  code is not counted in ``status.failed``;
- parallelism 0 pauses the Job (no pod, not finished); scale up: new pods start, up to the new count;
- ``suspend: true`` (as Kueue creates Jobs): no pod, condition ``Suspended`` True (JobSuspended), no
  ``startTime``; resumed: pods start, ``Suspended`` False (JobResumed); suspended again (Kueue's
  preemption): its pods are deleted, the Job is neither finished nor failed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.integration.test_kube_harness import NS, WAIT_FOR_RELEASE, api_error, conditions, job_manifest
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import JOBS
from tests.support.kubelet import Kubelet
from tests.support.waiting import wait_for

# Exits 143 on SIGTERM, as a worker stopped by a scale-down does; otherwise waits for "release".
STOPS_ON_SIGTERM = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n" + WAIT_FOR_RELEASE
IGNORE_STOPS = {"rules": [
    {"action": "Ignore", "onExitCodes": {"containerName": "worker", "operator": "In", "values": [143]}},
]}


def running(kubelet: Kubelet, name: str) -> int:
    return sum(1 for p in kubelet.pods(name) if p.exit_code is None and not p.terminating)


def status(kube_api: KubeApi, name: str) -> dict[str, int]:
    return (kube_api.server.read_object(JOBS, NS, name) or {}).get("status") or {}


def test_parallelism_is_mutable_and_the_rest_is_not(kube_api: KubeApi, tmp_path: Path) -> None:
    """Patch parallelism: 200 and a new generation; template, selector, completions: 422; -1: 422."""
    kube_api.batch.create_namespaced_job(NS, job_manifest("mut", WAIT_FOR_RELEASE, tmp_path, parallelism=3))
    patched = kube_api.batch.patch_namespaced_job("mut", NS, {"spec": {"parallelism": 1}})
    assert patched.spec.parallelism == 1 and patched.metadata.generation == 2
    for change in ({"template": {"spec": {"terminationGracePeriodSeconds": 9}}},
                   {"selector": {"matchLabels": {"x": "y"}}}, {"completions": 4}, {"parallelism": -1}):
        assert api_error(lambda c=change: kube_api.batch.patch_namespaced_job("mut", NS, {"spec": c})) == (
            422, "Invalid"), change
    assert (kube_api.server.read_object(JOBS, NS, "mut") or {})["spec"]["parallelism"] == 1


def test_scale_down_to_zero_and_up_again(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """3 → 1 deletes two pods (exit 143, ignored, no replacement); 0 pauses; 2 starts two new pods."""
    kubelet = make_kubelet()
    manifest = job_manifest("rs", STOPS_ON_SIGTERM, tmp_path, parallelism=3, backoff_limit=0,
                            podFailurePolicy=IGNORE_STOPS)
    kube_api.batch.create_namespaced_job(NS, manifest)
    wait_for(lambda: status(kube_api, "rs").get("active") == 3, timeout=15, what="active=3")
    kube_api.batch.patch_namespaced_job("rs", NS, {"spec": {"parallelism": 1}})
    wait_for(lambda: sum(p.exit_code == 143 for p in kubelet.pods("rs")) == 2, timeout=15, what="two stopped")
    wait_for(lambda: status(kube_api, "rs").get("active") == 1, timeout=10, what="active=1")
    assert len(kubelet.pods("rs")) == 3 and "failed" not in status(kube_api, "rs")
    kube_api.batch.patch_namespaced_job("rs", NS, {"spec": {"parallelism": 0}})
    wait_for(lambda: running(kubelet, "rs") == 0 and not status(kube_api, "rs").get("active"), timeout=15,
             what="paused")
    assert conditions(kube_api, "rs") == {}  # paused, not finished, not failed (backoffLimit 0)
    kube_api.batch.patch_namespaced_job("rs", NS, {"spec": {"parallelism": 2}})
    wait_for(lambda: status(kube_api, "rs").get("active") == 2, timeout=15, what="active=2 after scale up")
    assert running(kubelet, "rs") == 2
    (tmp_path / "release").touch()
    kubelet.wait_idle(15)
    assert "Complete" in conditions(kube_api, "rs")


def suspended(kube_api: KubeApi, name: str) -> str | None:
    """The Suspended condition's status and reason, e.g. ``True/JobSuspended``."""
    job = kube_api.server.read_object(JOBS, NS, name) or {}
    found = [c for c in (job.get("status") or {}).get("conditions", []) if c["type"] == "Suspended"]
    return f"{found[0]['status']}/{found[0]['reason']}" if found else None


def test_suspend_resume_and_suspend_again(
    kube_api: KubeApi, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    """Created suspended: no pod; resumed: two pods; suspended again: pods deleted, Job still open."""
    kubelet = make_kubelet()
    manifest = job_manifest("sus", STOPS_ON_SIGTERM, tmp_path, parallelism=2, podFailurePolicy=IGNORE_STOPS,
                            suspend=True)
    kube_api.batch.create_namespaced_job(NS, manifest)
    wait_for(lambda: suspended(kube_api, "sus") == "True/JobSuspended", timeout=10, what="Suspended")
    assert kubelet.pods("sus") == [] and "startTime" not in status(kube_api, "sus")
    kube_api.batch.patch_namespaced_job("sus", NS, {"spec": {"suspend": False}})
    wait_for(lambda: status(kube_api, "sus").get("active") == 2, timeout=15, what="active=2 once resumed")
    assert suspended(kube_api, "sus") == "False/JobResumed" and "startTime" in status(kube_api, "sus")
    kube_api.batch.patch_namespaced_job("sus", NS, {"spec": {"suspend": True}})
    wait_for(lambda: sum(p.exit_code == 143 for p in kubelet.pods("sus")) == 2, timeout=15, what="pods stopped")
    wait_for(lambda: suspended(kube_api, "sus") == "True/JobSuspended", timeout=10, what="Suspended again")
    assert not status(kube_api, "sus").get("active") and "failed" not in status(kube_api, "sus")
    assert set(conditions(kube_api, "sus")) == {"Suspended"}
