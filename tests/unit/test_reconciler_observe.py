"""What the reconciler observes of a batch's Jobs: the backend's view, plus recorded Jobs not seen yet.

Checks: a Job just launched but not in the watch cache yet (watch lag) counts as running for
``UNSEEN_GRACE_S``, then not at all; a Job that was seen and then vanished (deleted from outside:
``kubectl delete job``, a namespace cleanup) has ended, so the follow-up is planned on its facts
(before: the batch sat with no worker until 60 s after that Job's launch; found by the Kubernetes
chaos run and by test_api_faults): its active pods count as stopped, silent until their workers
report ``worker_exited`` (their parts are leased until then); a new term forgets what was seen.
Pods per batch count the pods a Job's status leaves out (evicted or stopped pods, which
podFailurePolicy Ignores; pods of a Job deleted from outside): each pod whose worker sent an event.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from batchctl.core import logs
from batchctl.core.messages import Event
from batchctl.core.settings import Settings
from batchctl.launcher.metrics import Metrics
from batchctl.launcher.planner import Finish, Launch, ObservedJob
from batchctl.launcher.progress import apply_events
from batchctl.launcher.reconciler import UNSEEN_GRACE_S, Reconciler
from batchctl.launcher.state import FAILED, RUNNING, BatchState, JobRecord
from batchctl.launcher.store import FileStore
from tests.support.faults import ActiveBackend
from tests.unit.test_state import request


def reconciler(tmp_path: Path, backend: ActiveBackend) -> Reconciler:
    settings = Settings.from_env({"BATCHCTL_STATE_DIR": str(tmp_path), "GOOGLE_CLOUD_PROJECT": "p"})
    return Reconciler(settings, None, FileStore(tmp_path), backend, Metrics())  # type: ignore[arg-type]


def running(job: str) -> BatchState:
    return BatchState(request=request(10), state=RUNNING, jobs=[JobRecord(job, 1, 2, time.time(), 0)])


def test_a_job_not_seen_yet_counts_as_running(tmp_path: Path) -> None:
    observed = reconciler(tmp_path, ActiveBackend()).observe(running("j-1"))
    assert [(j.name, j.finished) for j in observed] == [("j-1", False)]


def test_a_job_seen_then_gone_has_ended(tmp_path: Path) -> None:
    backend = ActiveBackend()
    backend.launched["b1"] = ["j-1"]
    rec, batch = reconciler(tmp_path, backend), running("j-1")
    assert [j.name for j in rec.observe(batch)] == ["j-1"]
    backend.launched.pop("b1")  # deleted from outside
    assert [(j.name, j.finished) for j in rec.observe(batch)] == [("j-1", True)]
    rec.new_term()  # a new leader has not seen it: the watch may lag, so it waits out the grace
    assert [j.name for j in rec.observe(batch)] == ["j-1"]


class ShownBackend:
    """A backend that shows whatever Jobs the test sets in ``jobs``."""

    def __init__(self) -> None:
        self.jobs: list[ObservedJob] = []
        self.changed = threading.Event()

    def launch(self, batch: BatchState, launch: Launch) -> bool:
        raise AssertionError("no launch expected")

    def observe(self, batch_id: str) -> list[ObservedJob]:
        return list(self.jobs)


def shown(tmp_path: Path, *, launched: float) -> tuple[Reconciler, ShownBackend, BatchState]:
    settings = Settings.from_env({"BATCHCTL_STATE_DIR": str(tmp_path), "GOOGLE_CLOUD_PROJECT": "p"})
    backend = ShownBackend()
    batch = BatchState(request(4), state=RUNNING, jobs=[JobRecord("j-1", 1, 2, launched, 0)])
    store = FileStore(tmp_path)
    assert store.create(batch)
    reconciler = Reconciler(settings, None, store, backend, Metrics())  # type: ignore[arg-type]
    reconciler.accounted_until = float("inf")
    return reconciler, backend, batch


def test_a_job_seen_then_gone_has_ended_with_its_pods_stopped(tmp_path: Path) -> None:
    """Deleted from outside while two pods ran: ended, both pods silent until their workers report."""
    reconciler, backend, batch = shown(tmp_path, launched=time.time())
    backend.jobs = [ObservedJob("j-1", active=2, finished=False, parallelism=2)]
    assert [j.finished for j in reconciler.observe(batch)] == [False]
    backend.jobs = []
    [gone] = reconciler.observe(batch)
    assert (gone.name, gone.finished, gone.active, gone.failed, gone.unreported_exits) == ("j-1", True, 0, 2, 2)
    reconciler.exits[batch.batch_id] = {"j-1-aaaaa", "j-1-bbbbb"}  # both workers nacked and said so
    assert reconciler.observe(batch)[0].unreported_exits == 0


def test_a_job_never_seen_counts_as_running_only_for_the_grace(tmp_path: Path) -> None:
    """Recorded, not observed yet (watch lag): running while young; a new term forgets what it saw."""
    reconciler, backend, batch = shown(tmp_path, launched=time.time())
    assert [(j.name, j.finished) for j in reconciler.observe(batch)] == [("j-1", False)]
    backend.jobs = [ObservedJob("j-1", active=1, finished=False)]
    reconciler.observe(batch)
    reconciler.new_term()
    backend.jobs = []
    assert [(j.name, j.finished) for j in reconciler.observe(batch)] == [("j-1", False)]
    old = shown(tmp_path / "old", launched=time.time() - UNSEEN_GRACE_S - 1)
    assert old[0].observe(old[2]) == []


def test_pods_per_batch_count_every_pod_heard_from(tmp_path: Path) -> None:
    """An evicted pod is neither succeeded nor failed in the Job's status, and a Job deleted from
    outside never showed the pods it lost; each pod whose worker sent any event ran, so a Job counts
    the larger of its status and its distinct workers (the chaos run showed 13-15 pods of 20)."""
    reconciler, backend, batch = shown(tmp_path, launched=time.time())
    batch.ran = {"j-1-evict", "j-1-aaaaa", "j-1-bbbbb", "launcher"}
    backend.jobs = [ObservedJob("j-1", active=2, finished=False, parallelism=2)]  # aaaaa, bbbbb
    batch.done = {0, 1, 2, 3}  # nothing left to plan but the finish
    reconciler._note_pods(batch, reconciler.observe(batch))
    assert batch.pods == {"j-1": 3}
    backend.jobs = [ObservedJob("j-1", active=0, finished=True, parallelism=2, succeeded=2)]
    reconciler._note_pods(batch, reconciler.observe(batch))
    assert batch.pods == {"j-1": 3}  # the same pods: none counted twice
    batch.ran |= {"j-1-ccccc"}  # a pod killed by the Job's delete, heard from once
    reconciler._note_pods(batch, reconciler.observe(batch))
    assert batch.pods == {"j-1": 4}


def test_pods_heard_from_in_an_earlier_term_still_count(tmp_path: Path) -> None:
    """The workers heard from are stored with the batch: a launcher that takes over (a new process,
    its memory empty) counts its predecessor's pods and its own, each once. Before, each term counted
    only what it heard: the 20,000-part chaos run showed 14 pods of 20 after two takeovers."""
    reconciler, backend, batch = shown(tmp_path, launched=time.time())
    batch.done = {0, 1, 2, 3}
    apply_events({batch.batch_id: batch}, [Event("part_done", batch.batch_id, w, parts=(0,))
                                           for w in ("j-1-aaaaa", "j-1-bbbbb", "j-1-ccccc")])
    taken_over = BatchState.from_json(batch.to_json())  # what the next leader loads
    reconciler.new_term()
    apply_events({batch.batch_id: taken_over}, [Event("part_done", batch.batch_id, w, parts=(1,))
                                                for w in ("j-1-ccccc", "j-1-ddddd")])
    backend.jobs = [ObservedJob("j-1", active=1, finished=False, parallelism=2)]  # ddddd
    reconciler._note_pods(taken_over, reconciler.observe(taken_over))
    assert taken_over.pods == {"j-1": 4}


def test_a_finished_batch_counts_the_pods_heard_since_it_last_noted_them(tmp_path: Path) -> None:
    """Pods are noted when Jobs are observed; the last workers' events may come after that, and a
    finished batch's events are not read: the finish counts them."""
    reconciler, _, batch = shown(tmp_path, launched=time.time())
    batch.pods = {"j-1": 1}
    batch.ran = {"j-1-aaaaa", "j-1-bbbbb", "launcher"}
    reconciler._finish(batch, Finish(FAILED, "x"), logs.get("test"))
    assert batch.pods == {"j-1": 2}
    assert FileStore(tmp_path).load(batch.batch_id).pods == {"j-1": 2}  # type: ignore[union-attr]


class WatchedBackend(ActiveBackend):
    """A backend that also says which Jobs its list/watch ever showed (as KubeBackend does)."""

    def __init__(self, shown: set[str]) -> None:
        super().__init__()
        self.shown = shown

    def ever_seen(self, name: str) -> bool:
        return name in self.shown


def test_a_new_leader_does_not_wait_for_a_job_its_watch_saw_deleted(tmp_path: Path) -> None:
    """A leader that takes over has not observed the batch's Job itself, but its watch saw it come
    and go (deleted from outside): it has ended, its pods counted as died silently (the follow-up is
    paced by one ack deadline), no 60 s grace (before: the chaos run sat a minute with no worker when
    a Job was deleted across a takeover)."""
    rec, batch = reconciler(tmp_path, WatchedBackend({"j-1"})), running("j-1")
    rec.new_term()
    observed = rec.observe(batch)
    assert [(j.name, j.finished, j.failed) for j in observed] == [("j-1", True, 2)]  # its 2 pods: silent deaths
    assert [j.name for j in reconciler(tmp_path, WatchedBackend(set())).observe(batch)] == ["j-1"]
