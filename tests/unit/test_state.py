"""A batch's durable state: ``BatchState`` arithmetic, copies and its JSON form.

Checks:
- ``progress`` = done + dead-not-done, ``remaining`` = parts - progress;
  ``batch_id`` and ``parts`` come from the request;
- ``TERMINAL`` is exactly succeeded, failed, cancelled;
- ``to_json``/``from_json`` round trip every field (request, state, part sets, Jobs,
  times, reason, flags, counters); the store ``version`` is not serialised, is set by
  ``from_json``, and is ignored by equality;
- part sets round trip at bitmap byte boundaries, empty, sparse, dense, random, and a
  million parts (all done: < 200 KB; worst case random halves: under a ConfigMap's 1 MiB);
  an empty set serialises as ``""``; the form does not depend on insertion order;
- a document from before ``reason``/``cleaned``/``retries``/``dead_checked``/``failures``/
  ``retry_floor``/``worker_error``/``last_tries`` loads with their defaults;
- ``copy()`` equals the original, keeps ``version``, and shares no mutable set or list.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

import pytest

from batchctl.core.messages import BatchRequest
from batchctl.launcher.state import (
    CANCELLED,
    FAILED,
    PENDING,
    REJECTED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    BatchState,
    JobRecord,
)

CONFIGMAP_LIMIT = 1024 * 1024


def request(parts: int = 100, **overrides: Any) -> BatchRequest:
    fields: dict[str, Any] = {
        "batch_id": "b1",
        "parts": parts,
        "records": parts * 10,
        "bytes": parts * 1000,
        "handler": "mod:func",
        "created": 1_700_000_000.25,
    }
    return BatchRequest(**{**fields, **overrides})


def state(parts: int = 100, *, done: Iterable[int] = (), dead: Iterable[int] = ()) -> BatchState:
    return BatchState(request=request(parts), done=set(done), dead=set(dead))


def full_state() -> BatchState:
    """A state with every field away from its default."""
    return BatchState(
        request=request(
            250, parts_per_worker=7, max_parallelism=30, image="reg.io/w@sha256:ab", max_delivery_attempts=9
        ),
        state=FAILED,
        done={0, 1, 2, 100, 249},
        dead={3, 200},
        jobs=[
            JobRecord("batchctl-b1-1", n=1, parallelism=30, launched=1_700_000_001.5, progress_at_launch=0),
            JobRecord("batchctl-b1-2", n=2, parallelism=4, launched=1_700_000_900.0, progress_at_launch=220),
        ],
        created=1_700_000_000.75,
        finished=1_700_001_000.0,
        reason="2 parts dead-lettered",
        cleaned=True,
        retries=2,
        dead_checked=2,
        nudged_back_at=1_700_000_950.5,
        failures=11,
        retry_floor=1,
        worker_error="handler 'no.such:handle': No module named 'no'",
        last_tries={3, 7},
        version="12345",
    )


def round_trip(original: BatchState) -> BatchState:
    return BatchState.from_json(original.to_json())


# --- arithmetic ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "done", "dead", "progress", "remaining"),
    [
        (10, (), (), 0, 10),
        (10, range(10), (), 10, 0),
        (10, (), range(10), 10, 0),
        (10, range(4), range(4, 7), 7, 3),
        (10, range(5), range(3, 8), 8, 2),  # 3, 4 done and dead: counted once
        (10, range(10), range(10), 10, 0),  # all dead parts also done
        (1, (0,), (0,), 1, 0),
    ],
)
def test_progress_and_remaining(
    parts: int, done: Iterable[int], dead: Iterable[int], progress: int, remaining: int
) -> None:
    """progress counts done parts plus dead parts not done; remaining is the rest."""
    batch = state(parts, done=done, dead=dead)
    assert (batch.progress, batch.remaining) == (progress, remaining)


def test_batch_id_and_parts_come_from_the_request() -> None:
    """batch_id and parts are read from the request, not stored twice."""
    batch = state(42)
    assert (batch.batch_id, batch.parts) == ("b1", 42)


def test_defaults_of_a_new_state() -> None:
    """A new state is pending, with no parts, Jobs, finish time, reason or counters."""
    batch = BatchState(request=request())
    assert batch.state == PENDING
    assert (batch.done, batch.dead, batch.jobs) == (set(), set(), [])
    assert (batch.finished, batch.reason, batch.cleaned) == (None, "", False)
    assert (batch.retries, batch.dead_checked, batch.version) == (0, 0, None)


def test_new_states_do_not_share_their_sets() -> None:
    """Each new state gets its own done, dead and jobs containers."""
    first, second = BatchState(request=request()), BatchState(request=request())
    first.done.add(1)
    first.dead.add(2)
    first.jobs.append(JobRecord("j", 1, 1, 0.0, 0))
    assert (second.done, second.dead, second.jobs) == (set(), set(), [])


def test_terminal_states_are_exactly_the_final_ones() -> None:
    """TERMINAL is succeeded, failed, cancelled, rejected; pending and running are not terminal."""
    assert set(TERMINAL) == {SUCCEEDED, FAILED, CANCELLED, REJECTED}
    assert PENDING not in TERMINAL and RUNNING not in TERMINAL


# --- JSON round trip -----------------------------------------------------------------------


def test_round_trip_of_a_new_state() -> None:
    """A fresh state survives to_json/from_json unchanged."""
    original = BatchState(request=request())
    assert round_trip(original) == original


def test_round_trip_of_every_field() -> None:
    """A state with every field set survives to_json/from_json unchanged."""
    original = full_state()
    restored = round_trip(original)
    assert restored == original
    assert restored.request == original.request
    assert restored.jobs == original.jobs


def test_round_trip_keeps_types() -> None:
    """Restored part sets are sets of int, Jobs are JobRecords, the request a BatchRequest."""
    restored = round_trip(full_state())
    assert isinstance(restored.request, BatchRequest)
    assert all(isinstance(p, int) for p in restored.done | restored.dead)
    assert all(isinstance(j, JobRecord) for j in restored.jobs)


def test_version_is_not_serialised() -> None:
    """The store version stays out of the document."""
    assert "version" not in json.loads(full_state().to_json())
    assert "12345" not in full_state().to_json()


def test_from_json_sets_the_given_version() -> None:
    """from_json records the store version it is given, None by default."""
    text = full_state().to_json()
    assert BatchState.from_json(text, version="987").version == "987"
    assert BatchState.from_json(text).version is None


def test_equality_ignores_the_version() -> None:
    """Two states differing only in version are equal."""
    text = full_state().to_json()
    assert BatchState.from_json(text, version="1") == BatchState.from_json(text, version="2")


def test_to_json_is_valid_compact_json() -> None:
    """The document is one JSON object without insignificant whitespace."""
    text = full_state().to_json()
    assert isinstance(json.loads(text), dict)
    assert text == json.dumps(json.loads(text), separators=(",", ":"))


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param(set(), id="empty"),
        pytest.param({0}, id="zero"),
        pytest.param({7}, id="last-bit-of-byte-0"),
        pytest.param({8}, id="first-bit-of-byte-1"),
        pytest.param(set(range(8)), id="one-full-byte"),
        pytest.param({0, 7, 8, 15, 16, 255, 256}, id="byte-boundaries"),
        pytest.param(set(range(1000)), id="dense"),
        pytest.param({0, 999_999}, id="sparse-ends"),
        pytest.param({999_999}, id="one-high"),
        pytest.param(set(range(0, 100_000, 3)), id="every-third"),
        pytest.param(set(random.Random(7).sample(range(50_000), 5_000)), id="random"),
    ],
)
def test_part_sets_round_trip(parts: set[int]) -> None:
    """done and dead come back exactly, whatever their shape."""
    restored = round_trip(state(1_000_000, done=parts, dead=parts))
    assert restored.done == parts
    assert restored.dead == parts


def test_empty_part_set_serialises_as_an_empty_string() -> None:
    """No parts done or dead: both fields are "" (not a compressed empty bitmap)."""
    body = json.loads(state().to_json())
    assert (body["done"], body["dead"]) == ("", "")


def test_part_zero_alone_is_not_mistaken_for_empty() -> None:
    """{0} serialises to something other than the empty set's form."""
    body = json.loads(state(done={0}).to_json())
    assert body["done"] != ""


def test_serialised_form_does_not_depend_on_insertion_order() -> None:
    """The same sets built in different orders serialise identically."""
    items = list(range(0, 5000, 7))
    forward = state(5000, done=items, dead=items[:10])
    backward = state(5000, done=reversed(items), dead=reversed(items[:10]))
    assert forward.to_json() == backward.to_json()


def test_a_million_parts_all_done_stays_small() -> None:
    """1,000,000 parts all done serialise under 200 KB and round trip."""
    original = state(1_000_000, done=range(1_000_000))
    text = original.to_json()
    assert len(text.encode()) < 200_000
    assert round_trip(original).done == original.done


def test_a_million_random_parts_stay_under_a_configmap() -> None:
    """Worst case (random halves done, random dead among the rest) stays far under 1 MiB."""
    rng = random.Random(11)
    done = {p for p in range(1_000_000) if rng.random() < 0.5}
    dead = {p for p in range(1_000_000) if p not in done and rng.random() < 0.5}
    original = state(1_000_000, done=done, dead=dead)
    text = original.to_json()
    assert len(text.encode()) < CONFIGMAP_LIMIT // 2
    restored = round_trip(original)
    assert (restored.done, restored.dead) == (done, dead)


def test_older_document_without_newer_fields_loads_with_defaults() -> None:
    """A document without the fields added since the first release loads with their defaults."""
    body = json.loads(full_state().to_json())
    added = ("reason", "cleaned", "retries", "dead_checked", "failures", "retry_floor", "worker_error",
             "nudged_back_at", "last_tries")
    for key in added:
        del body[key]
    restored = BatchState.from_json(json.dumps(body))
    assert tuple(getattr(restored, key) for key in added) == ("", False, 0, 0, 0, 0, "", 0.0, set())
    assert restored.done == full_state().done


# --- copy ----------------------------------------------------------------------------------


def test_copy_equals_the_original_and_keeps_the_version() -> None:
    """copy() has every field equal, the store version included."""
    original = full_state()
    duplicate = original.copy()
    assert duplicate == original
    assert duplicate.version == original.version


def test_copy_does_not_share_part_sets_or_jobs() -> None:
    """Changing a copy's done, dead or jobs leaves the original untouched."""
    original = full_state()
    before = original.to_json()
    duplicate = original.copy()
    duplicate.done.add(150)
    duplicate.dead.discard(3)
    duplicate.last_tries.add(9)
    duplicate.jobs.append(JobRecord("batchctl-b1-3", 3, 1, 0.0, 222))
    duplicate.state, duplicate.retries = RUNNING, 3
    assert original.to_json() == before
    assert duplicate.done is not original.done and duplicate.dead is not original.dead
    assert duplicate.jobs is not original.jobs


def test_original_changes_do_not_reach_a_copy() -> None:
    """Changing the original after copy() leaves the copy untouched."""
    original = full_state()
    duplicate = original.copy()
    snapshot = duplicate.to_json()
    original.done.clear()
    original.dead.add(7)
    original.jobs.pop()
    assert duplicate.to_json() == snapshot
