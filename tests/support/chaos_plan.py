"""What a chaos run does and records: its configuration, the disruption schedule, the input records."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ChaosConfig:
    parts: int = 20_000
    kills: int = 20
    """Worker kills, half SIGKILL and half SIGTERM (an odd one is a SIGKILL), in random order."""
    launcher_restarts: tuple[str, ...] = ("SIGKILL", "SIGTERM")
    pubsub_outage: bool = True
    """Take Pub/Sub down once, at the fault proxy every client goes through (the emulator keeps its state)."""
    outage_s: float = 6.0
    """How long Pub/Sub is down while everything else runs (workers give up after 30 s); kept below
    the lease and ack deadline, so no ack deadline lapses and the outage itself redelivers nothing."""
    part_s: float = 0.01
    """Extra time the handler spends per part (a sleep standing in for real work)."""
    seed: int = 1
    time_limit_s: float = 600.0
    max_parallelism: int = 4
    parts_per_worker: int = 50
    ack_deadline_s: int = 20
    lease_s: int = 20
    work_dir: Path = Path("/tmp/batchctl-chaos")
    emulator_host: str | None = None
    """Use this running emulator (behind the run's own proxy); None: start one on a free port."""
    batch_id: str = "chaos"
    prefix: str = "chaos"
    kill_span: tuple[float, float] = (0.03, 0.92)
    """Kills happen at random progress fractions in this range."""
    reap_orphans: bool = False
    quiet: bool = False
    retry_policy: bool = False
    """Keep the work subscription's retry policy (the emulator may then lose parts: ``retry_policy.py``)."""


@dataclass
class Kill:
    at: float
    pid: int
    worker: str
    sig: str
    progress: float


@dataclass
class LauncherRestart:
    sig: str
    progress: float
    exit_code: int | None = None
    stop_s: float | None = None
    down_s: float = 0.0
    ready_s: float | None = None


@dataclass
class Outage:
    """Pub/Sub down at the proxy: connections refused and open ones reset, then restored."""

    progress: float
    started_at: float = 0.0
    ended_at: float = 0.0
    seconds: float = 0.0
    connections_cut: int = 0
    launcher_survived: bool | None = None


@dataclass
class Disruption:
    at: float
    """Progress fraction at which it is due."""
    kind: str
    """``kill``, ``launcher`` or ``outage``."""
    sig: str = ""


def schedule(config: ChaosConfig, rng: random.Random) -> list[Disruption]:
    """Kills at random progress fractions; launcher restarts and the outage spread evenly between them."""
    sigs = ["SIGKILL"] * ((config.kills + 1) // 2) + ["SIGTERM"] * (config.kills // 2)
    rng.shuffle(sigs)
    low, high = config.kill_span
    events = [Disruption(rng.uniform(low, high), "kill", s) for s in sigs]
    big: list[Disruption] = [Disruption(0.0, "launcher", s) for s in config.launcher_restarts]
    if config.pubsub_outage:
        big.insert(1 if big else 0, Disruption(0.0, "outage"))
    for n, event in enumerate(big, start=1):
        event.at = n / (len(big) + 1)
    return sorted(events + big, key=lambda e: e.at)


def record(i: int) -> dict[str, Any]:
    return {"i": i, "text": f"chaos record {i} of the batch", "tags": ["a", "b", str(i % 7)]}

