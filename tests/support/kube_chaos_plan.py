"""What a chaos run on the Kubernetes backend does: its configuration and its disruption schedule.

The disruptions (``Disruption.kind``), each at a seeded random fraction of the main batch's progress:

* ``kill`` (``sig`` SIGKILL or SIGTERM): a random live worker pod's processes, as a crash, the OOM
  killer or a stray signal would (the kubelet reports the pod failed, exit 137 or 143);
* ``evict``: a pod evicted as the Eviction API does (DisruptionTarget, then a graceful delete);
* ``delete_job``: the batch's running Job deleted from outside (background propagation, as
  ``kubectl delete job``), right after a 403 is set up for the launcher's next Job create (a quota
  refusing the replacement once);
* ``launcher_kill``: the leading launcher SIGKILLed (its Lease not released), restarted shortly after;
* ``freeze``: the leading launcher frozen (SIGSTOP) past its Lease while the other replica may take
  over, then resumed (SIGCONT);
* ``api_outage``: the launchers' way to the API server down (its proxy refuses and resets);
* ``throttle``: the API server answers the next few launcher requests of one kind 429 with Retry-After;
* ``watch_gone``: the API server forgets its watch history and ends every watch (resuming gets 410);
* ``pubsub_outage``: Pub/Sub down at the proxy every client goes through;
* ``corrupt`` (not on the main batch's clock: at a seeded fraction of the small second batch's own
  progress): that batch's state ConfigMap cut short, as a torn write or a careless edit leaves it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.chaos_plan import Disruption

LONG = {"launcher_kill": "leader", "freeze": "leader", "api_outage": "api", "pubsub_outage": "pubsub"}
"""Disruptions that last (kind -> what they hold): at most one per holder at a time."""


@dataclass(frozen=True)
class KubeChaosConfig:
    parts: int = 20_000
    kills: int = 10
    """Worker pod kills, half SIGKILL and half SIGTERM (an odd one is a SIGKILL), in random order."""
    evictions: int = 2
    job_deletes: int = 1
    launcher_kills: int = 1
    freezes: int = 1
    freeze_s: float = 25.0
    """How long the leader stays frozen: past its 15 s Lease as the other replica times it (from when it
    saw the last renew, polling every 2 s), so that replica may take over."""
    api_outage_s: float = 15.0
    throttles: int = 2
    throttle_count: int = 4
    """429 answers per burst (state saves in one burst, Lease reads in the next, alternating)."""
    retry_after_s: int = 2
    watch_gone: int = 2
    pubsub_outage_s: float = 6.0
    corrupt: bool = True
    spare_parts: int = 400
    """Parts of the second, sacrificial batch (one worker) whose state is corrupted mid-run."""
    part_s: float = 0.01
    seed: int = 1
    time_limit_s: float = 900.0
    max_parallelism: int = 4
    parts_per_worker: int = 50
    ack_deadline_s: int = 20
    lease_s: int = 20
    """The workers' lease extension period (``BATCHCTL_LEASE_S``)."""
    span: tuple[float, float] = (0.03, 0.9)
    """Instant disruptions happen at random progress fractions in this range."""
    retry_policy: bool = False
    """Keep the work subscriptions' retry policy (the emulator may then lose parts: ``retry_policy.py``)."""
    long_span: tuple[float, float] = (0.05, 0.6)
    """Lasting disruptions start at random progress fractions in this range."""
    corrupt_span: tuple[float, float] = (0.2, 0.5)
    """The corruption happens at a random fraction of the second batch's own progress in this range."""
    work_dir: Path = Path("/tmp/batchctl-kube-chaos")
    emulator_host: str | None = None
    """Use this running emulator (behind the run's own proxy); None: start one on a free port."""
    batch_id: str = "chaos"
    spare_id: str = "doomed"
    prefix: str = "kchaos"
    quiet: bool = False


@dataclass
class Done:
    """One disruption as it happened."""

    kind: str
    progress: float
    at_s: float
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    """For a lasting one: how long it lasted."""


def schedule(config: KubeChaosConfig, rng: random.Random) -> list[Disruption]:
    """Every disruption but the corruption, at seeded random fractions of the main batch's progress."""
    sigs = ["SIGKILL"] * ((config.kills + 1) // 2) + ["SIGTERM"] * (config.kills // 2)
    rng.shuffle(sigs)
    low, high = config.span
    events = [Disruption(rng.uniform(low, high), "kill", s) for s in sigs]
    for kind, count in (("evict", config.evictions), ("throttle", config.throttles),
                        ("watch_gone", config.watch_gone)):
        events += [Disruption(rng.uniform(low, high), kind) for _ in range(count)]
    low, high = config.long_span  # a deleted Job's replacement must be needed: parts must remain
    lasting = [("delete_job", config.job_deletes), ("launcher_kill", config.launcher_kills), ("freeze", config.freezes),
               ("api_outage", int(config.api_outage_s > 0)), ("pubsub_outage", int(config.pubsub_outage_s > 0))]
    for kind, count in lasting:
        events += [Disruption(rng.uniform(low, high), kind) for _ in range(count)]
    return sorted(events, key=lambda e: e.at)
