"""The launcher survives its own errors (issue 18, findings 2 to 6), on the real Pub/Sub emulator.

Checks: a failed save of progress, of a finish or of a cancel is reverted in memory and the
message given back, so the store ends right (never "every part processed, progress lost");
a store that cannot list at takeover, and a corrupt state file, cost a pass, not the process,
and the corrupt batch shows failed naming why; a launcher that loses leadership gives back what
its pullers queued (the next leader gets it now); a background thread that dies fails /healthz.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from pytest_mock import MockerFixture

from batchctl.core import topology
from batchctl.core.messages import BatchRequest, Control, Event, decode_event, encode_control, encode_event
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher import control as control_module
from batchctl.launcher.app import Parts
from batchctl.launcher.service import Launcher
from batchctl.launcher.state import CANCELLED, FAILED, RUNNING, SUCCEEDED, BatchState, JobRecord
from batchctl.launcher.store import FileStore
from tests.support.faults import ActiveBackend, FlakyStore, SwitchElector
from tests.support.launching import FAST_TUNING, running_launcher
from tests.support.waiting import wait_for


def running_batch(store: FileStore, batch_id: str, parts: int) -> BatchState:
    """A batch already running Job 1 (the ActiveBackend reports it active)."""
    request = BatchRequest(batch_id=batch_id, parts=parts, records=parts, bytes=parts, handler="m:f")
    state = BatchState(request, state=RUNNING, created=request.created,
                       jobs=[JobRecord("j-1", 1, 1, time.time(), 0)])
    assert store.create(state)
    return state


def publish_done(pubsub: PubSub, batch_id: str, parts: range) -> None:
    topic = pubsub.settings.names.events_topic
    futures = [pubsub.publish(topic, *encode_event(Event("part_done", batch_id, "w", part=p))) for p in parts]
    for future in futures:
        future.result(timeout=30)


def launcher_parts(pubsub: PubSub, flaky: FlakyStore, backend: ActiveBackend) -> Parts:
    """The launcher's parts over a flaky file store; the shared topics exist before anything is sent."""
    topology.ensure_shared(pubsub)
    return Parts(flaky, backend, SwitchElector(), None, {})


def test_progress_whose_save_failed_is_not_lost(settings: Settings, pubsub: PubSub) -> None:
    """The first save of part_done events fails: memory reverts, the events come back and are stored
    (before: memory kept them, so their redelivery changed nothing, was acked, and the store never
    had them: the next reload would lose them)."""
    store = FileStore(settings.state_dir)
    running_batch(store, "prog", 4)
    flaky, backend = FlakyStore(store), ActiveBackend()
    backend.launched["prog"] = ["j-1"]
    flaky.fail_save()
    with running_launcher(settings, pubsub, parts=launcher_parts(pubsub, flaky, backend)):
        publish_done(pubsub, "prog", range(2))
        batch = wait_for(lambda: (b := store.load("prog")) and b.done == {0, 1} and b, timeout=15,
                         what="parts 0 and 1 stored done")
    assert batch.state == RUNNING
    assert flaky.failed == ["save prog running"]


def test_events_whose_save_failed_are_held_not_given_back(settings: Settings, pubsub: PubSub,
                                                          mocker: MockerFixture) -> None:
    """Two saves of progress fail in a row: the launcher keeps the events it took (their leases
    extended) and stores them on a later pass, each acked on its first delivery, none nacked.

    Before: each failed save nacked them. A nack costs a delivery attempt (ten dead-letter an
    event), and on the emulator a message nacked and then leased to a launcher that dies is, for
    about one message in ten, never delivered again: the Kubernetes chaos run's lost progress
    (issue 12). Pub/Sub itself redelivers it; batchctl must not rest on either."""
    store = FileStore(settings.state_dir)
    running_batch(store, "held", 30)
    flaky, backend = FlakyStore(store), ActiveBackend()
    backend.launched["held"] = ["j-1"]
    flaky.fail_save(lambda s: bool(s.done))
    flaky.fail_save(lambda s: bool(s.done))
    events = settings.names.events_subscription
    nacks = mocker.spy(pubsub, "nack")
    leases = mocker.spy(pubsub, "modify_ack_deadline")
    acked = mocker.spy(Launcher, "_ack_events")
    with running_launcher(settings, pubsub, parts=launcher_parts(pubsub, flaky, backend)):
        publish_done(pubsub, "held", range(30))
        wait_for(lambda: (b := store.load("held")) and len(b.done) == 30, timeout=30, what="30 parts stored done")
    assert flaky.failed == ["save held running"] * 2
    assert [c for c in nacks.call_args_list if c.args[0] == events] == []
    attempts = [m.delivery_attempt for call in acked.call_args_list for m, _ in call.args[1]
                if decode_event(m.data, m.attributes).type == "part_done"]  # not the launcher's batch_finished
    assert len(attempts) == 30 and set(attempts) == {1}, f"delivery attempts of the acked events: {attempts}"
    held = [c for c in leases.call_args_list if c.args[0] == events and c.args[2] > 0]
    assert held, "the held events' leases were never extended"


def test_finish_whose_save_failed_is_stored_later(settings: Settings, pubsub: PubSub) -> None:
    """The save of succeeded fails once: memory goes back to running and the next pass stores it."""
    store = FileStore(settings.state_dir)
    running_batch(store, "fin", 2)
    flaky, backend = FlakyStore(store), ActiveBackend()
    backend.launched["fin"] = ["j-1"]
    flaky.fail_save(lambda s: s.state == SUCCEEDED)
    with running_launcher(settings, pubsub, parts=launcher_parts(pubsub, flaky, backend)):
        publish_done(pubsub, "fin", range(2))
        wait_for(lambda: (b := store.load("fin")) and b.state == SUCCEEDED, timeout=15, what="succeeded stored")
    assert flaky.failed == ["save fin succeeded"]


def test_cancel_whose_save_failed_is_retried_until_stored(settings: Settings, pubsub: PubSub) -> None:
    """The save of cancelled fails once: the request is given back, and its redelivery cancels."""
    store = FileStore(settings.state_dir)
    running_batch(store, "can", 2)
    flaky, backend = FlakyStore(store), ActiveBackend()
    backend.launched["can"] = ["j-1"]
    flaky.fail_save(lambda s: s.state == CANCELLED)
    with running_launcher(settings, pubsub, parts=launcher_parts(pubsub, flaky, backend)) as run:
        wait_for(lambda: "can" in run.launcher.batches, timeout=10, what="the batch loaded")
        data, attributes = encode_control(Control("cancel", "can"))
        pubsub.publish(settings.names.requests_topic, data, attributes).result(timeout=30)
        wait_for(lambda: (b := store.load("can")) and b.state == CANCELLED, timeout=15, what="cancelled stored")
    assert flaky.failed == ["save can cancelled"]
    assert "can" in backend.deleted


def test_a_request_whose_save_failed_is_held_not_given_back(settings: Settings, pubsub: PubSub,
                                                            mocker: MockerFixture) -> None:
    """The save of a cancel fails twice: the launcher keeps the request and applies it again on a
    later pass, the same delivery each time, never nacked (before: each failure nacked it, a
    delivery attempt spent: a minute of API outage under backoff would dead-letter a submit)."""
    store = FileStore(settings.state_dir)
    running_batch(store, "hreq", 2)
    flaky, backend = FlakyStore(store), ActiveBackend()
    backend.launched["hreq"] = ["j-1"]
    flaky.fail_save(lambda s: s.state == CANCELLED)
    flaky.fail_save(lambda s: s.state == CANCELLED)
    requests = settings.names.requests_subscription
    nacks = mocker.spy(pubsub, "nack")
    applied = mocker.spy(Launcher, "_control")
    with running_launcher(settings, pubsub, parts=launcher_parts(pubsub, flaky, backend)) as run:
        wait_for(lambda: "hreq" in run.launcher.batches, timeout=10, what="the batch loaded")
        pubsub.publish(settings.names.requests_topic, *encode_control(Control("cancel", "hreq"))).result(timeout=30)
        wait_for(lambda: (b := store.load("hreq")) and b.state == CANCELLED, timeout=20, what="cancelled stored")
    assert flaky.failed == ["save hreq cancelled"] * 2
    assert [c for c in nacks.call_args_list if c.args[0] == requests] == []
    attempts = [c.args[1].delivery_attempt for c in applied.call_args_list]
    assert attempts == [1, 1, 1], f"delivery attempts of the request as applied: {attempts}"


def test_takeover_survives_a_store_that_cannot_list(settings: Settings, pubsub: PubSub) -> None:
    """Listing the batches fails at takeover: the loop lives on and loads them on a later pass."""
    store = FileStore(settings.state_dir)
    running_batch(store, "later", 2)
    flaky, backend = FlakyStore(store), ActiveBackend()
    flaky.fail_load_all()
    with running_launcher(settings, pubsub, parts=launcher_parts(pubsub, flaky, backend)) as run:
        wait_for(lambda: "later" in run.launcher.batches, timeout=10, what="the batches loaded")
        assert run.thread.is_alive()
    assert flaky.failed == ["load_unsettled"]


def test_corrupt_state_file_is_a_failed_batch_not_a_crash(settings: Settings, pubsub: PubSub) -> None:
    """A state file whose part bitmap is not zlib: the launcher keeps running, shows that batch
    failed naming the problem, and still runs the readable batch next to it."""
    store = FileStore(settings.state_dir)
    good = running_batch(store, "good", 1)
    bad = running_batch(store, "bad", 4)
    path = Path(settings.state_dir) / "batches" / "bad.json"
    body = json.loads(path.read_text())
    body["done"] = "bm90IHpsaWI="  # base64 of "not zlib"
    path.write_text(json.dumps(body))
    backend = ActiveBackend()
    backend.launched["good"] = ["j-1"]
    with running_launcher(settings, pubsub, parts=launcher_parts(pubsub, FlakyStore(store), backend)) as run:
        wait_for(lambda: "bad" in run.launcher.batches, timeout=10, what="the batches loaded")
        publish_done(pubsub, good.batch_id, range(1))
        wait_for(lambda: (b := store.load("good")) and b.state == SUCCEEDED, timeout=15, what="good succeeds")
        assert run.thread.is_alive()
    shown = store.load(bad.batch_id)
    assert shown is not None and shown.state == FAILED
    assert "stored state unreadable" in shown.reason and "bad.json" in shown.reason
    assert json.loads(path.read_text())["done"] == "bm90IHpsaWI="  # left for a human to look at


def test_leadership_lost_gives_back_the_inbox(settings: Settings, pubsub: PubSub) -> None:
    """What the pullers queued is nacked when leadership goes, so the next leader gets it at once
    (before: it stayed queued, the successor waited out the 20 s ack deadline)."""
    topology.ensure_shared(pubsub)
    names = settings.names
    elector = SwitchElector(leader=True)
    launcher = Launcher(settings, pubsub, FileStore(settings.state_dir), ActiveBackend(), elector,
                        tuning=FAST_TUNING)
    data, attributes = encode_control(Control("cancel", "nobody"))
    pubsub.publish(names.requests_topic, data, attributes).result(timeout=30)
    pulled = wait_for(lambda: pubsub.pull(names.requests_subscription, max_messages=10, timeout_s=1),
                      timeout=10, what="the request")
    for msg in pulled:
        launcher.inbox._queue.put((names.requests_subscription, msg))
    elector.is_leader = False
    launcher._step()
    again = wait_for(lambda: pubsub.pull(names.requests_subscription, max_messages=10, timeout_s=1),
                     timeout=5, what="the request given back")
    assert [m.message_id for m in again] == [m.message_id for m in pulled]
    assert launcher.inbox.take() == []


def test_a_dead_background_thread_fails_healthz(settings: Settings, pubsub: PubSub) -> None:
    """The election thread dies: healthy() turns False although the loop still turns."""

    class DyingElector(SwitchElector):
        def start(self) -> threading.Thread:
            thread = threading.Thread(target=lambda: None, name="dies")
            thread.start()
            return thread

    with running_launcher(settings, pubsub, parts=Parts(FileStore(settings.state_dir), ActiveBackend(),
                                                        DyingElector(), None, {})) as run:
        wait_for(lambda: run.launcher._elector_thread is not None, timeout=10, what="started")
        run.launcher._elector_thread.join(5)  # type: ignore[union-attr]
        assert time.monotonic() - run.launcher.last_loop < 5
        assert run.launcher.healthy() is False


def test_a_retry_that_can_never_succeed_is_recorded_and_acked(settings: Settings, pubsub: PubSub,
                                                              mocker: MockerFixture) -> None:
    """A retry of a batch whose dead-letter subscription is gone (expired) fails the same way on
    every delivery: it is handled once, its reason stored on the batch, and acked (before: given
    back and redelivered for the 7 days of retention, issue 18, finding 8)."""
    store = FileStore(settings.state_dir)
    request = BatchRequest(batch_id="gone", parts=2, records=2, bytes=2, handler="m:f")
    assert store.create(BatchState(request, state=FAILED, created=request.created, finished=time.time(),
                                   reason="1 part failed", done={0}, dead={1}))
    moves = mocker.spy(control_module, "republish_dead")
    with running_launcher(settings, pubsub, parts=launcher_parts(pubsub, FlakyStore(store), ActiveBackend())):
        pubsub.publish(settings.names.requests_topic, *encode_control(Control("retry", "gone"))).result(timeout=30)
        wait_for(lambda: moves.call_count >= 3 or "does not exist" in (((b := store.load("gone")) and b.reason) or ""),
                 timeout=20, what="the retry recorded, or delivered 3 times")
        deliveries = moves.call_count
    batch = store.load("gone")
    assert deliveries == 1, f"retry delivered {deliveries} times"
    assert batch is not None and batch.state == FAILED and batch.dead == {1}
    assert batch.reason.startswith("retry failed:") and "does not exist" in batch.reason


def test_a_permanent_failure_whose_save_failed_is_given_back_then_recorded(settings: Settings,
                                                                           pubsub: PubSub) -> None:
    """Storing the retry's permanent failure fails once: the message is given back (nothing acked
    unstored), and its next delivery stores the reason."""
    store = FileStore(settings.state_dir)
    request = BatchRequest(batch_id="gone2", parts=1, records=1, bytes=1, handler="m:f")
    assert store.create(BatchState(request, state=FAILED, created=request.created, finished=time.time(),
                                   reason="1 part failed", dead={0}))
    flaky = FlakyStore(store)
    flaky.fail_save(lambda s: s.reason.startswith("retry failed:"))
    with running_launcher(settings, pubsub, parts=launcher_parts(pubsub, flaky, ActiveBackend())):
        pubsub.publish(settings.names.requests_topic, *encode_control(Control("retry", "gone2"))).result(timeout=30)
        wait_for(lambda: "does not exist" in (((b := store.load("gone2")) and b.reason) or ""), timeout=20,
                 what="the retry's failure stored on its second delivery")
    assert flaky.failed == ["save gone2 failed"]
