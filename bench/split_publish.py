"""Split + publish through batchctl vs a plain loop over the official publisher, same run, same data.

    .venv/bin/python bench/split_publish.py [--records 200000] [--runs 3] [--rss-mb 1024] [--quick]

1. Generates ``--records`` small JSONL records (~100 B) into a temp file.
2. Alternating, ``--runs`` times each, median reported:
   * ``batchctl``: ``splitter.submit.submit`` in-process (read, validate, plan the cut at 100
     records per part; then check Pub/Sub, create the batch's 2 topics + 2 subscriptions, read
     again, hash and publish every part and await it, send the batch request);
   * ``raw``: a plain loop over ``google.cloud.pubsub_v1.PublisherClient`` with batchctl's own
     BatchSettings and publisher flow control: create a topic and a subscription, read the file,
     join every 100 lines into one message (same bytes per message), publish with a ``part``
     attribute, await every future.
   * ``raw-bulk``: the same read, but the messages go straight into publish requests of the
     client's API layer (the ``publish`` that the batching ``PublisherClient`` overrides; 100
     messages per request, 4 requests in flight), as batchctl's own publisher does: the
     stricter baseline, reported as context.
   records/s of each and the ratios batchctl/raw (target >= 0.9) and batchctl/raw-bulk.
3. Peak RSS of ``batchctl submit`` as a subprocess on a ~``--rss-mb`` MB input of ~200 B records
   (target < 200 MB), measured with ``/usr/bin/time -v`` (else getrusage of children).
Uses $PUBSUB_EMULATOR_HOST, or starts an emulator of its own. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    bench_env,
    cleanup_prefix,
    emulator,
    final_json,
    median,
    prefix_for,
    run_measured,
    say,
)

from batchctl.core import logs, topology
from batchctl.core.pubsub import PubSub, SubscriptionSpec
from batchctl.core.settings import Settings
from batchctl.splitter import partitioner, readers
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.publisher import publish_parts
from batchctl.splitter.submit import SubmitOptions, submit

RATIO_TARGET = 0.9
RSS_TARGET_MB = 200.0
RECORDS_PER_PART = 100
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt " * 4


def generate(path: Path, records: int, record_bytes: int) -> int:
    """Stream ``records`` JSONL records of about ``record_bytes`` bytes to ``path``; returns bytes written."""
    written = 0
    with path.open("w", encoding="utf-8") as out:
        chunk: list[str] = []
        for i in range(records):
            head = f'{{"id":{i},"user":"user-{i % 9973}","score":{(i * 7919) % 1000 / 10},"text":"'
            pad = max(1, record_bytes - len(head) - 3)
            chunk.append(head + FILLER[:pad] + '"}\n')
            if len(chunk) >= 10_000:
                block = "".join(chunk)
                out.write(block)
                written += len(block)
                chunk = []
        block = "".join(chunk)
        out.write(block)
        written += len(block)
    return written


def run_batchctl(pubsub: PubSub, path: Path, batch_id: str) -> dict[str, float]:
    started = time.monotonic()
    result = submit(pubsub, SubmitOptions([str(path)], batch_id=batch_id, limits=PartLimits(RECORDS_PER_PART)))
    seconds = time.monotonic() - started
    topology.delete_batch(pubsub, batch_id)  # the emulator keeps every message: free it between runs
    return {"records": result.records, "parts": result.parts, "seconds": seconds}


def raw_chunks(path: Path) -> Iterator[tuple[bytes, int]]:
    """The raw loops' read: every ``RECORDS_PER_PART`` lines joined into one message (and its line count)."""
    with path.open("rb") as src:
        lines: list[bytes] = []
        for line in src:
            lines.append(line.rstrip(b"\n"))
            if len(lines) == RECORDS_PER_PART:
                yield b"\n".join(lines), len(lines)
                lines = []
        if lines:
            yield b"\n".join(lines), len(lines)


def create_raw_topic(pubsub: PubSub, name: str) -> str:
    """A bare topic and subscription, as a plain loop would create them; returns the topic path."""
    topic = pubsub.topic_path(name)
    pubsub.publisher.create_topic(request={"name": topic})
    pubsub.subscriber.create_subscription(request={"name": pubsub.subscription_path(name), "topic": topic})
    return topic


def delete_raw_topic(pubsub: PubSub, name: str) -> None:
    pubsub.delete_subscription(name)
    pubsub.delete_topic(name)


def run_raw(pubsub: PubSub, path: Path, name: str) -> dict[str, float]:
    """The plain loop: the official PublisherClient with batchctl's batch settings and flow control."""
    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1 import types

    # Same settings object batchctl builds (its private fields, read here so the two cannot drift).
    client = pubsub_v1.PublisherClient(
        batch_settings=pubsub._batch, publisher_options=types.PublisherOptions(flow_control=pubsub._flow)
    )
    started = time.monotonic()
    topic = create_raw_topic(pubsub, name)
    futures = []
    records = parts = 0
    for chunk, lines in raw_chunks(path):
        futures.append(client.publish(topic, chunk, part=str(parts)))
        records, parts = records + lines, parts + 1
    for future in futures:
        future.result(timeout=120)
    seconds = time.monotonic() - started
    client.stop()
    delete_raw_topic(pubsub, name)
    return {"records": records, "parts": parts, "seconds": seconds}


def run_raw_bulk(pubsub: PubSub, path: Path, name: str) -> dict[str, float]:
    """The plain loop over the API layer: 100 messages per publish request, 4 requests in flight."""
    from concurrent.futures import ThreadPoolExecutor

    from google.pubsub_v1.services.publisher.client import PublisherClient as ApiPublisherClient
    from google.pubsub_v1.types import PublishRequest

    def send(request: Any) -> Any:  # the batching client overrides publish; this is the API layer's
        return ApiPublisherClient.publish(pubsub.publisher, request=PublishRequest.wrap(request))

    started = time.monotonic()
    topic = create_raw_topic(pubsub, name)
    futures: list[Any] = []
    records = parts = 0
    with ThreadPoolExecutor(4) as pool:
        request = PublishRequest.pb()(topic=topic)
        for chunk, lines in raw_chunks(path):
            message = request.messages.add()
            message.data, message.attributes["part"] = chunk, str(parts)
            records, parts = records + lines, parts + 1
            if len(request.messages) == 100:
                if len(futures) >= 4:
                    futures.pop(0).result(timeout=120)
                futures.append(pool.submit(send, request))
                request = PublishRequest.pb()(topic=topic)
        if request.messages:
            futures.append(pool.submit(send, request))
        for future in futures:
            future.result(timeout=120)
    seconds = time.monotonic() - started
    delete_raw_topic(pubsub, name)
    return {"records": records, "parts": parts, "seconds": seconds}


def throughput(pubsub: PubSub, path: Path, runs: int) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {"raw": [], "raw-bulk": [], "batchctl": []}
    # A warm-up publish so neither side pays for the first channel and the emulator's JIT.
    warm = path.with_name("warm.jsonl")
    generate(warm, 2000, 100)
    run_raw(pubsub, warm, f"{pubsub.settings.prefix}-raw-warm")
    run_raw_bulk(pubsub, warm, f"{pubsub.settings.prefix}-bulk-warm")
    run_batchctl(pubsub, warm, "bench-warm")
    ways = ("raw", "raw-bulk", "batchctl")
    for i in range(runs):
        for way in ways[i % 3 :] + ways[: i % 3]:  # rotate the order so no way always goes first
            if way == "raw":
                figures = run_raw(pubsub, path, f"{pubsub.settings.prefix}-raw-{i}")
            elif way == "raw-bulk":
                figures = run_raw_bulk(pubsub, path, f"{pubsub.settings.prefix}-bulk-{i}")
            else:
                figures = run_batchctl(pubsub, path, f"bench-bc-{i}")
            figures["records_per_s"] = figures["records"] / figures["seconds"]
            results[way].append(figures)
            say(
                f"  run {i + 1}/{runs} {way:<9} {figures['records']:>8.0f} records  {figures['parts']:>6.0f} parts  "
                f"{figures['seconds']:6.2f} s  {figures['records_per_s']:9.0f} records/s"
            )
    raw = median([r["records_per_s"] for r in results["raw"]])
    bulk = median([r["records_per_s"] for r in results["raw-bulk"]])
    ours = median([r["records_per_s"] for r in results["batchctl"]])
    return {
        "raw_records_per_s": raw,
        "raw_bulk_records_per_s": bulk,
        "batchctl_records_per_s": ours,
        "ratio": ours / raw,
        "ratio_vs_bulk": ours / bulk,
        "runs": results,
    }


def breakdown(pubsub: PubSub, path: Path) -> dict[str, float]:
    """Where the time goes, once each: batchctl's plan pass (read, validate, cut) and its
    publish pass (read again, hash, publish), vs the raw loop's read+chunk and its publish of chunks held in memory."""
    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1 import types

    limits = PartLimits(RECORDS_PER_PART)
    figures: dict[str, float] = {}
    started = time.monotonic()
    sources = readers.expand([str(path)], None)
    cut = partitioner.plan(readers.record_blocks(sources, max_record_bytes=limits.max_part_bytes), limits)
    figures["batchctl_split_s"] = time.monotonic() - started
    topic = f"{pubsub.settings.prefix}-split-only"
    pubsub.create_topic(topic, exist_ok=True)
    pubsub.create_subscription(topic, topic, SubscriptionSpec(), exist_ok=True)
    started = time.monotonic()
    blocks = readers.record_blocks(sources, max_record_bytes=limits.max_part_bytes, validate=False)
    publish_parts(pubsub, topic, partitioner.build(blocks, cut), total=len(cut), batch_id="bench-split", fmt="jsonl")
    figures["batchctl_publish_s"] = time.monotonic() - started
    pubsub.delete_subscription(topic)
    pubsub.delete_topic(topic)
    started = time.monotonic()
    chunks = [chunk for chunk, _ in raw_chunks(path)]
    figures["raw_read_s"] = time.monotonic() - started
    client = pubsub_v1.PublisherClient(
        batch_settings=pubsub._batch, publisher_options=types.PublisherOptions(flow_control=pubsub._flow)
    )
    name = f"{pubsub.settings.prefix}-raw-only"
    topic = create_raw_topic(pubsub, name)
    started = time.monotonic()
    futures = [client.publish(topic, chunk, part=str(i)) for i, chunk in enumerate(chunks)]
    for future in futures:
        future.result(timeout=120)
    figures["raw_publish_s"] = time.monotonic() - started
    client.stop()
    delete_raw_topic(pubsub, name)
    say(
        "  breakdown: batchctl split {batchctl_split_s:.2f} s + publish {batchctl_publish_s:.2f} s; "
        "raw read {raw_read_s:.2f} s + publish {raw_publish_s:.2f} s".format(**figures)
    )
    return figures


def peak_rss(env: dict[str, str], workdir: Path, megabytes: int, timeout: float) -> dict[str, Any]:
    record_bytes = 200
    records = megabytes * 1024 * 1024 // record_bytes
    big = workdir / "big.jsonl"
    started = time.monotonic()
    size = generate(big, records, record_bytes)
    generated_s = time.monotonic() - started
    say(f"  generated {size / 1e6:.0f} MB ({records} records) in {generated_s:.1f} s")
    batch_id = "bench-rss"
    cmd = [
        sys.executable,
        "-m",
        "batchctl",
        "submit",
        str(big),
        "--batch-id",
        batch_id,
        "--records-per-part",
        str(RECORDS_PER_PART),
        "--json",
    ]
    # A stdin copy (none here) would go to TMPDIR: keep it in the bench's folder so it is removed with it.
    measured = run_measured(cmd, env={**env, "TMPDIR": str(workdir)}, timeout=timeout)
    big.unlink()
    if measured.returncode != 0:
        raise SystemExit(f"batchctl submit exited {measured.returncode}:\n{measured.stderr[-2000:]}")
    pubsub = PubSub(Settings.from_env(env))
    topology.delete_batch(pubsub, batch_id)
    pubsub.close()
    say(
        f"  batchctl submit of {size / 1e6:.0f} MB: peak RSS {measured.peak_rss_mb:.0f} MB "
        f"(target < {RSS_TARGET_MB:.0f}), {measured.seconds:.1f} s wall, {measured.cpu_s:.1f} s CPU, "
        f"{records / measured.seconds:.0f} records/s [{measured.how}]"
    )
    return {
        "input_mb": size / 1e6,
        "records": records,
        "peak_rss_mb": measured.peak_rss_mb,
        "seconds": measured.seconds,
        "cpu_s": measured.cpu_s,
        "measured_with": measured.how,
        "records_per_s": records / measured.seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rss-mb", type=int, default=1024, help="size of the peak-RSS input (MB)")
    parser.add_argument("--quick", action="store_true", help="2 runs, 100 MB RSS input")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rss_mb = min(args.runs, 2), min(args.rss_mb, 100)
    args.records = max(args.records, 1)
    logs.configure(level="WARNING")
    prefix = prefix_for("sp")
    with emulator() as emu, tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        env = bench_env(emu.host, prefix, BATCHCTL_LOG_LEVEL="WARNING")
        pubsub = PubSub(Settings.from_env(env))
        path = Path(tmp) / "records.jsonl"
        size = generate(path, args.records, 100)
        say(
            f"split_publish: {args.records} records, {size / 1e6:.1f} MB, {RECORDS_PER_PART} records/part, "
            f"batch settings {pubsub._batch}, flow control {pubsub._flow}"
        )
        try:
            figures = throughput(pubsub, path, args.runs)
            say(
                f"  median: raw {figures['raw_records_per_s']:.0f} records/s, raw-bulk "
                f"{figures['raw_bulk_records_per_s']:.0f} records/s, batchctl "
                f"{figures['batchctl_records_per_s']:.0f} records/s; ratio {figures['ratio']:.2f} "
                f"(target >= {RATIO_TARGET}), vs raw-bulk {figures['ratio_vs_bulk']:.2f}"
            )
            figures["breakdown"] = breakdown(pubsub, path)
            rss = peak_rss(env, Path(tmp), args.rss_mb, timeout=900)
        finally:
            cleanup_prefix(pubsub, prefix)
            pubsub.close()
    ok = figures["ratio"] >= RATIO_TARGET and rss["peak_rss_mb"] < RSS_TARGET_MB
    final_json(
        {
            "bench": "split_publish",
            "ok": ok,
            "records": args.records,
            "input_mb": size / 1e6,
            "records_per_part": RECORDS_PER_PART,
            "ratio_target": RATIO_TARGET,
            "rss_target_mb": RSS_TARGET_MB,
            **figures,
            "submit_rss": rss,
        }
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
