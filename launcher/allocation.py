"""How many workers each batch may run: a shared budget divided by weighted max-min fairness.

Pure: no I/O, no clock. The reconciler calls ``allocate`` once per pass over every unfinished
batch and applies the result (new Jobs at their share, running Jobs patched to it).

The division is progressive filling ("water-filling") in whole workers: the next worker goes to
the batch that would hold the fewest workers per unit of weight after taking it (smallest
``(share + 1) / weight``), earliest arrival first on a tie, until the budget is spent or every
batch has what it can use. Hence:

- a batch never gets more than it can use, ``want = min(max_parallelism, ceil(remaining / ppw))``;
- the shares never sum above the budget, and no worker is left over while some batch wants more;
- weighted fairness: for any batch ``i`` holding workers and any batch ``j`` wanting more,
  ``share_i / weight_i <= (share_j + 1) / weight_j`` (equal only when ``i`` arrived first), so no
  worker can move from ``i`` to ``j`` and leave ``j`` better off without making it the richer one;
- with no budget (``BATCHCTL_MAX_WORKERS`` unset) every batch gets its want: the sizing batchctl
  always had.

A batch with a share of 0 is *queued*; ``queue_positions`` says in which order they would get the
next freed worker.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from batchctl.core.errors import BadInput

PRIORITY_WEIGHTS = {"low": 1, "normal": 2, "high": 4}
"""``submit --priority``: a high batch gets twice a normal one's share, a low one half."""
DEFAULT_PRIORITY = "normal"
BUDGET_VAR = "BATCHCTL_MAX_WORKERS"


@dataclass(frozen=True)
class Claim:
    """One unfinished batch as the allocation sees it."""

    batch_id: str
    remaining: int
    """Parts neither done nor dead."""
    parts_per_worker: int
    max_parallelism: int
    priority: str = DEFAULT_PRIORITY
    arrival: float = 0.0
    """When the batch was submitted: the earlier batch wins a tie."""
    pool: str = ""
    """The budget this batch draws on (a profile's name where profiles carry ``max_workers``)."""

    @property
    def want(self) -> int:
        """Workers the batch can use now: ``min(max_parallelism, ceil(remaining / ppw))``, 0 when done."""
        if self.remaining <= 0:
            return 0
        return min(self.max_parallelism, math.ceil(self.remaining / self.parts_per_worker))

    @property
    def weight(self) -> int:
        return PRIORITY_WEIGHTS.get(self.priority, PRIORITY_WEIGHTS[DEFAULT_PRIORITY])


def allocate(claims: Iterable[Claim], budget: int | None) -> dict[str, int]:
    """Each batch's worker count under ``budget`` (None: no budget, every batch gets its want)."""
    claims = list(claims)
    if budget is None:
        return {c.batch_id: c.want for c in claims}
    shares = {c.batch_id: 0 for c in claims}
    heap = [(Fraction(1, c.weight), rank, c) for rank, c in enumerate(_by_arrival(claims)) if c.want > 0]
    heapq.heapify(heap)
    left = max(0, budget)
    while left and heap:
        _, rank, claim = heapq.heappop(heap)
        shares[claim.batch_id] += 1
        left -= 1
        held = shares[claim.batch_id]
        if held < claim.want:
            heapq.heappush(heap, (Fraction(held + 1, claim.weight), rank, claim))
    return shares


def allocate_pools(claims: Iterable[Claim], budgets: Mapping[str, int | None],
                   default: int | None) -> dict[str, int]:
    """``allocate`` within each pool: a claim draws on ``budgets[claim.pool]``, else on ``default``."""
    pools: dict[str, list[Claim]] = {}
    for claim in claims:
        pools.setdefault(claim.pool, []).append(claim)
    shares: dict[str, int] = {}
    for pool, members in pools.items():
        shares.update(allocate(members, budgets.get(pool, default)))
    return shares


def queue_positions(claims: Iterable[Claim], shares: Mapping[str, int]) -> dict[str, int]:
    """1-based place of each batch that wants workers but got none: the order the next freed worker takes.

    Positions count within a batch's pool; the first in line is the heaviest, then the earliest.
    """
    waiting = [c for c in _by_arrival(claims) if c.want > 0 and shares.get(c.batch_id, 0) == 0]
    positions: dict[str, int] = {}
    counts: dict[str, int] = {}
    for claim in sorted(waiting, key=lambda c: -c.weight):  # stable: arrival order within a weight
        counts[claim.pool] = counts.get(claim.pool, 0) + 1
        positions[claim.batch_id] = counts[claim.pool]
    return positions


def _by_arrival(claims: Iterable[Claim]) -> Sequence[Claim]:
    return sorted(claims, key=lambda c: (c.arrival, c.batch_id))


def budget_from_env(environ: Mapping[str, str]) -> int | None:
    """``BATCHCTL_MAX_WORKERS``: a whole number >= 1, or None when unset or empty (no budget)."""
    raw = environ.get(BUDGET_VAR, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise BadInput(f"{BUDGET_VAR}={raw!r}: must be a whole number of workers >= 1")
    return int(raw)



@dataclass(frozen=True)
class Running:
    """A batch's unfinished Jobs as the resize sees them."""

    job: str
    """The Job to patch (the latest unfinished one)."""
    parallelism: int
    """Sum of ``spec.parallelism`` over the batch's unfinished Jobs."""
    growable: bool = True
    """False when patching it up would start nothing (a pod already succeeded) or is not ours to do (Kueue)."""


def resizes(shares: Mapping[str, int], running: Mapping[str, Running], free: int) -> tuple[list[tuple[str, int]], int]:
    """The ``(batch_id, parallelism)`` patches that bring running Jobs to their shares, and the budget left.

    ``free`` is the budget minus every unfinished Job's parallelism now (negative when over). Shrinks
    come first and grows take only what is free after them, so applying the list in order keeps the
    sum within the budget at every step, even if it stops half-way. A Job that cannot grow keeps its size.
    """
    steps: list[tuple[str, int]] = []
    for batch_id, job in sorted(running.items()):
        share = shares.get(batch_id, 0)
        if share < job.parallelism:
            steps.append((batch_id, share))
            free += job.parallelism - share
    for batch_id, job in sorted(running.items()):
        share = shares.get(batch_id, 0)
        grown = min(share, job.parallelism + max(0, free))
        if job.growable and grown > job.parallelism:
            steps.append((batch_id, grown))
            free -= grown - job.parallelism
    return steps, free
