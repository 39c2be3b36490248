"""A launcher holding history: does keeping finished batches (until BATCHCTL_RETENTION) cost it?

    .venv/bin/python bench/history.py [--finished 100,10000] [--running 100] [--ticks 50]

For each count of finished batches, a fresh state folder holds that many finished batches (100
parts each, all done) and ``--running`` running ones (100 parts, half done, one Job each), as
the local backend's file store keeps them. A launcher (the real ``Launcher``, file store, the
real Pub/Sub emulator, default retention 7d so nothing expires) then:

- takes over: loads every batch from the store (wall time, median of 3 fresh launchers);
- holds them: Python heap the loaded batches occupy (tracemalloc, the launcher's batch map);
- ticks: CPU seconds per reconcile pass (``--ticks`` passes, process time);
- sweeps: CPU of one retention sweep (it reads the settled batches' end times from the store; it
  runs every tenth of BATCHCTL_RETENTION, at most every minute, not every tick).

The backend is a stand-in that reports each running batch's one Job as active and never
starts a process, so a tick measures the launcher, not workers. Targets: 10,000 finished
batches cost at most 1.5x the figures of 100 finished ones ("flat"). Prints a table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_env, emulator, final_json, prefix_for, say

from batchctl.core import logs
from batchctl.core.messages import BatchRequest
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher.planner import Launch, ObservedJob
from batchctl.launcher.service import Launcher
from batchctl.launcher.state import RUNNING, SUCCEEDED, BatchState, JobRecord
from batchctl.launcher.store import FileStore

FLAT = 1.5
PARTS = 100


class HoldBackend:
    """Every running batch has one active Job; nothing is ever started or stopped."""

    def __init__(self, settings: Settings) -> None:
        self.names = settings.names
        self.changed = threading.Event()

    def launch(self, batch: BatchState, launch: Launch) -> bool:
        return False

    def observe(self, batch_id: str) -> list[ObservedJob]:
        return [ObservedJob(self.names.job(batch_id, 1), active=1, finished=False)]

    def delete_jobs(self, batch_id: str) -> None: ...
    def forget(self, batch_id: str, job_names: list[str]) -> None: ...
    def job_batches(self) -> dict[str, str]:
        return {}

    def close(self) -> None: ...


class Leader:
    is_leader = True
    watching = True

    def start(self) -> threading.Thread:
        return threading.current_thread()

    def stop(self, *, release: bool = True) -> None: ...


def seed(settings: Settings, *, finished: int, running: int) -> None:
    store = FileStore(settings.state_dir)
    now = time.time()
    for i in range(finished + running):
        done = i < finished
        batch_id = f"{'f' if done else 'r'}{i:06d}"
        request = BatchRequest(batch_id=batch_id, parts=PARTS, records=PARTS * 100, bytes=PARTS * 10_000,
                               handler="mod:handle", created=now - 3600 + i * 0.001)
        state = BatchState(request, state=SUCCEEDED if done else RUNNING, created=request.created,
                           done=set(range(PARTS if done else PARTS // 2)), cleaned=done,
                           finished=now - 60 if done else None,
                           jobs=[JobRecord(settings.names.job(batch_id, 1), 1, 4, request.created, 0)])
        store.create(state)


def launcher(settings: Settings, pubsub: PubSub) -> Launcher:
    return Launcher(settings, pubsub, FileStore(settings.state_dir), HoldBackend(settings), Leader())


def measure(settings: Settings, pubsub: PubSub, *, ticks: int) -> dict[str, Any]:
    takeovers = []
    for _ in range(3):
        fresh = launcher(settings, pubsub)
        started = time.perf_counter()
        fresh._take_over()
        takeovers.append(time.perf_counter() - started)
    tracemalloc.start()
    fresh = launcher(settings, pubsub)
    base = tracemalloc.get_traced_memory()[0]
    fresh._take_over()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    fresh._leading = True
    fresh._step()  # warm up: the first sweep and the first reconcile of each batch
    started = time.process_time()
    for _ in range(ticks):
        fresh._step()
    tick = (time.process_time() - started) / ticks
    fresh.retention.next_sweep = 0.0
    started = time.process_time()
    fresh.retention.sweep(fresh.batches)
    sweep = time.process_time() - started
    return {"batches": len(fresh.batches), "takeover_s": statistics.median(takeovers), "held_mb": held / 2**20,
            "tick_cpu_ms": tick * 1000, "sweep_cpu_ms": sweep * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--finished", default="100,10000")
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=50)
    args = parser.parse_args()
    logs.configure(level="WARNING", json=True)
    counts = [int(c) for c in args.finished.split(",")]
    results = []
    with emulator() as emu:
        for finished in counts:
            folder = Path(tempfile.mkdtemp(prefix="batchctl-history-"))
            try:
                settings = replace(Settings.from_env(bench_env(emu.host, prefix_for("hist"))), backend="local",
                                   state_dir=folder)
                seed(settings, finished=finished, running=args.running)
                pubsub = PubSub(settings)
                try:
                    figures = {"finished": finished, "running": args.running,
                               **measure(settings, pubsub, ticks=args.ticks)}
                finally:
                    pubsub.close()
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            results.append(figures)
            say(f"{finished:>6} finished + {args.running} running: takeover {figures['takeover_s'] * 1000:8.1f} ms, "
                f"held {figures['held_mb']:7.2f} MB, tick {figures['tick_cpu_ms']:7.2f} ms CPU, "
                f"retention sweep {figures['sweep_cpu_ms']:7.2f} ms CPU")
    low, high = results[0], results[-1]
    ratios = {key: high[key] / low[key] if low[key] else None for key in ("takeover_s", "held_mb", "tick_cpu_ms")}
    ok = all(r is not None and r <= FLAT for r in ratios.values())
    say("ratios " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items() if v is not None) + f" (flat: <= {FLAT})")
    final_json({"runs": results, "ratios": ratios, "flat_target": FLAT, "ok": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
