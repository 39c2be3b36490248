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

Pools: a batch draws on its profile's ``max_workers`` (its ``Claim.pool``) when that profile sets
one, and always on the global ``BATCHCTL_MAX_WORKERS`` when that is set. A profile without
``max_workers`` is capped by the global budget alone (uncapped when that is unset). The filling is
the same, with one more stop: a batch whose pool is spent takes no more, the others go on. So the
shares of each pool sum to at most its ``max_workers`` and all shares to at most the global budget.

A batch with a share of 0 is *queued*; ``queue_positions`` says in which order they would get the
next freed worker.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


UNCAPPED = 1 << 62
"""``Budgets.room`` where no budget applies."""


@dataclass
class Budgets:
    """What is left of the global budget (None: none) and of each pool that has its own; may go negative."""

    total: int | None
    pools: dict[str, int] = field(default_factory=dict)

    def room(self, pool: str) -> int:
        """Workers a batch of ``pool`` may still take (UNCAPPED when no budget applies to it)."""
        caps = [v for v in (self.total, self.pools.get(pool)) if v is not None]
        return max(0, min(caps)) if caps else UNCAPPED

    def take(self, pool: str, workers: int) -> None:
        """``workers`` more are in use by a batch of ``pool`` (negative: given back)."""
        if self.total is not None:
            self.total -= workers
        if pool in self.pools:
            self.pools[pool] -= workers

    def copy(self) -> Budgets:
        return Budgets(self.total, dict(self.pools))


def allocate(claims: Iterable[Claim], budget: int | None, pools: Mapping[str, int] | None = None) -> dict[str, int]:
    """Each batch's worker count under ``budget`` (None: no global budget) and each pool's own budget."""
    claims = list(claims)
    if budget is None and not pools:
        return {c.batch_id: c.want for c in claims}
    shares = {c.batch_id: 0 for c in claims}
    heap = [(Fraction(1, c.weight), rank, c) for rank, c in enumerate(_by_arrival(claims)) if c.want > 0]
    heapq.heapify(heap)
    left = Budgets(budget, dict(pools or {}))
    while heap and (left.total is None or left.total > 0):
        _, rank, claim = heapq.heappop(heap)
        if not left.room(claim.pool):
            continue  # its pool is spent: it takes no more, the others go on
        shares[claim.batch_id] += 1
        left.take(claim.pool, 1)
        held = shares[claim.batch_id]
        if held < claim.want:
            heapq.heappush(heap, (Fraction(held + 1, claim.weight), rank, claim))
    return shares


def allocate_pools(claims: Iterable[Claim], budgets: Mapping[str, int], default: int | None) -> dict[str, int]:
    """``allocate`` with pool budgets: each pool within ``budgets[pool]``, all within ``default``."""
    return allocate(claims, default, budgets)


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
    pool: str = ""


def resizes(shares: Mapping[str, int], running: Mapping[str, Running],
            free: int | Budgets) -> tuple[list[tuple[str, int]], Budgets]:
    """The ``(batch_id, parallelism)`` patches that bring running Jobs to their shares, and the budgets left.

    ``free`` is each budget minus every unfinished Job's parallelism drawing on it now (negative when
    over; an int is the global budget alone). Shrinks come first and grows take only what is free in
    both the global budget and the Job's pool after them, so applying the list in order keeps every
    sum within its budget at every step, even if it stops half-way. A Job that cannot grow keeps its size.
    """
    left = Budgets(free) if isinstance(free, int) else free.copy()
    steps: list[tuple[str, int]] = []
    for batch_id, job in sorted(running.items()):
        share = shares.get(batch_id, 0)
        if share < job.parallelism:
            steps.append((batch_id, share))
            left.take(job.pool, share - job.parallelism)
    for batch_id, job in sorted(running.items()):
        share = shares.get(batch_id, 0)
        grown = min(share, job.parallelism + left.room(job.pool))
        if job.growable and grown > job.parallelism:
            steps.append((batch_id, grown))
            left.take(job.pool, grown - job.parallelism)
    return steps, left
