"""The Kubernetes API failing under a running batch (issue 12, the fault suite's API scenarios).

The same parts as ``test_kube_recovery.py``: the real Pub/Sub emulator, the strict API server reached
by the official client, the test kubelet running each Job's pods as ``batchctl worker`` processes.
Every scenario asserts that no part is lost (each part's ``done`` marker), that ``parts_done`` is
exact (the stored ``done`` is every part, the state ``succeeded``) and how many Jobs the launcher
created (its Job creates answered 201 in the server's request log):

- the API unreachable for 60 s mid-batch (every connection through a ``FaultProxy`` reset; the kubelet
  keeps its direct address, so the Job runs on and completes meanwhile): the launcher backs off
  (bounded attempts, logged waits), loses and retakes its Lease, re-lists, sees the Job complete and
  finishes the batch; ``/healthz`` stays 200; 1 Job;
- bursts of 429 ``Retry-After: 2`` on Job list, watch and create and on ConfigMap patch: the
  launcher's next request of the same kind comes no sooner than 2 s later; 1 Job;
- (a watch answered 410 Gone: ``test_kube_recovery.py::test_watch_closed_and_compacted_mid_batch_misses_no_completion``,
  1 Job;)
- a Job deleted from outside mid-batch, as ``kubectl delete job`` does (background, and foreground
  propagation): its pods are terminated, their workers nack what they hold and exit; the launcher
  sees the Job gone and launches one follow-up; 2 Jobs, no idle third;
- a pod evicted (``DisruptionTarget``, then a graceful delete): the Job's podFailurePolicy Ignore
  rule replaces it without counting it; 1 Job, parallelism + 1 pods.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import pytest

from batchctl.core.emulator import free_port
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher import http
from batchctl.launcher.kube import Kube
from batchctl.launcher.kube_backend import WATCH_MAX_BACKOFF_S
from batchctl.launcher.state import SUCCEEDED, BatchState
from batchctl.launcher.store import ConfigMapStore
from tests.support.containers import IMAGE_ENV
from tests.support.handlers import markers
from tests.support.kube import write_kubeconfig
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import CONFIGMAPS, JOBS, ApiRequest
from tests.support.kubelet import USER_AGENT, Kubelet
from tests.support.launching import REPO, running_launcher, submit_records, wait_terminal, write_records
from tests.support.proxy import fault_proxy
from tests.support.waiting import wait_for

OUTAGE_S = 60.0
MAX_ATTEMPTS_PER_S = 2.0
"""Connection attempts per second of outage the launcher may make (a spin makes hundreds)."""
RETRY_AFTER_S = 2


@pytest.fixture
def kenv(env: dict[str, str], kube_api: KubeApi) -> dict[str, str]:
    """Launcher environment: Kubernetes backend, fast worker knobs passed through the Job."""
    return kube_api.launcher_env(env, empty_pulls="2", drain_budget_s="3")


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def kubelet(make_kubelet: Callable[..., Kubelet], results: Path) -> Kubelet:
    """Pods from a test image: batchctl's ENV, the test handlers on PYTHONPATH, fast pull settings."""
    return make_kubelet(env={**IMAGE_ENV, "PYTHONPATH": str(REPO), "BATCHCTL_RESULTS_DIR": str(results),
                             "BATCHCTL_PULL_TIMEOUT_S": "0.5", "BATCHCTL_LEASE_S": "10"})


def submit_waiting(pubsub: PubSub, tmp_path: Path, batch_id: str, release: Path, parts: int = 4) -> None:
    """``parts`` parts that each wait for ``release`` to exist; two workers of two parts each."""
    records = [{"wait_for": str(release)} for _ in range(parts)]
    submit_records(pubsub, write_records(tmp_path / f"{batch_id}.jsonl", records), batch_id,
                   parts_per_worker=2, max_parallelism=2)


def holding(kubelet: Kubelet, results: Path, job: str, workers: int = 2) -> bool:
    """``workers`` pods of ``job`` run, each with a part under way."""
    running = [p for p in kubelet.pods(job) if p.phase == "Running" and not p.terminating]
    return len(running) >= workers and len(markers(results, "started")) >= workers


def assert_exact(batch: BatchState, parts: int, results: Path) -> None:
    """No part lost, ``parts_done`` exact."""
    assert batch.state == SUCCEEDED, batch.reason
    assert batch.done == set(range(parts)) and not batch.dead
    assert sorted(set(markers(results, "done"))) == list(range(parts)), "a part has no done marker"


def wait_cleaned(store: Any, batch_id: str) -> BatchState:
    """The batch cleaned up, which needs its last Job seen finished (or gone)."""
    return wait_for(lambda: (b := store.load(batch_id)) and b.cleaned and b, timeout=30, what="cleanup")


# ---- the API unreachable for a minute ---------------------------------------------------------------


class Prober:
    """GET ``/healthz`` every 0.5 s on a thread; ``codes`` holds every answer (0: no answer)."""

    def __init__(self, port: int) -> None:
        self.url, self.codes = f"http://127.0.0.1:{port}/healthz", list[int]()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    self.codes.append(answer.status)
            except urllib.error.HTTPError as exc:
                self.codes.append(exc.code)
            except OSError:
                self.codes.append(0)

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)


def log_events(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def api_url(kube_api: KubeApi) -> str:
    return str(json.loads(kube_api.kubeconfig.read_text())["clusters"][0]["cluster"]["server"])


@pytest.mark.timeout(180)
def test_api_unreachable_for_a_minute_mid_batch(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, results: Path, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Every connection from the launcher to the API is reset for 60 s while its Job runs; the Job
    completes meanwhile. The launcher makes at most 2 attempts per second, logs growing waits capped
    at WATCH_MAX_BACKOFF_S, keeps /healthz at 200, and once the API is back finishes the batch with
    its one Job."""
    release = tmp_path / "release"
    direct = ConfigMapStore(Kube(kube_api.namespace, kubeconfig=str(kube_api.kubeconfig)),
                            Settings.from_env(kenv).names)
    with fault_proxy(api_url(kube_api).removeprefix("http://")) as proxy:
        proxied = write_kubeconfig(tmp_path / "proxied-kubeconfig", f"http://{proxy.address}")
        settings = Settings.from_env({**kenv, "KUBECONFIG": str(proxied), "BATCHCTL_LEADER_ELECTION": "true",
                                      "BATCHCTL_POD_NAME": "launcher-a"})
        job1 = settings.names.job("outage", 1)
        with running_launcher(settings, pubsub) as run:
            server = http.serve(free_port(), healthy=run.launcher.healthy, ready=lambda: True,
                                registry=run.launcher.metrics.registry, host="127.0.0.1")
            try:
                with Prober(server.server_address[1]) as prober:
                    submit_waiting(pubsub, tmp_path, "outage", release)
                    wait_for(lambda: holding(kubelet, results, job1), timeout=60, what="two workers holding parts")
                    capfd.readouterr()
                    began, attempts_before = time.monotonic(), proxy.stats.rejected
                    proxy.reject()
                    proxy.cut()
                    release.touch()
                    wait_for(lambda: "Complete" in conditions(kube_api, job1), timeout=30,
                             what="the Job to complete during the outage")
                    time.sleep(max(0.0, began + OUTAGE_S - time.monotonic()))  # the fault itself, not a wait
                    attempts = proxy.stats.rejected - attempts_before
                    stored = direct.load("outage")
                    proxy.restore()
                    restored = time.monotonic()
                    batch = wait_terminal(run.parts, "outage", timeout=60)
                    recovered_s = time.monotonic() - restored
                    wait_cleaned(run.parts.store, "outage")  # which needs the Job seen complete: a re-list
                    codes = list(prober.codes)
            finally:
                server.shutdown()
        logged = log_events(capfd.readouterr().err)
    assert stored is not None and stored.state == "running", "the launcher wrote state through a dead API"
    assert_exact(batch, 4, results)
    assert kube_api.jobs_created() == [job1]
    relists = [r for r in kube_api.server.request_log()
               if r.rbac == ("batch", "jobs", "list") and r.user_agent != USER_AGENT and r.received > restored]
    assert relists, "the launcher did not re-list its Jobs after the outage"
    failed = Counter(e["event"] for e in logged if e.get("level") == "warning")
    assert attempts <= MAX_ATTEMPTS_PER_S * OUTAGE_S, f"{attempts} connection attempts in {OUTAGE_S:.0f} s: {failed}"
    waits = [e["wait_s"] for e in logged if e.get("event") == "job_watch_broken"]
    assert waits and max(waits) == WATCH_MAX_BACKOFF_S, f"the Job watch did not back off: {waits}"
    assert codes and set(codes) == {200}, f"/healthz answered {codes}"
    print(f"outage {OUTAGE_S:.0f} s: {attempts} connection attempts ({dict(failed)}), batch finished "
          f"{recovered_s:.1f} s after the API came back")


def conditions(kube_api: KubeApi, name: str) -> set[str]:
    job = kube_api.server.read_object(JOBS, kube_api.namespace, name) or {}
    return {c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


# ---- 429 Too Many Requests with Retry-After -----------------------------------------------------------


def from_launcher(request: kmock.Request) -> bool:
    return request.headers.get("User-Agent", "") != USER_AGENT


def throttle(kube_api: KubeApi, *criteria: Any, times: int = 1) -> None:
    """The launcher's next ``times`` requests matching ``criteria`` are answered 429, Retry-After 2.
    (A kmock slice counts every matching request the server has had, so it starts after those.)"""
    matching = kube_api.server[(*criteria, from_launcher)]
    seen = len(matching)
    matching[seen : seen + times] << 429 << kmock.headers({"Retry-After": str(RETRY_AFTER_S)})


KINDS = {
    "Job create": ("batch", "jobs", "create"),
    "Job list": ("batch", "jobs", "list"),
    "Job watch": ("batch", "jobs", "watch"),
    "ConfigMap patch": ("", "configmaps", "patch"),
}


def gaps_after_429(log: list[ApiRequest]) -> dict[str, list[float]]:
    """For each kind, seconds from each 429 the launcher got to its next request of that kind."""
    mine = [r for r in log if r.user_agent != USER_AGENT]
    gaps: dict[str, list[float]] = {}
    for kind, rbac in KINDS.items():
        same = [r for r in mine if r.rbac == rbac]
        gaps[kind] = [later.received - r.received for r, later in itertools.pairwise(same)
                      if r.status == 429]
    return gaps


def retried(kube_api: KubeApi) -> dict[str, list[float]] | None:
    """The gaps after each 429, once every kind was answered 429 and then tried again."""
    gaps = gaps_after_429(kube_api.server.request_log())
    return gaps if all(gaps.values()) else None


@pytest.mark.timeout(120)
def test_429_retry_after_is_honoured_on_every_call(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, results: Path, tmp_path: Path,
) -> None:
    """The first Job create is answered 429; mid-batch, the Job list and watch (forced by closing the
    watches) and two ConfigMap patches are too. Each next request of the same kind waits out the
    Retry-After; the batch finishes with one Job."""
    settings = Settings.from_env(kenv)
    release = tmp_path / "release"
    job1 = settings.names.job("throttled", 1)
    throttle(kube_api, "post", JOBS)
    with running_launcher(settings, pubsub) as run:
        submit_waiting(pubsub, tmp_path, "throttled", release)
        wait_for(lambda: holding(kubelet, results, job1), timeout=60, what="two workers holding parts")
        throttle(kube_api, kmock.action.LIST, JOBS)
        throttle(kube_api, kmock.action.WATCH, JOBS)
        throttle(kube_api, "patch", CONFIGMAPS, times=2)
        kube_api.server.close_watches()
        release.touch()
        batch = wait_terminal(run.parts, "throttled", timeout=60)
        wait_cleaned(run.parts.store, "throttled")
        gaps = wait_for(lambda: retried(kube_api), timeout=30, what="the launcher to try each throttled kind again")
    assert_exact(batch, 4, results)
    assert kube_api.jobs_created() == [job1]
    short = {kind: [round(g, 2) for g in found if g < RETRY_AFTER_S] for kind, found in gaps.items()}
    assert not any(short.values()), f"requests sooner than Retry-After {RETRY_AFTER_S} s: {short}"


# ---- a Job deleted from outside ----------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("propagation", ["Background", "Foreground"])
def test_job_deleted_from_outside_gets_one_follow_up(
    propagation: str, kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, results: Path,
    tmp_path: Path,
) -> None:
    """Job 1 is deleted as ``kubectl delete job --cascade=<propagation>`` does while both its workers
    hold a part: they get SIGTERM, nack and exit; the launcher launches Job 2, which finishes the batch.
    Two Jobs, no idle third."""
    settings = Settings.from_env(kenv)
    release = tmp_path / "release"
    job1, job2 = settings.names.job("deleted", 1), settings.names.job("deleted", 2)
    with running_launcher(settings, pubsub) as run:
        submit_waiting(pubsub, tmp_path, "deleted", release)
        wait_for(lambda: holding(kubelet, results, job1), timeout=60, what="two workers holding parts")
        kube_api.batch.delete_namespaced_job(job1, kube_api.namespace, propagation_policy=propagation,
                                             _preload_content=False)
        wait_for(lambda: kube_api.server.read_object(JOBS, kube_api.namespace, job2), timeout=60,
                 what="the follow-up Job")
        release.touch()
        batch = wait_terminal(run.parts, "deleted", timeout=60)
        wait_cleaned(run.parts.store, "deleted")
    assert_exact(batch, 4, results)
    assert kube_api.jobs_created() == [job1, job2]
    assert [j.name for j in batch.jobs] == [job1, job2]
    stopped = kubelet.pods(job1)
    assert len(stopped) == 2 and all(p.exit_code == 143 for p in stopped), "Job 1's workers were not stopped"


# ---- a pod evicted -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_evicted_pod_is_replaced_without_a_follow_up(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, results: Path, tmp_path: Path,
) -> None:
    """One of two workers is evicted (DisruptionTarget, then a graceful delete) while it holds a part:
    the Job controller replaces the pod without counting a failure (podFailurePolicy Ignore), the
    replacement takes the nacked part, and the batch finishes with its one Job and three pods."""
    settings = Settings.from_env(kenv)
    release = tmp_path / "release"
    job1 = settings.names.job("evicted", 1)
    with running_launcher(settings, pubsub) as run:
        submit_waiting(pubsub, tmp_path, "evicted", release)
        wait_for(lambda: holding(kubelet, results, job1), timeout=60, what="two workers holding parts")
        victim = kubelet.pods(job1)[0]
        kubelet.evict(victim)
        wait_for(lambda: holding(kubelet, results, job1) and len(kubelet.pods(job1)) == 3, timeout=60,
                 what="a replacement pod running")
        release.touch()
        batch = wait_terminal(run.parts, "evicted", timeout=60)
        cleaned = wait_cleaned(run.parts.store, "evicted")
    assert_exact(batch, 4, results)
    assert kube_api.jobs_created() == [job1]
    pods = kubelet.pods(job1)
    assert len(pods) == 3 and next(p for p in pods if p.name == victim.name).exit_code == 143
    status = (kube_api.server.read_object(JOBS, kube_api.namespace, job1) or {}).get("status") or {}
    assert not status.get("failed"), f"the eviction counted as a failure: {status}"
    assert sum(cleaned.pods.values()) == 3, f"pods per batch: {cleaned.pods}"
