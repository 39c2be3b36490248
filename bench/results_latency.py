#!/usr/bin/env python3
"""Results to a bucket that answers in tens of ms, as a real one does: the worker's drain against the
raw client uploading the same objects with as many threads, same run.

    .venv/bin/python bench/results_latency.py [--parts 300] [--delay-ms 25] [--writers 4,16] [--runs 2]

The Cloud Storage emulator answers a small upload in 2-3 ms on loopback; Cloud Storage takes tens
of ms per small object (one request each: ``DEST/part-NNNNNN.jsonl``). Here the emulator sits behind
a ``FaultProxy`` holding each chunk of its answers ``--delay-ms`` (``results_sink.fresh_bucket``; the
requests go at once, so the one-request-at-a-time emulator is not held by a delayed one). The round
trip of one upload alone is measured and printed (43 ms at the default). So a worker's writer
threads, not its handler, bound its pace: at ~45 ms a request, ``W`` writers write at most ``W / 0.045``
parts per second, whatever the handler does.

Per ``--writers`` value W, median of ``--runs``:
  * the worker draining ``--parts`` parts of 100 records (handler ``summaries``, concurrency 1,
    ``BATCHCTL_WRITERS=W``) to ``gs://`` through the proxy: parts per second (first pull to last ack);
  * the raw Storage client uploading the same result objects through the same proxy with W threads
    (``upload_from_string`` on a thread pool): objects per second: the pace the bucket allows W.
Plus the same handler returning nothing (no output): the pace without results.

Target: the worker at the default writers keeps >= 0.8 of the raw client's pace at as many threads.
The emulator serves one request at a time, 2 ms each when fresh and more as it holds more objects (it
rewrites an index of every object on each upload), so each drain and each raw loop gets a fresh one,
and beyond ~16 threads the emulator, not the latency, bounds both. One JSON line last.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  after the path setup above
from results_sink import BUCKET, drain, fresh_bucket, raw_upload, result_bodies  # noqa: E402

from batchctl.core.pubsub import PubSub  # noqa: E402
from batchctl.core.settings import Settings  # noqa: E402
from batchctl.worker.writer import REMOTE_WRITERS  # noqa: E402
from tests.support.parts import publish_batch  # noqa: E402

TARGET = 0.8


def drain_at(env: dict[str, str], batch_id: str, handler: str, output: str | None, writers: int) -> dict[str, float]:
    """``results_sink.drain`` with ``writers`` writer threads; its pace too (parts per second)."""
    drained = drain({**env, "BATCHCTL_WRITERS": str(writers)}, batch_id, handler, output)
    return {**drained, "parts_per_s": drained["parts"] / drained["drain_s"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=300)
    parser.add_argument("--delay-ms", type=float, default=25.0, help="held per chunk of the server's answers")
    parser.add_argument("--writers", default=f"4,{REMOTE_WRITERS}")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    counts = sorted({int(w) for w in args.writers.split(",")})
    data = [[{"id": p * 100 + i, "text": f"record {i} of part {p}: some words to count"} for i in range(100)]
            for p in range(args.parts)]
    bodies = result_bodies(data)
    worker: dict[int, list[dict[str, float]]] = {w: [] for w in counts}
    raw: dict[int, list[dict[str, float]]] = {w: [] for w in counts}
    baseline: list[dict[str, float]] = []
    trips: list[float] = []
    with common.emulator() as emu:
        env = common.bench_env(emu.host, common.prefix_for("lat"))
        pubsub = PubSub(Settings.from_env(env))
        pubsub.create_topic(pubsub.settings.names.events_topic, exist_ok=True)
        try:
            for n in range(args.runs):
                batch_id = f"lat-none-{n}-{os.getpid()}"
                publish_batch(pubsub, batch_id, data)
                baseline.append(drain_at(env, batch_id, "tests.support.handlers:summaries_dropped", None, 0))
                for w in counts:  # a fresh emulator each: its upload time grows with the objects it holds
                    batch_id = f"lat-{w}-{n}-{os.getpid()}"
                    publish_batch(pubsub, batch_id, data)
                    with fresh_bucket(env, answer_delay_s=args.delay_ms / 1000) as (way_env, _):
                        worker[w].append(drain_at(way_env, batch_id, "tests.support.handlers:summaries",
                                                  f"gs://{BUCKET}/{batch_id}/", w))
                    with fresh_bucket(env, answer_delay_s=args.delay_ms / 1000) as (_, storage):
                        raw[w].append(raw_upload(storage, bodies, f"raw-{batch_id}", threads=w))
                        trips.append(raw_upload(storage, bodies[:20], f"trip-{batch_id}")["seconds"] / 20)
        finally:
            common.cleanup_prefix(pubsub, pubsub.settings.prefix)
            pubsub.close()
    figures: dict[str, Any] = {"parts": args.parts, "delay_ms": args.delay_ms, "runs": args.runs, "target": TARGET,
                               "default_writers": REMOTE_WRITERS, "round_trip_ms": common.median(trips) * 1000,
                               "baseline_parts_per_s": common.median([b["parts_per_s"] for b in baseline])}
    common.say(f"results to a bucket {figures['round_trip_ms']:.0f} ms away (one upload alone, raw client), "
               f"{args.parts} parts x 100 records, median of {args.runs}; no output: "
               f"{figures['baseline_parts_per_s']:.0f} parts/s")
    for w in counts:
        pace = common.median([r["parts_per_s"] for r in worker[w]])
        bucket_pace = args.parts / common.median([r["seconds"] for r in raw[w]])
        cpu = common.median([r["drain_cpu_s"] for r in worker[w]]) / args.parts * 1e6
        figures[f"writers_{w}"] = {"parts_per_s": pace, "raw_objects_per_s": bucket_pace,
                                   "ratio": pace / bucket_pace, "cpu_per_part_us": cpu}
        common.say(f"  {w:>3} writers: worker {pace:6.0f} parts/s, raw client with {w} threads {bucket_pace:6.0f} "
                   f"objects/s: ratio {pace / bucket_pace:.2f}; worker CPU {cpu:.0f} us per part")
    default = figures.get(f"writers_{REMOTE_WRITERS}")
    figures["ratio_at_default"] = default["ratio"] if default else None
    common.final_json(figures)
    return 0 if default is None or default["ratio"] >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
