#!/usr/bin/env python3
"""``submit gs://`` against the raw clients doing the same with the same bytes, same run.

    .venv/bin/python bench/gcs_source.py [--records 300000] [--objects 3] [--runs 3]

Uploads ``--records`` JSONL records (~90 B) as ``--objects`` objects to the real Cloud Storage
emulator (``$STORAGE_EMULATOR_HOST``, or ``gcp-storage-emulator`` started here), then,
alternating, ``--runs`` times each (median reported):
  * ``batchctl``: ``submit(["gs://bucket/in/"])`` in-process: list, plan pass (streamed
    ranged reads, records validated and cut, stored bytes spooled to local disk), create the
    batch, publish pass from the spool, request;
  * ``raw``: the official Storage client downloads every object (``Blob.download_to_file``)
    to a local file, then ``split_publish.run_raw`` publishes it: the plain PublisherClient
    loop of the split+publish bench. Ratio = raw time / batchctl time (target >= 0.8).
Context, same run: the input path alone (batchctl's two passes without publishing against the
raw download alone: validation and cutting cost CPU the raw download does not do), how many
times each object is opened (downloads: the design says once), and the peak Python
allocation (tracemalloc) of the input path over one object against all of them (memory must
not grow with the input). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  after the path setup above
import split_publish  # noqa: E402

from batchctl.core import topology  # noqa: E402
from batchctl.core.pubsub import PubSub  # noqa: E402
from batchctl.core.settings import Settings  # noqa: E402
from batchctl.core.storage import EMULATOR_VAR, Storage  # noqa: E402
from batchctl.splitter import partitioner, readers, remote  # noqa: E402
from batchctl.splitter.partitioner import PartLimits  # noqa: E402
from batchctl.splitter.submit import SubmitOptions, submit  # noqa: E402
from tests.support.gcs import StorageEmulator  # noqa: E402

RATIO_TARGET = 0.8
BUCKET = "bench-gcs-source"


@contextmanager
def storage_host() -> Iterator[str]:
    existing = os.environ.get(EMULATOR_VAR)
    if existing:
        yield existing
        return
    emulator = StorageEmulator.start(log_dir=Path(tempfile.gettempdir()))
    try:
        yield emulator.host
    finally:
        emulator.stop()


class Discard:
    def write(self, data: bytes) -> int:
        return len(data)


def upload(storage: Storage, records: int, objects: int) -> tuple[list[str], float]:
    """``objects`` JSONL objects holding ``records`` records in all; their names and size in MB."""
    storage.client.create_bucket(BUCKET)
    per = records // objects
    names, size = [], 0
    for n in range(objects):
        body = b"".join(b'{"id": %d, "text": "record %d of the gs:// source bench", "score": %d.5}\n' % (i, i, i % 97)
                        for i in range(n * per, (n + 1) * per))
        name = f"in/{n:03d}.jsonl"
        storage.write(f"gs://{BUCKET}/{name}", body)
        names.append(name)
        size += len(body)
    return names, size / 1e6


def raw_read(storage: Storage, names: list[str]) -> float:
    started = time.perf_counter()
    bucket = storage.client.bucket(BUCKET)
    for name in names:
        bucket.blob(name).download_to_file(Discard())
    return time.perf_counter() - started


def batchctl_read(storage: Storage, url: str, limits: PartLimits) -> tuple[float, int, int]:
    """submit's gs:// input path without publishing: (seconds, parts, objects opened)."""
    opened = 0
    real_open = storage.open

    def counting_open(obj: Any) -> Any:
        nonlocal opened
        opened += 1
        return real_open(obj)

    storage.open = counting_open  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        with ExitStack() as stack:
            inputs = remote.RemoteInputs(storage, Path(stack.enter_context(remote.spool_dir())))
            stack.callback(inputs.close)
            sources = readers.expand([url], None, remote=inputs.expand)
            blocks = readers.record_blocks(sources, max_record_bytes=limits.max_part_bytes, opener=inputs.open)
            cut = partitioner.plan(blocks, limits)
            spooled = inputs.spooled(sources)
            again = readers.record_blocks(spooled, max_record_bytes=limits.max_part_bytes, validate=False)
            parts = sum(1 for _ in partitioner.build(again, cut))
    finally:
        storage.open = real_open  # type: ignore[method-assign]
    return time.perf_counter() - started, parts, opened


def peak_alloc_mb(storage: Storage, url: str, limits: PartLimits) -> float:
    tracemalloc.start()
    try:
        batchctl_read(storage, url, limits)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def run_batchctl(pubsub: PubSub, storage: Storage, limits: PartLimits, batch_id: str) -> float:
    started = time.perf_counter()
    submit(pubsub, SubmitOptions([f"gs://{BUCKET}/in/"], batch_id=batch_id, limits=limits), storage=storage)
    seconds = time.perf_counter() - started
    topology.delete_batch(pubsub, batch_id)  # the emulator keeps every message: free it between runs
    return seconds


def run_raw(pubsub: PubSub, storage: Storage, names: list[str], workdir: Path, name: str) -> float:
    started = time.perf_counter()
    local = workdir / f"{name}.jsonl"
    bucket = storage.client.bucket(BUCKET)
    with local.open("wb") as out:
        for obj in names:
            bucket.blob(obj).download_to_file(out)
    split_publish.run_raw(pubsub, local, name)
    seconds = time.perf_counter() - started
    local.unlink()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    limits = PartLimits(split_publish.RECORDS_PER_PART)
    with common.emulator() as pubsub_emulator, storage_host() as host, tempfile.TemporaryDirectory() as tmp:
        env = common.bench_env(pubsub_emulator.host, common.prefix_for("gcs"), **{EMULATOR_VAR: host})
        storage = Storage(env)
        pubsub = PubSub(Settings.from_env(env))
        names, mb = upload(storage, args.records, args.objects)
        url = f"gs://{BUCKET}/in/"
        sub_raw, sub_ours, read_raw, read_ours, parts, opened = [], [], [], [], 0, 0
        run_raw(pubsub, storage, names, Path(tmp), "warm")
        try:
            for n in range(args.runs):
                sub_raw.append(run_raw(pubsub, storage, names, Path(tmp), f"raw{n}"))
                sub_ours.append(run_batchctl(pubsub, storage, limits, f"gs{n}"))
                read_raw.append(raw_read(storage, names))
                seconds, parts, opened = batchctl_read(storage, url, limits)
                read_ours.append(seconds)
            one = peak_alloc_mb(storage, f"gs://{BUCKET}/{names[0]}", limits)
            every = peak_alloc_mb(storage, url, limits)
        finally:
            common.cleanup_prefix(pubsub, pubsub.settings.prefix)
            pubsub.close()
    raw, ours = common.median(sub_raw), common.median(sub_ours)
    r_raw, r_ours = common.median(read_raw), common.median(read_ours)
    figures = {
        "records": args.records, "objects": args.objects, "mb": round(mb, 1), "runs": args.runs, "parts": parts,
        "raw_s": raw, "batchctl_s": ours, "raw_records_per_s": args.records / raw,
        "batchctl_records_per_s": args.records / ours, "ratio": raw / ours, "ratio_target": RATIO_TARGET,
        "read_raw_s": r_raw, "read_batchctl_s": r_ours, "read_ratio": r_raw / r_ours,
        "opens_per_object": opened / args.objects,
        "peak_alloc_one_object_mb": one, "peak_alloc_all_objects_mb": every,
    }
    common.say(f"gs:// source, {args.records:,} records in {args.objects} objects ({mb:.1f} MB), median of {args.runs}")
    common.say(f"  submit gs://, batchctl                 {ours:6.2f} s  {args.records / ours:10,.0f} records/s")
    common.say(f"  raw download + raw publish loop        {raw:6.2f} s  {args.records / raw:10,.0f} records/s")
    common.say(f"  ratio batchctl / raw                   {raw / ours:6.2f}   (target >= {RATIO_TARGET})")
    common.say(f"  input path alone: batchctl {r_ours:.2f} s (2 passes, validated) vs raw download {r_raw:.2f} s "
               f"= {r_raw / r_ours:.2f}")
    common.say(f"  downloads per object                   {opened / args.objects:.0f}")
    common.say(f"  peak Python allocation (input path)    {one:.1f} MB for one object, {every:.1f} MB for all "
               f"{args.objects}")
    common.final_json(figures)
    return 0 if raw / ours >= RATIO_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
