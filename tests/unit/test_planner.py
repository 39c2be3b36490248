"""The planner: ``plan(batch, jobs)`` and ``parallelism()``, pure, no I/O.

Checks:
- ``parallelism``: ``min(max_parallelism, ceil(remaining / parts_per_worker))``, never
  below 1, against an integer oracle over an exhaustive grid, and for a million parts;
- first launch: Job 1, named from the pattern, sized from the request, from ``pending``
  (or from ``running`` with no Job recorded, after a restart);
- nothing at all while any observed Job is unfinished (even with no pod active yet);
- follow-up Job ``n + 1`` when the latest Job ended with parts left and progress made
  (also after a non-config failure, or once its Job object was deleted by its TTL),
  sized from the parts remaining, dead parts counting as progress;
- every part done: ``Finish(succeeded)``, plus ``Cleanup`` only when no Job is active;
- terminal states: ``succeeded`` but not cleaned cleans once Jobs end; ``failed``,
  ``cancelled`` and ``succeeded``+cleaned do nothing, whatever is observed;
- every part accounted with some dead: ``Finish(failed)`` counting and naming the dead parts
  (the first ten); a part both done and dead counts as done;
- a config error (``PodFailurePolicy``) on the latest Job fails the batch; on an older
  Job it does not;
- idle streaks: an idle Job asks for ``CheckDead`` until the dead letters were counted
  for the current number of Jobs, then a launch; ``MAX_IDLE_JOBS`` idle Jobs in a row
  fail the batch naming the parts missing; only the trailing streak counts; the
  decision table checked exhaustively over streak length and ``dead_checked``;
- invariants over an exhaustive small state space (3 parts): a launch only when nothing
  is active and parts remain, numbered ``len(jobs) + 1``, parallelism within bounds;
  cleanup only with no Job active; success only with no dead part outstanding; never
  stuck (something to do whenever parts remain and nothing runs);
- determinism (same input, same output) and purity (the input is not mutated);
- a part whose last allowed delivery started (``part_started``) and whose worker died: counted
  dead (``CountDead``) once no Job runs and the dead worker's leases have lapsed, never while a Job
  runs or once it is done; pacing after a silent death covers Pub/Sub's retry backoff;
- after the dead-letter check gave parts back, no follow-up until they are out of their retry
  backoff (``nudged_back_at``, from ``redelivered_by``: the worst delivery attempt decides);
- a Job named next but not recorded (a crash between its create and its record) is launched
  again first, running or ended, parts left or not: its 409 records it.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Sequence

import pytest

from batchctl.core.messages import BatchRequest
from batchctl.launcher.planner import (
    CONFIG_ERROR_REASON,
    LAPSE_SLACK_S,
    MAX_IDLE_JOBS,
    Action,
    CheckDead,
    Cleanup,
    CountDead,
    Finish,
    Launch,
    ObservedJob,
    leases_lapse_at,
    parallelism,
    plan,
    redelivered_by,
)
from batchctl.launcher.state import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, BatchState, JobRecord

PATTERN = "batchctl-b1-{n}"


def request(parts: int = 100, *, per_worker: int = 10, max_parallelism: int = 10) -> BatchRequest:
    return BatchRequest(
        batch_id="b1",
        parts=parts,
        records=parts * 10,
        bytes=parts * 1000,
        handler="mod:func",
        parts_per_worker=per_worker,
        max_parallelism=max_parallelism,
        created=0.0,
    )


def batch(
    parts: int = 100,
    *,
    done: Iterable[int] = (),
    dead: Iterable[int] = (),
    launched_at: Sequence[int] = (),
    state: str | None = None,
    per_worker: int = 10,
    max_parallelism: int = 10,
    dead_checked: int = 0,
    cleaned: bool = False,
) -> BatchState:
    """A batch whose Job ``k`` (1-based) was launched when progress was ``launched_at[k-1]``."""
    jobs = [
        JobRecord(name=PATTERN.format(n=n), n=n, parallelism=1, launched=float(n), progress_at_launch=p)
        for n, p in enumerate(launched_at, start=1)
    ]
    return BatchState(
        request=request(parts, per_worker=per_worker, max_parallelism=max_parallelism),
        state=state or (RUNNING if jobs else PENDING),
        done=set(done),
        dead=set(dead),
        jobs=jobs,
        dead_checked=dead_checked,
        cleaned=cleaned,
    )


def running(n: int, *, active: int = 1) -> ObservedJob:
    return ObservedJob(name=PATTERN.format(n=n), active=active, finished=False)


def ended(n: int, reason: str | None = None) -> ObservedJob:
    return ObservedJob(name=PATTERN.format(n=n), active=0, finished=True, failed_reason=reason)


def run(state: BatchState, jobs: Sequence[ObservedJob] = ()) -> list[Action]:
    return plan(state, list(jobs), job_name=PATTERN)


# --- parallelism() -----------------------------------------------------------------------


def test_parallelism_matches_the_formula_over_an_exhaustive_grid() -> None:
    """Every (remaining, parts_per_worker, max_parallelism) in a grid matches an integer oracle."""
    for remaining, per_worker, cap in itertools.product(range(61), range(1, 13), range(1, 13)):
        workers_needed = -(-remaining // per_worker)  # ceiling without floats
        expected = max(1, min(cap, workers_needed))
        assert parallelism(remaining, parts_per_worker=per_worker, max_parallelism=cap) == expected, (
            remaining,
            per_worker,
            cap,
        )


@pytest.mark.parametrize(
    ("remaining", "per_worker", "cap", "expected"),
    [
        (0, 10, 10, 1),  # never below 1
        (1, 10, 10, 1),
        (10, 10, 10, 1),  # exactly one worker's share
        (11, 10, 10, 2),  # one part over rounds up
        (95, 10, 5, 5),  # capped
        (100, 10, 10, 10),
        (1000, 10, 10, 10),
        (7, 1, 100, 7),
        (1_000_000, 1, 10_000, 10_000),
        (1_000_000, 7, 1_000_000, 142_858),
    ],
)
def test_parallelism_examples(remaining: int, per_worker: int, cap: int, expected: int) -> None:
    """Hand-checked values: rounding up, the cap, the floor of 1, large batches."""
    assert parallelism(remaining, parts_per_worker=per_worker, max_parallelism=cap) == expected


# --- first launch --------------------------------------------------------------------------


def test_first_launch_of_a_pending_batch() -> None:
    """A pending batch with no Job gets Job 1, named from the pattern, sized min(10, 100/10)."""
    assert run(batch(100)) == [Launch(name="batchctl-b1-1", n=1, parallelism=10)]


@pytest.mark.parametrize(
    ("parts", "per_worker", "cap", "expected"),
    [
        (1, 10, 10, 1),
        (9, 10, 10, 1),
        (10, 10, 10, 1),
        (11, 10, 10, 2),
        (35, 10, 10, 4),
        (100, 10, 3, 3),
        (100, 1, 1000, 100),
        (5, 1, 1, 1),
    ],
)
def test_first_launch_parallelism(parts: int, per_worker: int, cap: int, expected: int) -> None:
    """The first Job's parallelism is min(max_parallelism, ceil(parts / parts_per_worker))."""
    (action,) = run(batch(parts, per_worker=per_worker, max_parallelism=cap))
    assert action == Launch(name="batchctl-b1-1", n=1, parallelism=expected)


def test_first_launch_from_running_with_no_job_recorded() -> None:
    """A batch marked running but with no Job recorded (a restart mid-launch) still gets Job 1."""
    assert run(batch(100, state=RUNNING)) == [Launch(name="batchctl-b1-1", n=1, parallelism=10)]


def test_launch_name_is_formatted_from_the_given_pattern() -> None:
    """The Job name is ``job_name.format(n=...)``, whatever the pattern."""
    actions = plan(batch(100), [], job_name="other-prefix-{n}-w")
    assert actions == [Launch(name="other-prefix-1-w", n=1, parallelism=10)]


def test_first_launch_counts_parts_already_done() -> None:
    """Parts already done before any Job (e.g. restored state) shrink the first Job."""
    assert run(batch(100, done=range(85))) == [Launch(name="batchctl-b1-1", n=1, parallelism=2)]


# --- active Jobs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "jobs"),
    [
        pytest.param(batch(100, launched_at=[0]), [running(1)], id="just-launched"),
        pytest.param(batch(100, launched_at=[0]), [running(1, active=0)], id="no-pod-active-yet"),
        pytest.param(batch(100, done=range(50), launched_at=[0]), [running(1)], id="progressing"),
        pytest.param(batch(100, launched_at=[0, 0]), [ended(1), running(2)], id="older-ended"),
        pytest.param(
            batch(100, launched_at=[0, 0, 0]), [ended(1), ended(2), running(3)], id="idle-streak-at-max"
        ),
        pytest.param(
            batch(100, launched_at=[0, 0]), [ended(1, CONFIG_ERROR_REASON), running(2)], id="config-error-old"
        ),
        pytest.param(batch(100, dead=range(10), launched_at=[0]), [running(1)], id="some-dead"),
    ],
)
def test_nothing_while_a_job_is_active(state: BatchState, jobs: list[ObservedJob]) -> None:
    """While any observed Job is unfinished and parts remain, the plan is empty."""
    assert run(state, jobs) == []


# --- follow-up Jobs --------------------------------------------------------------------------


def test_follow_up_job_after_progress() -> None:
    """Job 1 ended with parts left after moving some: Job 2, named from the pattern."""
    actions = run(batch(100, done=range(40), launched_at=[0]), [ended(1)])
    assert actions == [Launch(name="batchctl-b1-2", n=2, parallelism=6)]


@pytest.mark.parametrize(
    ("done", "dead", "expected"),
    [
        (range(10), (), 9),
        (range(85), (), 2),
        (range(90), (), 1),
        (range(99), (), 1),
        (range(50), range(50, 95), 1),  # dead parts count as progress
        (range(40), range(35, 45), 6),  # 35..39 done and dead: counted once
    ],
)
def test_follow_up_parallelism_from_parts_remaining(
    done: Iterable[int], dead: Iterable[int], expected: int
) -> None:
    """A follow-up Job is sized from the parts still remaining, not the batch's total."""
    (action,) = run(batch(100, done=done, dead=dead, launched_at=[0]), [ended(1)])
    assert action == Launch(name="batchctl-b1-2", n=2, parallelism=expected)


def test_follow_up_numbering_continues_after_several_jobs() -> None:
    """With four Jobs recorded, the next one is Job 5."""
    actions = run(batch(100, done=range(80), launched_at=[0, 20, 40, 60]), [ended(n) for n in (1, 2, 3, 4)])
    assert actions == [Launch(name="batchctl-b1-5", n=5, parallelism=2)]


@pytest.mark.parametrize("reason", ["BackoffLimitExceeded", "DeadlineExceeded", "Evicted"])
def test_follow_up_after_a_failure_that_is_not_a_config_error(reason: str) -> None:
    """A Job that failed for another reason after progress gets a follow-up."""
    actions = run(batch(100, done=range(40), launched_at=[0]), [ended(1, reason)])
    assert actions == [Launch(name="batchctl-b1-2", n=2, parallelism=6)]


def test_follow_up_when_the_ended_job_is_no_longer_observed() -> None:
    """A recorded Job deleted by its TTL counts as ended: the next one is launched."""
    assert run(batch(100, done=range(40), launched_at=[0]), []) == [
        Launch(name="batchctl-b1-2", n=2, parallelism=6)
    ]


# --- success -------------------------------------------------------------------------------


def test_all_done_with_no_job_active_succeeds_and_cleans_up() -> None:
    """Every part done, every Job ended: Finish(succeeded) then Cleanup (dead letters too)."""
    actions = run(batch(100, done=range(100), launched_at=[0]), [ended(1)])
    assert actions == [Finish(SUCCEEDED), Cleanup(keep_dead=False)]


def test_all_done_with_a_job_active_succeeds_without_cleanup() -> None:
    """Every part done but a Job still running: Finish(succeeded) only, no Cleanup yet."""
    actions = run(batch(100, done=range(100), launched_at=[0]), [running(1)])
    assert actions == [Finish(SUCCEEDED)]


def test_all_done_succeeds_despite_a_config_error_on_the_latest_job() -> None:
    """A config error on the latest Job does not matter once every part is done."""
    actions = run(batch(10, done=range(10), launched_at=[0, 5]), [ended(1), ended(2, CONFIG_ERROR_REASON)])
    assert actions == [Finish(SUCCEEDED), Cleanup(keep_dead=False)]


# --- terminal states -----------------------------------------------------------------------


def test_succeeded_but_not_cleaned_cleans_once_jobs_ended() -> None:
    """A succeeded batch not yet cleaned gets Cleanup once no Job is active."""
    state = batch(100, done=range(100), launched_at=[0], state=SUCCEEDED)
    assert run(state, [ended(1)]) == [Cleanup(keep_dead=False)]


def test_succeeded_but_not_cleaned_waits_for_active_jobs() -> None:
    """A succeeded batch with a Job still running does nothing until it ends."""
    state = batch(100, done=range(100), launched_at=[0, 50], state=SUCCEEDED)
    assert run(state, [ended(1), running(2)]) == []


@pytest.mark.parametrize("done", [range(40), range(100)])
def test_cancelled_batch_gets_its_topics_deleted_once_jobs_ended(done: Iterable[int]) -> None:
    """Cancel deletes only the work subscription: Cleanup deletes the topics (work and dead letters)."""
    state = batch(100, done=done, launched_at=[0], state=CANCELLED)
    assert run(state, [running(1)]) == []
    assert run(state, [ended(1)]) == [Cleanup(keep_dead=False)]


@pytest.mark.parametrize("jobs", [[], [ended(1)], [running(1)], [ended(1, CONFIG_ERROR_REASON)]])
@pytest.mark.parametrize(
    ("state", "cleaned", "done"),
    [
        (FAILED, False, range(40)),
        (FAILED, True, range(40)),
        (CANCELLED, True, range(40)),
        (CANCELLED, True, range(100)),
        (SUCCEEDED, True, range(100)),
        (FAILED, False, range(100)),
    ],
)
def test_terminal_states_do_nothing(
    state: str, cleaned: bool, done: Iterable[int], jobs: list[ObservedJob]
) -> None:
    """failed, cancelled+cleaned, and succeeded+cleaned: no launch, finish or cleanup, whatever is observed."""
    assert run(batch(100, done=done, launched_at=[0], state=state, cleaned=cleaned), jobs) == []


# --- dead parts ----------------------------------------------------------------------------


def test_all_accounted_with_dead_parts_fails() -> None:
    """Every part done or dead, some dead: Finish(failed) naming how many are dead."""
    actions = run(batch(100, done=range(97), dead=range(97, 100), launched_at=[0]), [ended(1)])
    assert actions == [Finish(FAILED, "3 parts dead-lettered: parts 97, 98, 99")]


def test_all_accounted_with_dead_parts_fails_even_with_a_job_active() -> None:
    """The queue is drained once every part is accounted: fail without waiting for Jobs."""
    actions = run(batch(100, done=range(98), dead=range(98, 100), launched_at=[0]), [running(1)])
    assert actions == [Finish(FAILED, "2 parts dead-lettered: parts 98, 99")]


def test_part_both_done_and_dead_counts_as_done() -> None:
    """A part acked after being dead-lettered (redelivery) counts as done: the batch succeeds."""
    actions = run(batch(100, done=range(100), dead={3, 4, 99}, launched_at=[0]), [ended(1)])
    assert actions == [Finish(SUCCEEDED), Cleanup(keep_dead=False)]


def test_dead_count_in_the_reason_excludes_parts_also_done() -> None:
    """Parts both done and dead are not counted among the dead-lettered ones."""
    actions = run(batch(100, done=range(97), dead={5, 6, 97, 98, 99}, launched_at=[0]), [ended(1)])
    assert actions == [Finish(FAILED, "3 parts dead-lettered: parts 97, 98, 99")]


def test_part_both_done_and_dead_is_not_counted_twice_toward_progress() -> None:
    """99 done plus 1 done-and-dead is 99 parts accounted: one remains, so a follow-up Job."""
    actions = run(batch(100, done=range(99), dead={0}, launched_at=[0]), [ended(1)])
    assert actions == [Launch(name="batchctl-b1-2", n=2, parallelism=1)]


# --- configuration errors ------------------------------------------------------------------


def test_config_error_on_the_latest_job_fails_the_batch() -> None:
    """The latest Job failed by the PodFailurePolicy (worker exit 2): Finish(failed)."""
    (action,) = run(batch(100, launched_at=[0]), [ended(1, CONFIG_ERROR_REASON)])
    assert isinstance(action, Finish)
    assert action.state == FAILED
    assert "configuration error" in action.reason


def test_config_error_reason_carries_the_workers_own_error_when_known() -> None:
    """A worker reported its exit error before the Job was seen failed: the reason names it."""
    state = batch(100, launched_at=[0])
    state.worker_error = "handler 'no.such:handle': No module named 'no'"
    (action,) = run(state, [ended(1, CONFIG_ERROR_REASON)])
    assert action == Finish(FAILED, f"worker configuration error (exit 2): {state.worker_error}")


def test_config_error_fails_even_after_progress() -> None:
    """A config error on the latest Job fails the batch even if parts moved meanwhile."""
    state = batch(100, done=range(30), launched_at=[0, 10])
    (action,) = run(state, [ended(1), ended(2, CONFIG_ERROR_REASON)])
    assert isinstance(action, Finish)
    assert action.state == FAILED


def test_config_error_on_an_older_job_does_not_fail_the_batch() -> None:
    """Job 1's config error (since fixed) is ignored: Job 2 made progress, so Job 3 follows."""
    actions = run(batch(100, done=range(40), launched_at=[0, 0]), [ended(1, CONFIG_ERROR_REASON), ended(2)])
    assert actions == [Launch(name="batchctl-b1-3", n=3, parallelism=6)]


def test_config_error_on_a_job_not_recorded_is_ignored() -> None:
    """An observed Job that is not the latest recorded one cannot fail the batch by config error."""
    actions = run(batch(100, done=range(40), launched_at=[0]), [ended(1), ended(7, CONFIG_ERROR_REASON)])
    assert actions == [Launch(name="batchctl-b1-2", n=2, parallelism=6)]


# --- idle streaks --------------------------------------------------------------------------


def test_first_idle_job_asks_for_a_dead_letter_check() -> None:
    """Job 1 ended without moving a part and dead letters were never counted: CheckDead."""
    assert run(batch(100, launched_at=[0], dead_checked=0), [ended(1)]) == [CheckDead()]


def test_launch_after_the_dead_letter_check() -> None:
    """Once the dead letters were counted for this Job, the follow-up Job is launched."""
    actions = run(batch(100, launched_at=[0], dead_checked=1), [ended(1)])
    assert actions == [Launch(name="batchctl-b1-2", n=2, parallelism=10)]


def test_second_idle_job_asks_for_another_dead_letter_check() -> None:
    """The check counts per Job: after Job 2 also idles, dead letters are counted again."""
    assert run(batch(100, done=range(40), launched_at=[40, 40], dead_checked=1), [ended(1), ended(2)]) == [
        CheckDead()
    ]


def test_progress_found_by_the_dead_letter_check_ends_the_streak() -> None:
    """Parts found dead since the Job launched count as progress: launch, no CheckDead."""
    actions = run(batch(100, done=range(40), dead=range(40, 45), launched_at=[40]), [ended(1)])
    assert actions == [Launch(name="batchctl-b1-2", n=2, parallelism=6)]


@pytest.mark.parametrize("dead_checked", [0, MAX_IDLE_JOBS - 1])
def test_dead_letters_are_counted_before_idle_jobs_fail_the_batch(dead_checked: int) -> None:
    """MAX_IDLE_JOBS idle Jobs but the dead-letter queue not counted since the last: CheckDead first."""
    state = batch(100, done=range(40), launched_at=[40] * MAX_IDLE_JOBS, dead_checked=dead_checked)
    actions = run(state, [ended(n) for n in range(1, MAX_IDLE_JOBS + 1)])
    assert actions == [CheckDead()]


def test_max_idle_jobs_in_a_row_fail_the_batch() -> None:
    """MAX_IDLE_JOBS Jobs in a row without progress, dead letters counted: Finish(failed) naming the parts missing."""
    state = batch(100, done=range(40), launched_at=[40] * MAX_IDLE_JOBS, dead_checked=MAX_IDLE_JOBS)
    actions = run(state, [ended(n) for n in range(1, MAX_IDLE_JOBS + 1)])
    assert actions == [
        Finish(FAILED, f"{MAX_IDLE_JOBS} Jobs in a row ended without progress; 60 parts missing")
    ]


def test_two_idle_jobs_launch_a_third_and_three_fail_the_batch() -> None:
    """The documented tolerance, as behaviour: after 2 idle Jobs a third is launched; after 3 the batch fails."""
    two = batch(60, launched_at=[0, 0], dead_checked=2)
    assert run(two, [ended(1), ended(2)]) == [Launch(PATTERN.format(n=3), 3, 6)]
    three = batch(60, launched_at=[0, 0, 0], dead_checked=3)
    assert [a.state for a in run(three, [ended(1), ended(2), ended(3)]) if isinstance(a, Finish)] == [FAILED]


def test_only_the_trailing_idle_streak_counts() -> None:
    """Idle Jobs before a Job that made progress do not count toward the streak."""
    launched_at = [0] * MAX_IDLE_JOBS + [0, 10]  # Jobs 1..3 idle, Job 4 moved 10 parts, Job 5 idle
    state = batch(100, done=range(10), launched_at=launched_at, dead_checked=len(launched_at))
    actions = run(state, [ended(n) for n in range(1, len(launched_at) + 1)])
    assert actions == [Launch(name=PATTERN.format(n=6), n=6, parallelism=9)]


def test_idle_decision_table_is_exhaustive() -> None:
    """For every trailing idle streak and every dead_checked value: the documented decision."""
    for earlier, streak in itertools.product(range(3), range(MAX_IDLE_JOBS + 3)):
        # ``earlier`` Jobs that each moved one part, then ``streak`` idle Jobs.
        launched_at = list(range(earlier)) + [earlier] * streak
        n_jobs = len(launched_at)
        for dead_checked in range(n_jobs + 1):
            state = batch(100, done=range(earlier), launched_at=launched_at, dead_checked=dead_checked)
            actions = run(state, [ended(n) for n in range(1, n_jobs + 1)])
            if streak and dead_checked < n_jobs:
                assert actions == [CheckDead()], (earlier, streak, dead_checked)
            elif streak >= MAX_IDLE_JOBS:
                assert [type(a) for a in actions] == [Finish], (earlier, streak, dead_checked)
                assert f"{100 - earlier} parts missing" in actions[0].reason  # type: ignore[union-attr]
            else:
                expected = Launch(PATTERN.format(n=n_jobs + 1), n_jobs + 1, 10)
                assert actions == [expected], (earlier, streak, dead_checked)


def test_retry_after_repeated_dead_lettering_launches_a_job() -> None:
    """Each retry of a batch whose Jobs dead-lettered the same parts launches a new Job.

    Failed attempts count as activity, so a Job that only dead-lettered parts is not idle.
    """
    # 10 parts; Job 1 did 5 and failed the other 5 five times each (25 failures), which died;
    # each retry republished them (dead cleared) and Jobs 2-4 failed them 25 times again.
    state = batch(10, done=range(5), launched_at=[0, 30, 55, 80], dead_checked=4, state=RUNNING)
    state.retries = 4
    state.failures = 100
    actions = run(state, [ended(n) for n in (1, 2, 3, 4)])
    assert actions == [Launch(name="batchctl-b1-5", n=5, parallelism=1)]


# --- invariants over a small exhaustive state space ---------------------------------------


def _subsets(items: Sequence[int]) -> list[set[int]]:
    return [set(c) for r in range(len(items) + 1) for c in itertools.combinations(items, r)]


def _small_cases() -> Iterable[tuple[BatchState, list[ObservedJob]]]:
    """Every batch of 3 parts: done and dead sets, up to 3 Jobs, latest Job's observed shape.

    The plan sees the part sets only through ``|done|`` and ``dead - done``, so ``done`` as
    a prefix and ``dead`` as any subset reach every combination.
    """
    parts = (0, 1, 2)
    histories = [list(h) for k in range(4) for h in itertools.product(range(4), repeat=k)]
    latest_shapes = ("ended", "running", "config-error", "gone")
    prefixes = [set(range(k)) for k in range(len(parts) + 1)]
    for done, dead, history in itertools.product(prefixes, _subsets(parts), histories):
        for shape, dead_checked in itertools.product(latest_shapes, {0, len(history)}):
            if not history and shape != "gone":
                continue
            state = batch(
                3,
                done=done,
                dead=dead,
                launched_at=history,
                per_worker=1,
                max_parallelism=2,
                dead_checked=dead_checked,
            )
            observed = [ended(n) for n in range(1, len(history))]
            n = len(history)
            observed += {
                "ended": [ended(n)],
                "running": [running(n)],
                "gone": [],
                "config-error": [ended(n, CONFIG_ERROR_REASON)],
            }[shape]
            yield state, observed


def test_invariants_hold_over_every_small_batch() -> None:
    """No launch while active or when done; cleanup only when idle; never stuck; bounded sizes."""
    checked = 0
    for state, observed in _small_cases():
        actions = run(state, observed)
        active = any(not j.finished for j in observed)
        assert len(actions) <= 2
        for action in actions:
            if isinstance(action, Launch):
                assert not active and state.remaining > 0
                assert action.n == len(state.jobs) + 1 and action.name == PATTERN.format(n=action.n)
                assert 1 <= action.parallelism <= min(2, state.remaining)
            elif isinstance(action, Cleanup):
                assert not active
            elif isinstance(action, Finish) and action.state == SUCCEEDED:
                assert state.remaining == 0 and state.dead <= state.done
            elif isinstance(action, Finish):
                assert action.state == FAILED and action.reason
            else:
                assert isinstance(action, CheckDead) and state.dead_checked < len(state.jobs)
        if state.remaining > 0:
            assert bool(actions) != active, (state, observed, actions)  # never stuck, never busy-launch
        checked += 1
    assert checked > 5_000


# --- determinism and purity ----------------------------------------------------------------

SCENARIOS = [
    pytest.param(batch(100), [], [Launch(PATTERN.format(n=1), 1, 10)], id="first-launch"),
    pytest.param(batch(100, done=range(40), launched_at=[0]), [ended(1)], [Launch(PATTERN.format(n=2), 2, 6)],
                 id="follow-up"),
    pytest.param(batch(100, launched_at=[0]), [ended(1)], [CheckDead()], id="idle-check-dead"),
    pytest.param(batch(100, launched_at=[0, 0, 0], dead_checked=3), [ended(1), ended(2), ended(3)],
                 [Finish(FAILED, "3 Jobs in a row ended without progress; 100 parts missing")], id="idle-fail"),
    pytest.param(batch(100, done=range(100), launched_at=[0]), [ended(1)],
                 [Finish(SUCCEEDED), Cleanup(keep_dead=False)], id="success"),
    pytest.param(batch(100, done=range(99), dead={99}, launched_at=[0]), [running(1)],
                 [Finish(FAILED, "1 parts dead-lettered: part 99")], id="dead-fail"),
    pytest.param(batch(100, launched_at=[0]), [ended(1, CONFIG_ERROR_REASON)],
                 [Finish(FAILED, "worker configuration error (exit 2): see the Job's pod logs")], id="config-error"),
    pytest.param(batch(100, done=range(100), launched_at=[0], state=SUCCEEDED), [ended(1)],
                 [Cleanup(keep_dead=False)], id="terminal-cleanup"),
]


@pytest.mark.parametrize(("state", "jobs", "expected"), SCENARIOS)
def test_plan_gives_the_expected_actions_every_time(
    state: BatchState, jobs: list[ObservedJob], expected: list[Action]
) -> None:
    """Each scenario's actions, stated; asked three times, the planner answers the same (no hidden state)."""
    assert [run(state, jobs) for _ in range(3)] == [expected] * 3


@pytest.mark.parametrize(("state", "jobs", "expected"), SCENARIOS)
def test_plan_does_not_mutate_its_input(state: BatchState, jobs: list[ObservedJob], expected: list[Action]) -> None:
    """The batch state and the observed Job list are left exactly as they were."""
    state_before, jobs_before = copy.deepcopy(state), list(jobs)
    serialised_before = state.to_json()
    plan(state, jobs, job_name=PATTERN)
    assert state == state_before and state.to_json() == serialised_before
    assert jobs == jobs_before


def test_jobs_before_a_retry_do_not_count_as_idle() -> None:
    """After a retry, the idle Jobs that preceded it cannot fail the batch: a Job is launched."""
    state = batch(10, done=range(9), launched_at=[0, 9, 9, 9], dead_checked=4, state=RUNNING)
    state.retry_floor = 4
    actions = run(state, [ended(n) for n in (1, 2, 3, 4)])
    assert actions == [Launch(name="batchctl-b1-5", n=5, parallelism=1)]


def test_follow_up_after_an_idle_job_waits_one_ack_deadline() -> None:
    """After an idle Job, no follow-up until an ack deadline has passed since it launched
    (a killed worker's leased parts return only then); at that point it is launched."""
    state = batch(10, done=range(9), launched_at=[0, 9], dead_checked=2, state=RUNNING)
    launched = state.jobs[-1].launched
    deadline = state.request.ack_deadline_s
    jobs = [ended(1), ended(2)]
    assert plan(state, jobs, job_name=PATTERN, now=launched + deadline - 1) == []
    assert plan(state, jobs, job_name=PATTERN, now=launched + deadline + 1) == [Launch(PATTERN.format(n=3), 3, 1)]


# --- follow-ups only on facts (issue 12) ----------------------------------------------------


def test_follow_up_waits_until_events_up_to_the_jobs_end_are_applied() -> None:
    """A Job ended with parts remaining, but events published before its end may not be applied
    yet: no follow-up until they are (after a takeover this is what launched Jobs 2 and 3)."""
    state = batch(100, done=range(40), launched_at=[0])
    unaccounted = ObservedJob(PATTERN.format(n=1), active=0, finished=True, succeeded=2, accounted=False)
    assert run(state, [unaccounted]) == []
    accounted = ObservedJob(PATTERN.format(n=1), active=0, finished=True, succeeded=2, accounted=True)
    assert run(state, [accounted]) == [Launch(PATTERN.format(n=2), 2, 6)]


def test_unaccounted_job_does_not_hold_back_the_finish() -> None:
    """Every part is done: the batch finishes whatever is still in flight."""
    state = batch(100, done=range(100), launched_at=[0])
    unaccounted = ObservedJob(PATTERN.format(n=1), active=0, finished=True, accounted=False)
    assert run(state, [unaccounted]) == [Finish(SUCCEEDED), Cleanup(keep_dead=False)]


@pytest.mark.parametrize(("after", "launches"), [(0, False), (0.998, False), (1, True), (10, True)])
def test_follow_up_after_a_silent_death_waits_for_the_leases(after: float, launches: bool) -> None:
    """A pod died without worker_exited (SIGKILL, OOM): its parts stay leased for one ack deadline
    (``after`` counts in ack deadlines, past Pub/Sub's retry backoff) after the Job was seen ended;
    the follow-up waits, then launches."""
    state = batch(100, done=range(90), launched_at=[0])
    job = ObservedJob(PATTERN.format(n=1), active=0, finished=True, succeeded=1, failed=1,
                      finished_at=1000.0, unreported_exits=1)
    lapse = after * state.request.ack_deadline_s + LAPSE_SLACK_S
    actions = plan(state, [job], job_name=PATTERN, now=1000.0 + lapse)
    assert actions == ([Launch(PATTERN.format(n=2), 2, 1)] if launches else [])


def test_every_worker_reported_its_exit_no_pacing() -> None:
    """Pods that exited with worker_exited nacked what they held: the follow-up goes at once."""
    state = batch(100, done=range(90), launched_at=[0])
    evicted = ObservedJob(PATTERN.format(n=1), active=0, finished=True, succeeded=1, failed=1,
                          finished_at=1000.0, unreported_exits=0)
    assert plan(state, [evicted], job_name=PATTERN, now=1000.0) == [Launch(PATTERN.format(n=2), 2, 1)]


def test_leases_lapse_at_the_latest_silent_death() -> None:
    """Of two Jobs with silent deaths, the later end decides; Jobs without any do not count."""
    state = batch(100, launched_at=[0, 0, 0])
    jobs = [
        ObservedJob("a", 0, True, finished_at=10.0, unreported_exits=1),
        ObservedJob("b", 0, True, finished_at=500.0, unreported_exits=0),
        ObservedJob("c", 0, True, finished_at=30.0, unreported_exits=2),
    ]
    assert leases_lapse_at(state, jobs) == 30.0 + state.request.ack_deadline_s + LAPSE_SLACK_S
    assert leases_lapse_at(state, jobs[1:2]) == -math.inf


def test_observed_job_counts_its_pods() -> None:
    """pods = active + succeeded + failed."""
    assert ObservedJob("j", active=2, finished=False, succeeded=3, failed=1).pods == 6


# --- a part that kills its worker (issue 12: exit 137 on every try) -------------------------


def killed(n: int, *, at: float = 1000.0) -> ObservedJob:
    """Job ``n`` ended: one pod exited 0 (drained), one died without worker_exited."""
    return ObservedJob(PATTERN.format(n=n), active=0, finished=True, succeeded=1, failed=1,
                       finished_at=at, unreported_exits=1)


def test_a_last_try_that_died_with_its_worker_counts_dead_once_the_job_is_over() -> None:
    """Part 7's last allowed delivery started (``part_started`` at max attempts), its worker died,
    the Job ended: the part is dead (Pub/Sub forwards it on the next pull). No follow-up is
    launched just to make that pull, and the batch then fails naming it."""
    state = batch(10, done=[p for p in range(10) if p != 7], launched_at=[0, 9, 9])
    state.last_tries = {7}
    lapsed = 1000.0 + state.request.ack_deadline_s + LAPSE_SLACK_S
    assert plan(state, [killed(3)], job_name=PATTERN, now=lapsed) == [CountDead(frozenset({7}))]
    state.dead.add(7)
    assert plan(state, [killed(3)], job_name=PATTERN, now=lapsed) == [
        Finish(FAILED, "1 parts dead-lettered: part 7")]


def test_a_last_try_is_counted_dead_only_after_the_leases_lapsed() -> None:
    """Before the dead worker's lease has lapsed, Pub/Sub cannot have forwarded the part, and a
    ``retry`` right after the failure would find nothing to republish: nothing happens yet."""
    state = batch(10, done=range(9), launched_at=[0, 9])
    state.last_tries = {9}
    assert plan(state, [killed(2)], job_name=PATTERN, now=1000.0 + state.request.ack_deadline_s) == []


def test_a_last_try_is_not_counted_dead_while_a_job_runs_or_once_done() -> None:
    """The last try may still succeed (a Job is active), or did (the part is done)."""
    state = batch(10, done=range(9), launched_at=[0, 9])
    state.last_tries = {9}
    assert run(state, [running(2)]) == []
    state.done.add(9)
    assert run(state, [ended(2)]) == [Finish(SUCCEEDED), Cleanup(keep_dead=False)]


def test_pacing_after_a_silent_death_covers_pubsubs_retry_backoff() -> None:
    """An expired lease is redelivered after the retry backoff too (the emulator: 1-2 s): a
    follow-up launched at exactly one ack deadline finds the queue empty and proves nothing."""
    state = batch(100, done=range(90), launched_at=[0])
    deadline = state.request.ack_deadline_s
    assert plan(state, [killed(1)], job_name=PATTERN, now=1000.0 + deadline) == []
    assert plan(state, [killed(1)], job_name=PATTERN, now=1000.0 + deadline + LAPSE_SLACK_S) == [
        Launch(PATTERN.format(n=2), 2, 1)]


@pytest.mark.parametrize(("dead", "reason"), [
    ({3}, "1 parts dead-lettered: part 3"),
    ({3, 1, 2}, "3 parts dead-lettered: parts 1, 2, 3"),
    (set(range(25)), "25 parts dead-lettered: parts 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ..."),
])
def test_the_failure_reason_names_the_dead_parts(dead: set[int], reason: str) -> None:
    """``status`` shows the reason: it names the dead-lettered parts (the first ten, in order)."""
    state = batch(30, done=set(range(30)) - dead, dead=dead, launched_at=[0])
    assert run(state, [ended(1)]) == [Finish(FAILED, reason)]


def test_no_dead_letter_check_after_a_job_whose_worker_died_silently() -> None:
    """A Job that moved nothing but lost a pod without worker_exited is not proof of missing parts:
    the dead worker's parts come back when its leases lapse. The dead-letter check's nudge would take
    a delivery attempt from each of them and hide them (retry backoff) from the follow-up: skip it."""
    state = batch(10, launched_at=[0])
    lapsed = 1000.0 + state.request.ack_deadline_s + LAPSE_SLACK_S
    assert plan(state, [killed(1)], job_name=PATTERN, now=lapsed) == [Launch(PATTERN.format(n=2), 2, 1)]
    quiet = ObservedJob(PATTERN.format(n=1), active=0, finished=True, succeeded=2, finished_at=1000.0)
    assert plan(state, [quiet], job_name=PATTERN, now=lapsed) == [CheckDead()]


def test_jobs_whose_workers_died_silently_still_end_an_idle_streak() -> None:
    """Pods that die before they report anything (an OOM at start) make no part move: MAX_IDLE_JOBS
    such Jobs fail the batch as idle ones do, without a dead-letter check in between."""
    state = batch(10, launched_at=[0] * MAX_IDLE_JOBS)
    jobs = [killed(n) for n in range(1, MAX_IDLE_JOBS + 1)]
    assert plan(state, jobs, job_name=PATTERN, now=10_000.0) == [
        Finish(FAILED, f"{MAX_IDLE_JOBS} Jobs in a row ended without progress; 10 parts missing")]


# --- parts given back by the dead-letter check --------------------------------------------------


@pytest.mark.parametrize(("after", "launches"), [(-5.0, False), (-0.001, False), (0.0, True), (30.0, True)])
def test_follow_up_waits_for_parts_the_dead_letter_check_gave_back(after: float, launches: bool) -> None:
    """The check pulled parts and nacked them: they are in their retry backoff until
    ``nudged_back_at``. A follow-up launched sooner drains an empty queue and ends idle (a third Job)."""
    state = batch(100, launched_at=[0], dead_checked=1)
    state.nudged_back_at = 5000.0
    actions = plan(state, [ended(1)], job_name=PATTERN, now=5000.0 + after)
    assert actions == ([Launch(PATTERN.format(n=2), 2, 10)] if launches else [])


@pytest.mark.parametrize(("attempts", "back_after"), [
    ([], 0.0),  # nothing given back: no wait
    ([1], 1 * 1.5 + 2),  # min backoff 1 s after a first delivery
    ([2, 1], 2 * 1.5 + 2),  # the worst attempt decides: 2 s
    ([4], 8 * 1.5 + 2),
    ([9], 60 * 1.5 + 2),  # capped at the max backoff, 60 s
])
def test_redelivered_by_follows_the_retry_backoff(attempts: list[int], back_after: float) -> None:
    """min(max_backoff, min_backoff * 2^(attempt-1)) with margin (x1.5 + 2 s), as the worker awaits its nacks."""
    assert redelivered_by(100.0, attempts) == pytest.approx(100.0 + back_after)


# --- a Job created but not recorded ---------------------------------------------------------


@pytest.mark.parametrize("done", [range(0), range(40), range(100)])
@pytest.mark.parametrize("observed", ["running", "ended"])
def test_a_next_job_not_recorded_is_launched_again_first(done: range, observed: str) -> None:
    """A launcher died between creating Job n+1 and saving its record: whatever the Job does and
    whatever is left, the plan is that Job's launch (409, recorded), with its own parallelism."""
    job = ObservedJob(PATTERN.format(n=1), active=int(observed == "running"), finished=observed == "ended",
                      parallelism=3)
    assert run(batch(100, done=done), [job]) == [Launch(PATTERN.format(n=1), 1, 3)]
    later = ObservedJob(PATTERN.format(n=3), active=1, finished=False)
    assert run(batch(100, done=range(60), launched_at=[0, 30]), [ended(1), ended(2), later]) == [
        Launch(PATTERN.format(n=3), 3, 4)
    ]
    # even while the recorded Job runs (sized from the request when the Job's parallelism is unknown)
    assert run(batch(100, launched_at=[0]), [running(1), ended(2)]) == [Launch(PATTERN.format(n=2), 2, 10)]


def test_an_older_or_other_job_not_recorded_is_not_launched_again() -> None:
    """Only the next name is adopted: a Job of another number changes nothing."""
    stray = ObservedJob(PATTERN.format(n=5), active=1, finished=False)
    assert run(batch(100, done=range(100), launched_at=[0]), [ended(1), stray]) == [Finish(SUCCEEDED)]
