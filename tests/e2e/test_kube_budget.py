"""The worker budget (``BATCHCTL_MAX_WORKERS``) on the strict API server with the test kubelet.

A watch on Jobs, opened through the real client before the first submit, sees every version of every
Job in order; from it the test keeps the sum of ``spec.parallelism`` over unfinished Jobs after each
event. Parts wait on gate files, so the test decides when a batch may progress.

Checks:
- budget 6, three batches each wanting 4 → their Jobs run at 2/2/2;
- when one finishes (and its Job ends) the other two are patched up to 3/3;
- a ``high`` batch arriving takes its weighted share in the pass that launches it: when its Job is
  created (at 3) the two normal ones were already patched down to 2 and 1;
- budget 2 and three batches: the last is ``queued`` and ``status`` says "queued (position 1)" and why;
  ``/metrics`` shows the budget, the workers allocated and one batch queued; it gets a worker when
  another finishes, and its wait lands in the queue wait histogram;
- the sum never exceeds the budget, at any event; every batch succeeds with ``parts_done`` exact;
- Kueue mode, the test playing Kueue: Jobs are created suspended with the queue label; while suspended
  the batch is ``queued``, "waiting for Kueue admission", with no pod, no follow-up and no failure,
  past its ack deadline; unsuspended, it runs and succeeds; one never admitted stays waiting until
  cancelled.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch
from prometheus_client import generate_latest

from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from tests.support.kube_fixtures import KubeApi
from tests.support.kubelet import Kubelet
from tests.support.launching import REPO, running_launcher, submit_records, wait_terminal, write_records
from tests.support.waiting import wait_for

HANDLER = "tests.support.handlers:gated"


@pytest.fixture
def kenv(env: dict[str, str], kube_api: KubeApi) -> dict[str, str]:
    return kube_api.launcher_env(env, empty_pulls="2", drain_budget_s="2", concurrency="1")


@pytest.fixture
def kubelet(make_kubelet: Callable[..., Kubelet], env: dict[str, str], tmp_path: Path) -> Kubelet:
    base = {**env, "PYTHONPATH": str(REPO), "BATCHCTL_RESULTS_DIR": str(tmp_path / "results"),
            "BATCHCTL_PULL_TIMEOUT_S": "0.5", "BATCHCTL_LEASE_S": "10"}
    return make_kubelet(env=base)


@dataclass
class JobLedger:
    """Every Job version the watch delivered; ``peak`` is the largest sum of unfinished parallelism."""

    jobs: dict[str, int] = field(default_factory=dict)
    """Unfinished Job name → spec.parallelism, as of the last event."""
    created: dict[str, dict[str, int]] = field(default_factory=dict)
    """Job name → the unfinished Jobs' parallelism right after it was created."""
    peak: int = 0
    events: int = 0
    errors: list[str] = field(default_factory=list)
    """Watch failures (each resumed from the last version seen)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, kind: str, job: dict[str, Any]) -> None:
        name, spec, status = job["metadata"]["name"], job.get("spec") or {}, job.get("status") or {}
        ended = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        with self.lock:
            if kind == "DELETED" or ended or job["metadata"].get("deletionTimestamp"):
                self.jobs.pop(name, None)
            else:
                self.jobs[name] = int(spec.get("parallelism") or 0)
            if kind == "ADDED":
                self.created[name] = dict(self.jobs)
            self.peak = max(self.peak, sum(self.jobs.values()))
            self.events += 1

    def sizes(self) -> dict[str, int]:
        with self.lock:
            return dict(self.jobs)


@contextmanager
def watching_jobs(kube_api: KubeApi) -> Iterator[JobLedger]:
    """Follow every Job version through a watch; a broken watch is resumed from its last version."""
    ledger, stop = JobLedger(), threading.Event()
    version = kube_api.batch.list_namespaced_job(kube_api.namespace).metadata.resource_version

    def follow() -> None:
        nonlocal version
        stream = watch.Watch().stream(kube_api.batch.list_namespaced_job, kube_api.namespace,
                                      resource_version=version, timeout_seconds=5, _request_timeout=10)
        for event in stream:
            obj = kube_api.api_client.sanitize_for_serialization(event["object"])
            version = obj["metadata"]["resourceVersion"]
            ledger.apply(event["type"], obj)

    def run() -> None:
        while not stop.is_set():
            try:
                follow()
            except Exception as exc:  # recorded, shown when a wait on the ledger fails
                ledger.errors.append(repr(exc))
                stop.wait(0.2)

    thread = threading.Thread(target=run, name="job-ledger", daemon=True)
    thread.start()
    try:
        yield ledger
    finally:
        stop.set()
        thread.join(timeout=15)


def gated_records(tmp_path: Path, name: str, parts: int) -> tuple[Path, Path]:
    """``parts`` one-record parts that wait on a gate file; returns (input, gate)."""
    gate = tmp_path / f"gate-{name}"
    gate.touch()
    return write_records(tmp_path / f"{name}.jsonl", [{"gate": str(gate)} for _ in range(parts)]), gate


def job(settings: Settings, batch_id: str, n: int = 1) -> str:
    return settings.names.job(batch_id, n)


def test_budget_divides_grows_and_yields_to_high_priority(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """2/2/2, then 3/3 when one finishes, then 2/1/3 with a high batch; the sum never above 6."""
    settings = Settings.from_env({**kenv, "BATCHCTL_MAX_WORKERS": "6"})
    inputs = {name: gated_records(tmp_path, name, 8) for name in ("ba", "bb", "bc", "hi")}
    with watching_jobs(kube_api) as ledger, running_launcher(settings, pubsub) as run:
        for name in ("ba", "bb", "bc"):
            submit_records(pubsub, inputs[name][0], name, handler=HANDLER, parts_per_worker=2, max_parallelism=4)
        three = {job(settings, b): 2 for b in ("ba", "bb", "bc")}
        wait_for(lambda: ledger.sizes() == three, timeout=60, what=f"Jobs at 2/2/2 (watch errors: {ledger.errors})")
        inputs["ba"][1].unlink()
        assert wait_terminal(run.parts, "ba", timeout=90).state == "succeeded"
        grown = {job(settings, "bb"): 3, job(settings, "bc"): 3}
        wait_for(lambda: ledger.sizes() == grown, timeout=60, what=f"Jobs at 3/3, saw {ledger.sizes()}")
        submit_records(pubsub, inputs["hi"][0], "hi", handler=HANDLER, parts_per_worker=2, max_parallelism=4,
                       priority="high")
        wait_for(lambda: job(settings, "hi") in ledger.created, timeout=60, what="the high batch's Job")
        for name in ("bb", "bc", "hi"):
            inputs[name][1].unlink()
        finals = {name: wait_terminal(run.parts, name, timeout=120) for name in ("bb", "bc", "hi")}
    assert ledger.created[job(settings, "hi")] == {job(settings, "bb"): 2, job(settings, "bc"): 1,
                                                   job(settings, "hi"): 3}
    for name, batch in finals.items():
        assert batch.state == "succeeded" and batch.done == set(range(8)), name
    assert ledger.peak <= 6 and ledger.events > 10, (ledger.peak, ledger.events)


def test_batch_without_a_share_is_queued_with_its_position(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """Budget 2, three batches: the third is queued (position 1, and why) until another finishes."""
    from batchctl.frontend.cli import main

    settings = Settings.from_env({**kenv, "BATCHCTL_MAX_WORKERS": "2"})
    inputs = {name: gated_records(tmp_path, name, 4) for name in ("qa", "qb", "qc")}
    with watching_jobs(kube_api) as ledger, running_launcher(settings, pubsub) as run:
        for name in ("qa", "qb", "qc"):
            submit_records(pubsub, inputs[name][0], name, handler=HANDLER, parts_per_worker=2, max_parallelism=2)
        wait_for(lambda: (b := run.parts.store.load("qc")) is not None and b.state == "queued", timeout=60,
                 what="qc queued")
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["status", "qc"], environ=dict(settings.environ)) == 0
        assert "queued (position 1)" in out.getvalue() and "budget of 2" in out.getvalue(), out.getvalue()
        assert job(settings, "qc") not in ledger.sizes()
        scraped = generate_latest(run.launcher.metrics.registry).decode()
        for line in ("batchctl_worker_budget 2.0", "batchctl_workers_allocated 2.0", "batchctl_batches_queued 1.0"):
            assert line in scraped, scraped
        inputs["qa"][1].unlink()
        wait_for(lambda: job(settings, "qc") in ledger.created, timeout=90, what="qc to get a worker")
        for name in ("qb", "qc"):
            inputs[name][1].unlink()
        finals = {name: wait_terminal(run.parts, name, timeout=120) for name in ("qa", "qb", "qc")}
    assert all(b.state == "succeeded" and len(b.done) == 4 for b in finals.values()), finals
    assert run.launcher.metrics.queue_wait._sum.get() > 0
    assert ledger.peak <= 2, ledger.peak


def test_kueue_mode_waits_for_admission(
    kenv: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
) -> None:
    """Suspended + labelled Jobs; queued while Kueue (the test) holds them; admitted runs; never-admitted waits."""
    from batchctl.frontend.cli import main

    settings = Settings.from_env({**kenv, "BATCHCTL_KUEUE_QUEUE": "team-a"})
    path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(4)])
    with watching_jobs(kube_api) as ledger, running_launcher(settings, pubsub) as run:
        submit_records(pubsub, path, "ka", parts_per_worker=2)
        submit_records(pubsub, path, "kn", parts_per_worker=2)
        for name in ("ka", "kn"):
            wait_for(lambda n=name: (b := run.parts.store.load(n)) is not None and b.state == "queued",
                     timeout=60, what=f"{name} queued for Kueue")
        stored = kube_api.server.read_object(_jobs(), kube_api.namespace, job(settings, "ka")) or {}
        assert stored["spec"]["suspend"] is True
        assert stored["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["status", "kn"], environ=dict(settings.environ)) == 0
        assert "waiting for Kueue admission" in out.getvalue(), out.getvalue()
        wait_for(lambda: run.launcher.reconciler.metrics.jobs_launched._value.get() == 2, timeout=10, what="2 Jobs")
        kube_api.batch.patch_namespaced_job(job(settings, "ka"), kube_api.namespace, {"spec": {"suspend": False}})
        assert wait_terminal(run.parts, "ka", timeout=90).state == "succeeded"
        launched = (run.parts.store.load("kn") or pytest.fail("kn lost")).jobs[0].launched
        wait_for(lambda: time.time() > launched + 12, timeout=30, what="kn's ack deadline (10 s) to pass")
        held = run.parts.store.load("kn")
        assert held is not None and held.state == "queued" and len(held.jobs) == 1, held
        assert not kubelet.pods(job(settings, "kn"))
        assert main(["cancel", "kn"], environ=dict(settings.environ)) == 0
    assert sorted(ledger.created) == [job(settings, "ka"), job(settings, "kn")]  # no follow-up Job


def _jobs() -> Any:
    from tests.support.kube_objects import JOBS

    return JOBS
