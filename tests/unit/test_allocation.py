"""The worker budget's division: ``allocate``, ``allocate_pools``, ``queue_positions``, pure.

Checks, exhaustively over every small case (up to three batches, each wanting 0..3 workers at
any of the three priorities, budgets 0..10, every arrival order):
- the shares never sum above the budget, and no batch gets more than it can use;
- Pareto: no worker is left over while some batch wants more;
- weighted fairness: a batch holding workers never holds more per unit of weight than a wanting
  batch would after one more worker (equal only when the holder arrived first);
- the result equals an independent oracle (the ``budget`` smallest unit keys ``k / weight``);
- the order the claims are given in does not matter; arrival breaks ties;
- no budget: every batch gets ``min(max_parallelism, ceil(remaining / ppw))``, the planner's size;
- the issue's figures: budget 6, three batches wanting 4 → 2/2/2; one finishes → 3/3; a high
  batch arriving → its weighted share;
- pools (per-profile budgets) divide separately; queue positions: heaviest first, then earliest;
- ``BATCHCTL_MAX_WORKERS``: unset or empty is no budget, a bad value is one BadInput naming it.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from batchctl.core.errors import BadInput
from batchctl.launcher.allocation import (
    PRIORITY_WEIGHTS,
    Budgets,
    Claim,
    Running,
    allocate,
    allocate_pools,
    budget_from_env,
    queue_positions,
    resizes,
)
from batchctl.launcher.planner import parallelism

PRIORITIES = tuple(PRIORITY_WEIGHTS)


def claim(batch_id: str, want: int, priority: str = "normal", arrival: float = 0.0, pool: str = "") -> Claim:
    """A claim wanting exactly ``want`` workers (one part per worker)."""
    return Claim(batch_id, remaining=want, parts_per_worker=1, max_parallelism=10, priority=priority,
                 arrival=arrival, pool=pool)


def small_cases() -> list[list[Claim]]:
    """Every combination of up to three batches, each wanting 0..3 at any priority, arriving in order."""
    kinds = list(itertools.product(range(4), PRIORITIES))
    cases: list[list[Claim]] = []
    for count in (1, 2, 3):
        for combo in itertools.product(kinds, repeat=count):
            cases.append([claim(f"b{i}", want, prio, arrival=float(i)) for i, (want, prio) in enumerate(combo)])
    return cases


CASES = small_cases()
BUDGETS = range(11)


def oracle(claims: list[Claim], budget: int) -> dict[str, int]:
    """The ``budget`` smallest unit keys ``(k / weight, arrival)``, k = 1..want, counted per batch."""
    keys = sorted(
        (Fraction(k, c.weight), c.arrival, c.batch_id) for c in claims for k in range(1, c.want + 1)
    )
    shares = {c.batch_id: 0 for c in claims}
    for _, _, batch_id in keys[:budget]:
        shares[batch_id] += 1
    return shares


def test_shares_within_budget_and_wants_and_pareto() -> None:
    """Sum <= budget, share <= want, and sum == min(budget, total want): nothing idle while someone waits."""
    for claims, budget in itertools.product(CASES, BUDGETS):
        shares = allocate(claims, budget)
        assert set(shares) == {c.batch_id for c in claims}
        assert sum(shares.values()) == min(budget, sum(c.want for c in claims)), (claims, budget, shares)
        for c in claims:
            assert 0 <= shares[c.batch_id] <= c.want, (claims, budget, shares)


def test_weighted_fairness_between_every_pair() -> None:
    """A holder never has more per weight than a wanting batch would with one more (tie: holder came first)."""
    for claims, budget in itertools.product(CASES, BUDGETS):
        shares = allocate(claims, budget)
        for i, j in itertools.permutations(claims, 2):
            held, short = shares[i.batch_id], shares[j.batch_id]
            if held == 0 or short >= j.want:
                continue
            mine, theirs = Fraction(held, i.weight), Fraction(short + 1, j.weight)
            assert mine < theirs or (mine == theirs and i.arrival < j.arrival), (claims, budget, shares)


def test_equals_the_oracle() -> None:
    """The heap's result equals the sorted-keys oracle on every small case."""
    for claims, budget in itertools.product(CASES, BUDGETS):
        assert allocate(claims, budget) == oracle(claims, budget), (claims, budget)


def test_input_order_does_not_matter() -> None:
    """Shuffling the claims changes nothing: arrival, not list position, breaks ties."""
    rng = random.Random(11)
    for claims in CASES[::7]:
        for budget in (1, 3, 5):
            shuffled = list(claims)
            rng.shuffle(shuffled)
            assert allocate(shuffled, budget) == allocate(claims, budget)


def test_arrival_breaks_ties() -> None:
    """Equal weights and wants, one worker: the earliest batch gets it, whatever the names."""
    for order in itertools.permutations(range(3)):
        claims = [claim(f"b{i}", 2, arrival=float(order[i])) for i in range(3)]
        first = next(c.batch_id for c in claims if c.arrival == 0.0)
        assert allocate(claims, 1) == {c.batch_id: int(c.batch_id == first) for c in claims}


def test_no_budget_is_todays_sizing() -> None:
    """Unset budget: every batch gets the planner's size, ``min(max, ceil(remaining / ppw))``."""
    for remaining, ppw, cap in itertools.product(range(1, 30), range(1, 6), range(1, 8)):
        c = Claim("b", remaining=remaining, parts_per_worker=ppw, max_parallelism=cap)
        assert allocate([c], None) == {"b": parallelism(remaining, parts_per_worker=ppw, max_parallelism=cap)}
    assert allocate([Claim("done", 0, 5, 5)], None) == {"done": 0}


def test_want_uses_parts_per_worker_and_cap() -> None:
    """``want``: 25 parts at 10 per worker want 3; a cap of 2 holds it to 2; nothing left wants 0."""
    assert Claim("b", 25, 10, 10).want == 3
    assert Claim("b", 25, 10, 2).want == 2
    assert Claim("b", 0, 10, 2).want == 0


def test_issue_figures() -> None:
    """Budget 6: three wanting 4 get 2/2/2; one finishes → 3/3; a high one arriving gets twice a normal one."""
    three = [claim(f"b{i}", 4, arrival=float(i)) for i in range(3)]
    assert allocate(three, 6) == {"b0": 2, "b1": 2, "b2": 2}
    assert allocate(three[1:], 6) == {"b1": 3, "b2": 3}
    high = claim("h", 4, "high", arrival=9.0)
    assert allocate([*three[1:], high], 6) == {"b1": 2, "b2": 1, "h": 3}  # 1.5/1.5/3, the half to the earlier
    assert allocate([*three[1:], high], 8) == {"b1": 2, "b2": 2, "h": 4}
    assert allocate([claim("lo", 4, "low"), claim("hi", 4, "high", arrival=1.0)], 5) == {"lo": 1, "hi": 4}


def test_budget_zero_or_nothing_wanted() -> None:
    """A zero budget gives nobody anything; finished batches never take a worker."""
    assert allocate([claim("a", 3), claim("b", 1)], 0) == {"a": 0, "b": 0}
    assert allocate([claim("a", 0), claim("b", 2, arrival=1.0)], 5) == {"a": 0, "b": 2}


def test_pools_divide_separately() -> None:
    """Each pool spends its own budget, all within the global one; a pool with no budget of its own
    draws on the global budget alone (None: no cap)."""
    claims = [claim("a", 4, pool="gpu"), claim("b", 4, pool="gpu", arrival=1.0), claim("c", 4, pool="cpu")]
    assert allocate_pools(claims, {"gpu": 2}, 3) == {"a": 1, "b": 1, "c": 1}
    assert allocate_pools(claims, {"gpu": 2}, 5) == {"a": 1, "b": 1, "c": 3}
    assert allocate_pools(claims, {"gpu": 2}, None) == {"a": 1, "b": 1, "c": 4}


def test_queue_positions() -> None:
    """Queued batches line up heaviest first, then by arrival; batches with workers have no position."""
    claims = [claim("a", 2, arrival=0.0), claim("b", 2, arrival=1.0), claim("c", 2, "high", arrival=2.0),
              claim("d", 2, "low", arrival=3.0), claim("e", 2, arrival=4.0)]
    shares = {"a": 2, "b": 0, "c": 0, "d": 0, "e": 0}
    assert queue_positions(claims, shares) == {"c": 1, "b": 2, "e": 3, "d": 4}


def test_queue_position_is_the_order_of_the_next_worker() -> None:
    """As the budget grows, queued batches get their first worker in the order of their positions."""
    for claims in CASES:
        for budget in range(4):
            positions = queue_positions(claims, allocate(claims, budget))
            served: list[str] = []
            more = budget
            while len(served) < len(positions):
                more += 1
                grown = allocate(claims, more)
                served += [b for b in sorted(positions, key=positions.__getitem__) if grown[b] and b not in served]
            assert served == sorted(positions, key=positions.__getitem__), (claims, budget)


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), (" ", None), ("6", 6), ("50", 50)])
def test_budget_from_env(raw: str | None, expected: int | None) -> None:
    """Unset or empty: no budget (today's sizing); a whole number: the budget."""
    env = {} if raw is None else {"BATCHCTL_MAX_WORKERS": raw}
    assert budget_from_env(env) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "2.5", "many"])
def test_bad_budget_is_one_bad_input(raw: str) -> None:
    """A budget that is not a whole number >= 1 is BadInput naming the variable and the value."""
    with pytest.raises(BadInput, match=f"BATCHCTL_MAX_WORKERS='{raw}'"):
        budget_from_env({"BATCHCTL_MAX_WORKERS": raw})


def test_resizes_never_exceed_the_budget_at_any_step() -> None:
    """Applied in order, the patches keep the total within the budget at every step and reach the shares."""
    for sizes in itertools.product(range(4), repeat=3):
        for shares_t in itertools.product(range(4), repeat=3):
            for budget in range(4, 10):
                shares = {f"b{i}": s for i, s in enumerate(shares_t)}
                if sum(shares.values()) > budget or sum(sizes) > budget:
                    continue
                running = {f"b{i}": Running(f"j{i}", n) for i, n in enumerate(sizes)}
                steps, free = resizes(shares, running, budget - sum(sizes))
                now = dict(zip(shares, sizes, strict=True))
                for batch_id, size in steps:
                    now[batch_id] = size
                    assert sum(now.values()) <= budget, (sizes, shares, budget, steps)
                assert now == shares and free.total == budget - sum(shares.values())


def test_resizes_shrink_first_and_grow_only_what_is_free() -> None:
    """Over budget (free < 0): shrinks come first; a grow takes only what the shrinks freed."""
    running = {"a": Running("ja", 4), "b": Running("jb", 1)}
    steps, free = resizes({"a": 2, "b": 3}, running, free=-1)  # budget 4, 5 in use
    assert steps == [("a", 2), ("b", 2)] and free.total == 0


def test_resizes_leave_jobs_that_cannot_grow() -> None:
    """A Job that cannot grow (a pod succeeded, or Kueue owns it) is only ever shrunk."""
    running = {"a": Running("ja", 1, growable=False), "b": Running("jb", 3, growable=False)}
    steps, free = resizes({"a": 2, "b": 2}, running, free=0)
    assert steps == [("b", 2)] and free.total == 1


POOL_BUDGETS = ({}, {"p": 0}, {"p": 1}, {"p": 2}, {"p": 1, "q": 2}, {"p": 3, "q": 0})


@pytest.mark.parametrize("pools", POOL_BUDGETS, ids=str)
def test_pools_exhaustive(pools: dict[str, int]) -> None:
    """Every small case, every pool assignment (p, q, or no profile budget), global budget None or 0..6:
    each pool's shares sum to at most its budget, all shares to at most the global budget, nobody
    above its want, and no worker left over while a batch wants more and neither budget is spent."""
    for case in CASES[::7]:
        for names in itertools.product(("p", "q", ""), repeat=len(case)):
            claims = [Claim(c.batch_id, c.remaining, 1, 10, c.priority, c.arrival, pool=n)
                      for c, n in zip(case, names, strict=True)]
            for budget in (None, *range(7)):
                shares = allocate(claims, budget, pools)
                for pool, cap in pools.items():
                    assert sum(shares[c.batch_id] for c in claims if c.pool == pool) <= cap
                if budget is not None:
                    assert sum(shares.values()) <= budget
                for c in claims:
                    assert shares[c.batch_id] <= c.want
                    pool_spent = c.pool in pools and sum(
                        shares[o.batch_id] for o in claims if o.pool == c.pool) == pools[c.pool]
                    global_spent = budget is not None and sum(shares.values()) == budget
                    assert shares[c.batch_id] == c.want or pool_spent or global_spent


def test_pools_held_independently() -> None:
    """One pool's spent budget never holds another back; without a global budget an uncapped pool
    gets its want."""
    claims = [claim("a", 5, pool="etl"), claim("b", 5, pool="gpu", arrival=1.0), claim("c", 5, arrival=2.0)]
    assert allocate(claims, None, {"etl": 2, "gpu": 3}) == {"a": 2, "b": 3, "c": 5}
    assert allocate(claims, 6, {"etl": 2, "gpu": 3}) == {"a": 2, "b": 2, "c": 2}
    assert allocate(claims, 9, {"etl": 2, "gpu": 3}) == {"a": 2, "b": 3, "c": 4}


def test_resizes_respect_pool_budgets() -> None:
    """A grow takes only what is free in its pool, even with the global budget free."""
    running = {"a": Running("ja", 1, pool="etl"), "b": Running("jb", 1, pool="gpu")}
    steps, free = resizes({"a": 3, "b": 3}, running, Budgets(None, {"etl": 1, "gpu": 0}))
    assert steps == [("a", 2)] and free.pools == {"etl": 0, "gpu": 0}
    steps, free = resizes({"a": 3, "b": 3}, running, Budgets(1, {"etl": 5, "gpu": 5}))
    assert steps == [("a", 2)] and free.total == 0
