"""Poison parts and duplicate deliveries on the Kubernetes backend (issue 12's fault suite).

The parts of ``test_kube_recovery.py``: the real Pub/Sub emulator, the strict API server reached by
the official client, the test kubelet running each Job's pods as ``batchctl worker`` processes (a
pod whose process dies of SIGKILL fails with exit 137, counted against ``backoffLimit``).
Each scenario asserts no part lost, ``parts_done`` exact, and the number of Jobs:

- a part whose handler SIGKILLs its worker on every delivery (exit 137, as an OOM kill): the batch
  ends ``failed`` naming that part, in bounded time, every other part done, with exactly
  ``max_delivery_attempts`` Jobs; ``retry`` (the handler made harmless) finishes it with one more;
- a part published again after it was handled and acked (Pub/Sub may redeliver even after an
  ack): the worker handles it again, ``parts_done`` stays exact, its result stays one object, one
  Job; a duplicate ``part_done`` after the batch succeeded changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from batchctl.core.messages import Event, encode_event
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.core.storage import Storage
from batchctl.core.topology import BatchTopology
from batchctl.frontend.cli import main
from batchctl.launcher.state import FAILED, SUCCEEDED
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.submit import SubmitOptions, submit
from tests.support.containers import IMAGE_ENV
from tests.support.handlers import markers
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import JOBS
from tests.support.kubelet import Kubelet
from tests.support.launching import REPO, running_launcher, submit_records, wait_terminal, write_records
from tests.support.waiting import wait_for

MAX_ATTEMPTS = 5
"""The batches' max delivery attempts (Pub/Sub's minimum), as ``submit_records`` sets them."""


def kube_env(env: Mapping[str, str], kube_api: KubeApi, **extra: str) -> dict[str, str]:
    """The launcher's environment: Kubernetes backend, worker knobs passed to the pods through the Job.

    ``BATCHCTL_EMPTY_PULLS=6`` (3 s of empty pulls at 0.5 s): the emulator starts an expired lease's
    retry backoff (up to ``max_backoff_s`` = 2 s here) at the first pull after the lease lapsed, so a
    follow-up's worker that gave up after 1 s would miss the killed part and end idle.
    """
    return {**kube_api.launcher_env(env, empty_pulls="6", drain_budget_s="5"), **extra}


@pytest.fixture
def kubelet(make_kubelet: Callable[..., Kubelet], tmp_path: Path) -> Kubelet:
    return make_kubelet(env={**IMAGE_ENV, "PYTHONPATH": str(REPO), "BATCHCTL_RESULTS_DIR": str(tmp_path / "marks"),
                             "BATCHCTL_PULL_TIMEOUT_S": "0.5", "BATCHCTL_LEASE_S": "10"})


def jobs_created(kube_api: KubeApi) -> list[str]:
    return sorted(j["metadata"]["name"] for j in kube_api.server.list_objects(JOBS, kube_api.namespace))


def status(env: Mapping[str, str], batch_id: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["status", batch_id, "--json"], environ=dict(env)) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@pytest.mark.timeout(300)
def test_a_part_that_kills_its_worker_every_time_fails_the_batch_naming_it_and_retry_finishes_it(
    env: dict[str, str], pubsub: PubSub, kube_api: KubeApi, kubelet: Kubelet, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Part 2 of 6 SIGKILLs its worker on every delivery. The batch fails naming part 2 within 150 s,
    the other 5 parts done, with exactly ``max_delivery_attempts`` (5) Jobs; ``retry`` finishes it
    with a 6th.

    Why 5 Jobs, each needed: Job 1 delivers every part once; part 2 kills its pod (and whatever that
    pod held beside it: those come back redelivered and run alone in Job 2, see
    ``batchctl.worker.solo``). A killed worker cannot nack, so part 2 is back only when its lease
    lapses: the pod the Job controller starts in its place drains the queue before then and exits 0,
    the Job completes, and the launcher launches the follow-up once the lease has lapsed (not before:
    it would find nothing). Each follow-up gives part 2 one more delivery (a redelivery runs alone,
    announced by ``part_started``) and dies with it. After Job 5 its fifth delivery, the last
    allowed, started and never finished: the launcher counts it dead and fails the batch, without a
    sixth Job whose only use would be the pull that makes Pub/Sub forward it to ``P-poison-dead``
    (``retry`` makes that pull). ``backoffLimit`` (6) is never reached: each Job counts one failed pod.

    Time: per Job about one ack deadline (10 s) plus the retry backoff and the pacing slack (3 s)
    plus pod start and drain (~4 s): ~80 s, bounded here at 150 s.
    """
    kenv = kube_env(env, kube_api)
    settings = Settings.from_env(kenv)
    poison = tmp_path / "poison"
    poison.touch()
    records: list[dict[str, Any]] = [{"i": i} for i in range(6)]
    records[2] = {"die_while": str(poison)}
    with running_launcher(settings, pubsub) as run:
        started = time.monotonic()
        submit_records(pubsub, write_records(tmp_path / "in.jsonl", records), "poison",
                       handler="tests.support.handlers:die_while_file_exists", parts_per_worker=3)
        failed = wait_terminal(run.parts, "poison", timeout=150)
        took = time.monotonic() - started
        shown = status(kenv, "poison", capsys)
        assert failed.state == FAILED, failed.reason
        assert shown["reason"] == "1 parts dead-lettered: part 2"
        assert (shown["parts_done"], shown["parts_dead"]) == (5, 1) and failed.done == {0, 1, 3, 4, 5}
        kills = sorted(p.name.split("-")[0] for p in (tmp_path / "marks").glob("killed*"))
        assert kills == [f"killed{n}" for n in range(1, MAX_ATTEMPTS + 1)], "one kill per delivery"
        assert len(failed.jobs) == MAX_ATTEMPTS == len(jobs_created(kube_api)), [j.name for j in failed.jobs]
        assert all(sum(p.exit_code == 137 for p in kubelet.pods(j.name)) == 1 for j in failed.jobs)
        pods_failed = sum(failed.pods.values())
        poison.unlink()
        assert main(["retry", "poison"], environ=kenv) == 0
        wait_for(lambda: (b := run.parts.store.load("poison")) is not None and b.state == SUCCEEDED, timeout=90,
                 what="the retried batch to succeed")
        done = run.parts.store.load("poison")
    assert done is not None and done.done == set(range(6)) and not done.dead - done.done
    assert status(kenv, "poison", capsys)["parts_done"] == 6
    assert len(done.jobs) == MAX_ATTEMPTS + 1 == len(jobs_created(kube_api))
    assert markers(tmp_path / "marks", "done").count(2) == 1, "part 2 done once, by the retry's Job"
    print(f"\npoison: failed after {took:.1f}s with {len(failed.jobs)} Jobs, {pods_failed} pods; "
          f"after retry {len(done.jobs)} Jobs, {sum(done.pods.values())} pods")


class Tap:
    """Records what ``submit`` publishes to one topic (data and attributes, as Pub/Sub gets them)."""

    def __init__(self, pubsub: PubSub, topic: str) -> None:
        self.pubsub, self.topic = pubsub, topic
        self.messages: list[tuple[bytes, dict[str, str]]] = []
        self._publish_many = pubsub.publish_many

    def __enter__(self) -> Tap:
        def recording(topic: str, messages: Iterable[tuple[bytes, Mapping[str, str]]], **kw: Any) -> int:
            def seen() -> Iterable[tuple[bytes, Mapping[str, str]]]:
                for data, attributes in messages:
                    if topic == self.topic:
                        self.messages.append((data, dict(attributes)))
                    yield data, attributes

            return self._publish_many(topic, seen(), **kw)

        self.pubsub.publish_many = recording  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.pubsub.publish_many = self._publish_many  # type: ignore[method-assign]


@pytest.mark.timeout(180)
def test_a_part_delivered_again_after_its_ack_is_counted_once(
    gcs_env: dict[str, str], pubsub: PubSub, gcs: Storage, bucket: str, kube_api: KubeApi, kubelet: Kubelet,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Part 0 is handled and acked; the identical message (same data and attributes) is published
    again while part 3 holds the batch open, as a redelivery after an ack would come. The worker
    handles it again (``part.key`` is the same), ``parts_done`` stays 3 then ends at exactly 4, part 0's
    result is still one object, one Job. A duplicate ``part_done`` after the batch succeeded changes
    nothing."""
    kenv = kube_env(gcs_env, kube_api, BATCHCTL_CONCURRENCY="2")  # one slot stays free beside the gated part
    settings = Settings.from_env(kenv)
    gate = tmp_path / "gate"
    gate.touch()
    path = write_records(tmp_path / "in.jsonl", [{"i": 0}, {"i": 1}, {"i": 2}, {"gate": str(gate)}])
    out = f"gs://{bucket}/out/"
    work = settings.names.work("dup")
    with running_launcher(settings, pubsub) as run:
        with Tap(pubsub, work) as tap:
            submit(pubsub, SubmitOptions(
                [str(path)], batch_id="dup", limits=PartLimits(1), handler="tests.support.handlers:gated_echo",
                parts_per_worker=4, max_parallelism=1, output=out,
                topology=BatchTopology(ack_deadline_s=10, max_delivery_attempts=5, min_backoff_s=1, max_backoff_s=2)))
        original = next(m for m in tap.messages if m[1]["part"] == "0")
        wait_for(lambda: (b := run.parts.store.load("dup")) is not None and b.done == {0, 1, 2}, timeout=60,
                 what="parts 0-2 done (each acked once its part_done is confirmed)")
        pubsub.publish(work, *original).result(timeout=30)
        wait_for(lambda: len([p for p in markers(tmp_path / "marks", "started") if p == 0]) == 2, timeout=60,
                 what="the worker to handle part 0 again")
        again = time.monotonic()
        wait_for(lambda: run.launcher.reconciler.accounted_until > again + 1, timeout=30,
                 what="the launcher to apply every event published by then")
        assert status(kenv, "dup", capsys)["parts_done"] == 3
        gate.unlink()
        batch = wait_terminal(run.parts, "dup", timeout=60)
        assert batch.state == SUCCEEDED, batch.reason
        wait_for(lambda: (b := run.parts.store.load("dup")) is not None and b.cleaned, timeout=60, what="cleanup")
        before = run.parts.store.load("dup")
        data, attributes = encode_event(Event("part_done", "dup", "late-worker", part=0, attempt=2))
        pubsub.publish(settings.names.events_topic, data, attributes).result(timeout=30)
        late = time.monotonic()
        wait_for(lambda: run.launcher.reconciler.accounted_until > late, timeout=30,
                 what="the launcher to apply the late part_done")
        assert run.parts.store.load("dup") == before, "a part_done after the end changed the stored batch"
    shown = status(kenv, "dup", capsys)
    assert (shown["state"], shown["parts_done"], shown["parts_total"]) == ("succeeded", 4, 4)
    assert shown["jobs"] == [settings.names.job("dup", 1)] == jobs_created(kube_api)
    names = sorted(b.name.removeprefix("out/") for b in gcs.client.list_blobs(bucket, prefix="out/"))
    assert names == ["_SUCCESS"] + [f"part-{i:06d}.jsonl" for i in range(4)]
    lines = gcs.read(f"{out}part-000000.jsonl").decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"part": 0, "record": {"i": 0}}]
