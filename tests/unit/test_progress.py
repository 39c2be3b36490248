"""``apply_events``: worker events folded into batch state.

Checks: a part is done once however often reported, and a later done clears its dead
mark; a failure on the last allowed attempt counts it dead (not if done); failures
count as activity; the sender of any event of a running batch is a pod that ran; events of
unknown or finished batches and out-of-range parts are ignored; a worker's exit error is kept
(also for a finished batch), and replaces the generic reason of a batch its configuration error
failed, but no other reason.
"""

from __future__ import annotations

from batchctl.core.messages import Event
from batchctl.launcher.planner import config_error_message
from batchctl.launcher.progress import apply_events
from batchctl.launcher.state import FAILED, RUNNING, SUCCEEDED, BatchState
from tests.unit.test_state import request


def batch(parts: int = 10, state: str = RUNNING, reason: str = "") -> BatchState:
    return BatchState(request=request(parts), state=state, reason=reason)


def event(kind: str, part: int | None = None, attempt: int = 1, reason: str = "", batch_id: str = "b1") -> Event:
    return Event(type=kind, batch_id=batch_id, worker="w", part=part, attempt=attempt, reason=reason)


def test_a_part_is_done_once_and_a_later_done_clears_dead() -> None:
    b = batch()
    b.dead.add(3)
    changed = apply_events({"b1": b}, [event("part_done", 3), event("part_done", 3, attempt=2), event("part_done", 4)])
    assert changed == {"b1"}
    assert b.done == {3, 4} and not b.dead
    assert apply_events({"b1": b}, [event("part_done", 3)]) == set()


def test_a_failure_on_the_last_attempt_is_dead_unless_done() -> None:
    b = batch()  # max_delivery_attempts 5 by default
    b.done.add(2)
    apply_events({"b1": b}, [event("part_failed", 1, attempt=4), event("part_failed", 1, attempt=5),
                             event("part_failed", 2, attempt=5)])
    assert b.dead == {1}
    assert b.tried == {1: 5, 2: 5} and b.failures == 0


def test_unknown_finished_and_out_of_range_are_ignored() -> None:
    done = batch(state=SUCCEEDED)
    b = batch()
    events = [event("part_done", 1, batch_id="nope"), event("part_done", 1, batch_id="done"),
              event("part_done", 10), event("part_done", -1), event("worker_started")]
    assert apply_events({"b1": b, "done": done}, events) == set()
    assert not b.done and not done.done


def test_the_sender_of_any_event_of_a_running_batch_is_a_pod_that_ran() -> None:
    """Noted, and stored with the batch's next change (not a change by itself: no save of its own);
    not for a finished batch."""
    b, done = batch(), batch(state=SUCCEEDED)
    events = [event("worker_started"), event("part_done", 10), event("worker_started", batch_id="done")]
    assert apply_events({"b1": b, "done": done}, events) == set()
    assert b.ran == {"w"} and not done.ran and not b.done
    assert BatchState.from_json(b.to_json()).ran == {"w"}


def test_a_worker_exit_error_is_kept_and_names_the_failure() -> None:
    """The error can arrive after the Job's failure ended the batch: the reason takes it then."""
    b = batch(state=FAILED, reason=config_error_message(""))
    error = "handler 'no.such:handle': No module named 'no'"
    assert apply_events({"b1": b}, [event("worker_exited", reason=f"error: {error}")]) == {"b1"}
    assert b.worker_error == error
    assert b.reason == config_error_message(error) == f"worker configuration error (exit 2): {error}"
    assert apply_events({"b1": b}, [event("worker_exited", reason=f"error: {error}")]) == set()


def test_an_exit_error_does_not_replace_another_reason_and_plain_exits_are_not_errors() -> None:
    b = batch(state=FAILED, reason="2 parts dead-lettered")
    events = [event("worker_exited", reason="drained"), event("worker_exited", reason="terminated")]
    assert apply_events({"b1": b}, events) == set()
    apply_events({"b1": b}, [event("worker_exited", reason="error: subscription x does not exist")])
    assert b.worker_error == "subscription x does not exist"
    assert b.reason == "2 parts dead-lettered"


def test_an_aggregated_part_done_counts_each_part_once() -> None:
    """One event naming parts 1, 2, 2, 3 and 99 (out of range): parts 1-3 done, 2 no longer dead."""
    b = batch()
    b.dead.add(2)
    done = Event(type="part_done", batch_id="b1", worker="w", parts=(1, 2, 2, 3, 99))
    assert apply_events({"b1": b}, [done]) == {"b1"}
    assert (b.done, b.dead) == ({1, 2, 3}, set())
    assert apply_events({"b1": b}, [done, event("part_done", 3)]) == set()


def test_a_flood_of_aggregated_events_counts_every_part() -> None:
    """100 events of 1,000 parts each: 100,000 parts done (``bench/launcher_events.py`` times this)."""
    big = BatchState(request=request(100_000), state=RUNNING)
    events = [Event(type="part_done", batch_id="b1", worker="w", parts=tuple(range(i * 1000, (i + 1) * 1000)))
              for i in range(100)]
    assert apply_events({"b1": big}, events) == {"b1"}
    assert len(big.done) == 100_000


def test_an_unreadable_batch_takes_no_event() -> None:
    """A batch loaded from a corrupt state document changes on no event, not even a worker's exit
    error: a save would overwrite the document a human must look at."""
    b = BatchState(request=request(10), state=FAILED, reason="stored state unreadable (x)", corrupt=True)
    events = [event("worker_exited", reason="error: handler 'x:y' cannot be imported"), event("part_done", 1)]
    assert apply_events({"b1": b}, events) == set()
    assert b.worker_error == "" and b.reason == "stored state unreadable (x)"


def test_a_started_redelivery_is_activity_and_its_last_try_is_remembered() -> None:
    """``part_started`` (a worker runs a redelivered part alone) counts as activity, so a Job whose
    worker it killed is not idle; on the last allowed attempt the part is a last try (not dead yet:
    it may still succeed), unless already done."""
    b = batch()  # max_delivery_attempts 5
    b.done.add(2)
    changed = apply_events({"b1": b}, [event("part_started", 1, attempt=4), event("part_started", 1, attempt=5),
                                       event("part_started", 2, attempt=5), event("part_started", 99, attempt=5)])
    assert changed == {"b1"}
    assert b.tried == {1: 5, 2: 5} and b.last_tries == {1} and not b.dead


def test_an_attempt_delivered_again_is_activity_once() -> None:
    """Events come again after a crash between their save and their ack: the same attempt of a part
    adds no activity (before, each delivery added one, which could make an idle Job look busy);
    a later attempt does; an event without an attempt still counts each time."""
    b = batch()
    assert apply_events({"b1": b}, [event("part_failed", 1, attempt=1), event("part_started", 1, attempt=2)]) == {"b1"}
    activity = b.activity
    assert apply_events({"b1": b}, [event("part_failed", 1, attempt=1), event("part_started", 1, attempt=2),
                                    event("part_failed", 1, attempt=2)]) == set()
    assert b.activity == activity
    assert apply_events({"b1": b}, [event("part_failed", 1, attempt=3)]) == {"b1"} and b.activity > activity
    apply_events({"b1": b}, [event("part_failed", 2, attempt=0), event("part_failed", 2, attempt=0)])
    assert b.failures == 2


def test_tried_survives_the_store() -> None:
    b = batch()
    apply_events({"b1": b}, [event("part_failed", 7, attempt=3)])
    again = BatchState.from_json(b.to_json())
    assert again.tried == {7: 3} and again.activity == b.activity
    assert BatchState.from_json(b.to_json().replace(',"tried":{"7":3}', "")).tried == {}  # a state from before
