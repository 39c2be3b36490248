"""Issue 14's drain figures: one worker at its defaults against a bulk raw loop, events per part, kill recovery.

    .venv/bin/python bench/drain_bulk.py [--parts 20000] [--records 1,2] [--skip-kill]

Same run, same emulator, identical batches of ``--parts`` parts of R records each:
  * ``bulk``: the raw loop over the official client: pull up to 1,000, ack them in bulk;
  * ``worker``: ``python -m batchctl.worker`` at its default settings, no-op handler;
  * ``pull8`` / ``worker8``: a raw loop pulling at most 8 at a time vs the worker at concurrency 8.
Throughput is parts / (first part received → last ack). ``events per part`` counts every
message the worker published on the events topic (started, part_done, part_failed, exited),
read back from a subscription of the bench's own, over the parts it drained. ``kill``: a worker
holding a 4 s part is killed with SIGKILL after its first lease renewal; a second worker
starts at once; the figure is kill → that part's ``part_done`` (the lease must lapse first).
Uses $PUBSUB_EMULATOR_HOST, or starts an emulator of its own. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchctl.core.messages import decode_event  # noqa: E402  after the path setup above
from batchctl.core.pubsub import PubSub, SubscriptionSpec  # noqa: E402
from batchctl.core.settings import Settings  # noqa: E402
from batchctl.core.topology import BatchTopology  # noqa: E402
from bench.worker_drain import drain_pull, drain_worker, emulator_host, warm_up  # noqa: E402
from tests.support.parts import publish_batch  # noqa: E402

BULK_RATIO_TARGET = 0.5
SAME_CONCURRENCY_TARGET = 0.9
EVENTS_PER_PART_TARGET = 0.05
KILL_TARGET_S = 25.0


def events_since(pubsub: PubSub, subscription: str) -> list[Any]:
    """Every event on the bench's own events subscription since the last call (acked)."""
    got = []
    while True:
        batch = pubsub.pull(subscription, max_messages=1000, timeout_s=1)
        if not batch:
            return got
        pubsub.ack(subscription, [m.ack_id for m in batch])
        got.extend(decode_event(m.data, m.attributes) for m in batch)


def run_pair(pubsub: PubSub, env: dict[str, str], events_sub: str, *, parts: int, records: int,
             concurrency: int | None) -> dict[str, Any]:
    """A raw loop and the worker on identical batches; ``concurrency`` None = worker defaults vs bulk."""
    data = [[{"n": i, "r": r} for r in range(records)] for i in range(parts)]
    tag = f"r{records}-c{concurrency or 'default'}-{os.getpid()}"
    work = publish_batch(pubsub, f"raw-{tag}", data)
    raw = drain_pull(pubsub, work, parts, 1000 if concurrency is None else concurrency)
    publish_batch(pubsub, f"wrk-{tag}", data)
    events_since(pubsub, events_sub)
    worker = drain_worker_at(env, f"wrk-{tag}", concurrency)
    published = events_since(pubsub, events_sub)
    raw_rate, worker_rate = raw["parts"] / raw["seconds"], worker["parts"] / worker["seconds"]
    return {
        "raw_parts_per_s": raw_rate,
        "worker_parts_per_s": worker_rate,
        "ratio": worker_rate / raw_rate,
        "events_published": len(published),
        "events_per_part": len(published) / parts,
        "exit_after_last_ack_s": worker["exit_after_last_ack_s"],
    }


def drain_worker_at(env: dict[str, str], batch_id: str, concurrency: int | None) -> dict[str, float]:
    if concurrency is not None:
        return drain_worker(env, batch_id, concurrency)
    cmd = [sys.executable, "-m", "batchctl.worker", "--batch-id", batch_id, "--handler", "tests.support.handlers:noop"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=900)
    exited_at = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"worker exited {proc.returncode}:\n{stderr[-2000:]}")
    final = json.loads([line for line in stderr.splitlines() if '"worker_exited"' in line][-1])
    return {"parts": final["parts_done"], "seconds": final["last_ack_at"] - final["first_pull_at"],
            "exit_after_last_ack_s": exited_at - final["last_ack_at"]}


def kill_recovery(pubsub: PubSub, env: dict[str, str], events_sub: str, tmp: Path) -> float:
    """SIGKILL a worker holding a part (after its first renewal); seconds until another worker's part_done."""
    batch_id = f"kill-{os.getpid()}"
    publish_batch(pubsub, batch_id, [[{"sleep": 4}]], topology=BatchTopology())  # the product's ack deadline
    events_since(pubsub, events_sub)
    results = tmp / "results"
    cmd = [sys.executable, "-m", "batchctl.worker", "--batch-id", batch_id,
           "--handler", "tests.support.handlers:scripted", "--results-dir", str(results)]
    victim = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(results.glob("started-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3.5)  # past the first lease renewal (every ~3.3 s), before the 4 s part ends
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    victim.wait()
    survivor = subprocess.Popen([*cmd, "--empty-pulls", "40"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - killed < 120:
            if any(e.done_parts for e in events_since(pubsub, events_sub)):
                return time.monotonic() - killed
        raise SystemExit("the killed worker's part was never done")
    finally:
        survivor.kill()
        survivor.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--parts", type=int, default=20_000)
    parser.add_argument("--records", default="1,2", help="records per part, comma-separated")
    parser.add_argument("--skip-kill", action="store_true")
    args = parser.parse_args()
    with emulator_host() as host:
        env = {**os.environ, "PUBSUB_EMULATOR_HOST": host, "GOOGLE_CLOUD_PROJECT": "batchctl-bench",
               "BATCHCTL_PREFIX": f"bulk{os.getpid() % 10000}", "BATCHCTL_LOG_LEVEL": "INFO",
               "PYTHONPATH": str(ROOT)}
        pubsub = PubSub(Settings.from_env(env))
        names = pubsub.settings.names
        pubsub.create_topic(names.events_topic, exist_ok=True)
        events_sub = f"{names.events_topic}-bench"
        pubsub.create_subscription(events_sub, names.events_topic, SubscriptionSpec(), exist_ok=True)
        warm_up(pubsub)
        results: dict[str, Any] = {}
        for records in (int(r) for r in args.records.split(",")):
            results[f"defaults_r{records}"] = r = run_pair(pubsub, env, events_sub, parts=args.parts, records=records,
                                                        concurrency=None)
            print(f"  {records}-record parts: worker (defaults) {r['worker_parts_per_s']:,.0f} vs bulk raw "
                  f"{r['raw_parts_per_s']:,.0f} parts/s = {r['ratio']:.2f} (target >= {BULK_RATIO_TARGET}); "
                  f"{r['events_per_part']:.4f} events/part; exit {r['exit_after_last_ack_s']:.2f} s after last ack")
        results["c8"] = r = run_pair(pubsub, env, events_sub, parts=args.parts, records=1, concurrency=8)
        print(f"  concurrency 8: worker {r['worker_parts_per_s']:,.0f} vs raw pull(8) {r['raw_parts_per_s']:,.0f} "
              f"parts/s = {r['ratio']:.2f} (target >= {SAME_CONCURRENCY_TARGET})")
        if not args.skip_kill:
            folder = Path(f"/tmp/bench-kill-{os.getpid()}")
            results["kill_to_done_s"] = k = kill_recovery(pubsub, env, events_sub, folder)
            print(f"  kill -9 -> part redelivered and done: {k:.1f} s (target <= {KILL_TARGET_S})")
        pubsub.close()
    ok = (all(results[k]["ratio"] >= BULK_RATIO_TARGET for k in results if k.startswith("defaults_"))
          and results["c8"]["ratio"] >= SAME_CONCURRENCY_TARGET
          and results.get("defaults_r1", {}).get("events_per_part", 0) <= EVENTS_PER_PART_TARGET
          and results.get("kill_to_done_s", 0) <= KILL_TARGET_S)
    print(json.dumps({"bench": "drain_bulk", "parts": args.parts, "ok": ok, **results}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
