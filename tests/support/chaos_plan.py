"""What a chaos run does and records: its configuration, the disruption schedule, the input records."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ChaosConfig:
    parts: int = 20_000
    kills: int = 20
    """Worker kills, half SIGKILL and half SIGTERM (an odd one is a SIGKILL), in random order."""
    launcher_restarts: tuple[str, ...] = ("SIGKILL", "SIGTERM")
    emulator_restart: bool = True
    restore: bool = True
    """After the emulator restart, restore what real Pub/Sub would have kept (see the module doc)."""
    outage_s: float = 8.0
    """How long the emulator is down while everything else runs (workers give up after 30 s)."""
    part_s: float = 0.01
    """Extra time the handler spends per part (a sleep standing in for real work)."""
    seed: int = 1
    time_limit_s: float = 600.0
    max_parallelism: int = 4
    parts_per_worker: int = 50
    ack_deadline_s: int = 10
    lease_s: int = 10
    work_dir: Path = Path("/tmp/batchctl-chaos")
    emulator_host: str | None = None
    """Use this running emulator (then it cannot be restarted); None: start one on a fixed free port."""
    batch_id: str = "chaos"
    prefix: str = "chaos"
    kill_span: tuple[float, float] = (0.03, 0.92)
    """Kills happen at random progress fractions in this range."""
    reap_orphans: bool = False
    quiet: bool = False


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
class EmulatorRestart:
    progress: float
    mode: str
    stopped_at: float = 0.0
    resumed_at: float = 0.0
    outage_s: float = 0.0
    frozen_s: float = 0.0
    boot_s: float = 0.0
    republished: int = 0
    republished_parts: set[int] = field(default_factory=set)
    frozen_processes: int = 0
    launcher_survived: bool | None = None
    error: str = ""


@dataclass
class Disruption:
    at: float
    """Progress fraction at which it is due."""
    kind: str
    """``kill``, ``launcher`` or ``emulator``."""
    sig: str = ""


def schedule(config: ChaosConfig, rng: random.Random) -> list[Disruption]:
    """Kills at random progress fractions; launcher and emulator restarts spread evenly between them."""
    sigs = ["SIGKILL"] * ((config.kills + 1) // 2) + ["SIGTERM"] * (config.kills // 2)
    rng.shuffle(sigs)
    low, high = config.kill_span
    events = [Disruption(rng.uniform(low, high), "kill", s) for s in sigs]
    big: list[Disruption] = [Disruption(0.0, "launcher", s) for s in config.launcher_restarts]
    if config.emulator_restart:
        big.insert(1 if big else 0, Disruption(0.0, "emulator"))
    for n, event in enumerate(big, start=1):
        event.at = n / (len(big) + 1)
    return sorted(events + big, key=lambda e: e.at)


def record(i: int) -> dict[str, Any]:
    return {"i": i, "text": f"chaos record {i} of the batch", "tags": ["a", "b", str(i % 7)]}

