"""``launcher.gc.find_orphans``: which Pub/Sub resources and Jobs ``batchctl gc`` deletes.

Checks: a batch topic or subscription (``P-<id>-work``/``-dead``) of a batch without state is an
orphan, one of a known batch is not; the shared control and events names, other prefixes
(also one that extends this prefix's text with a valid id), names without the suffix, and ids
outside the pattern are never touched; a resource whose ``batchctl-created`` label is younger
than the grace period is spared, an older or unlabelled one is not; Jobs are grouped by their
unknown batch, Jobs of known batches, of another prefix or without a batch kept; lines read ``<verb> topic NAME``.
"""

from __future__ import annotations

from batchctl.launcher.gc import Orphans, batch_of, find_orphans

NOW = 1_800_000_000.0
OLD = {"batchctl-created": str(int(NOW - 7200))}
YOUNG = {"batchctl-created": str(int(NOW - 60))}


def orphans(topics: dict[str, dict[str, str]], *, known: frozenset[str] = frozenset({"kept"}),
            jobs: dict[str, str] | None = None) -> Orphans:
    return find_orphans(prefix="p", known=set(known), topics=topics, subscriptions={}, jobs=jobs or {}, now=NOW)


def test_resources_of_a_batch_without_state_are_orphans() -> None:
    found = orphans({"p-gone-work": OLD, "p-gone-dead": OLD, "p-kept-work": OLD, "p-kept-dead": OLD})
    assert found.topics == ["p-gone-dead", "p-gone-work"] and not found.jobs


def test_shared_names_other_prefixes_and_odd_names_are_never_touched() -> None:
    names = ["p-requests", "p-events", "p-requests-launcher", "p-events-launcher", "p-requests-dead-letters",
             "p-events-dead-letters", "q-gone-work", "pgone-work",
             "p-gone", "p-gone-work-x", "p-Gone-work", "p--work", "p-gone_1-work", "p-" + "a" * 41 + "-work"]
    assert not orphans({n: {} for n in names})


def test_an_id_may_contain_the_suffix_words() -> None:
    assert batch_of("p-work-dead-work", "p") == "work-dead" and batch_of("p-a-work", "p") == "a"


def test_young_resources_are_spared_old_and_unlabelled_ones_are_not() -> None:
    odd = {"batchctl-created": "x"}
    found = orphans({"p-young-work": YOUNG, "p-old-work": OLD, "p-bare-work": {}, "p-odd-work": odd})
    assert found.topics == ["p-bare-work", "p-odd-work", "p-old-work"]


def test_subscriptions_are_judged_like_topics() -> None:
    found = find_orphans(prefix="p", known={"kept"}, topics={}, subscriptions={"p-gone-dead": OLD, "p-kept-dead": OLD},
                         jobs={}, now=NOW)
    assert found.subscriptions == ["p-gone-dead"] and not found.topics


def test_jobs_of_unknown_batches_are_grouped_by_batch() -> None:
    found = orphans({}, jobs={"p-gone-1": "gone", "p-gone-2": "gone", "p-kept-1": "kept"})
    assert found.jobs == {"gone": ["p-gone-1", "p-gone-2"]}


def test_jobs_of_another_prefix_or_without_a_batch_are_not_touched() -> None:
    """Another deployment's Jobs share the namespace and labels, but not the name prefix."""
    assert not orphans({}, jobs={"q-gone-1": "gone", "p-x-1": "", "p-gone-x": "gone", "p-other-1": "gone"})


def test_lines_name_each_orphan() -> None:
    found = Orphans(topics=["p-a-work"], subscriptions=["p-a-dead"], jobs={"a": ["p-a-1"]})
    assert found.lines("deleted") == ["deleted topic p-a-work", "deleted subscription p-a-dead",
                                      "deleted job p-a-1 (batch a)"]
    assert not Orphans()
