#!/usr/bin/env python3
"""What writing results costs a worker: the same handler returning its results (``--output``)
against returning nothing, same run, same parts.

    .venv/bin/python bench/results_sink.py [--parts 2000] [--gcs-parts 200] [--small-parts 20]
                                           [--records-per-part 100] [--runs 3] [--folder DIR]

Publishes ``--parts`` parts of ``--records-per-part`` JSON records, then drains identical
batches with ``python -m batchctl.worker`` (concurrency 1), alternating, ``--runs`` times each:
  * ``none``: handler ``tests.support.handlers:summaries_dropped`` (a digest and a word count per
    record, result thrown away), no output: the baseline;
  * ``local``: ``summaries`` (the same work, returned) with ``BATCHCTL_OUTPUT`` a local folder;
  * ``gcs``: the same with ``BATCHCTL_OUTPUT`` a ``gs://`` prefix on a Cloud Storage emulator
    started for this drain (``fresh_bucket``): one upload per part, on ``--gcs-parts`` parts
    (its costs are compared with a baseline drain of as many parts);
  * ``gcs-small``: the same on ``--small-parts`` parts: the storage client's start (built on the
    first write) taken out of gs://.
Per way, from the worker's ``worker_exited`` line: its CPU from the first part received to the last
ack (``drain_cpu_s``, the process's own count: no startup, no exit) and its drain time (the same
span); and the whole worker's CPU (``/usr/bin/time -v``) for context.

Cost = the worker's extra drain CPU per part / the baseline's drain CPU per part (target <= 10 %,
local sink): baseline ``none / parts``; a folder ``local / parts`` minus it; gs://
``(gcs - gcs-small) / (gcs-parts - small)`` minus it. Until 2026-12-05 the cost was the whole
worker's CPU against the baseline's, startup (~0.45 s, varying by tens of ms) included: that
understated a folder's cost 1.5x and gs://'s 5x (200 parts, mostly startup), and its noise was
hundreds of us per part; the folder's is still printed (``local_cpu_cost_total``).
For gs://, the same run also times the raw Storage client uploading the same result objects one
after another (``raw_upload``), compared with the worker's extra drain time: the emulator serves one
request at a time, a few ms each, and shares the cores with the worker (its writers overlap the
client's CPU with the emulator's, not two uploads). Likewise for the folder, the same
run times the sink's own file write right before each local drain (``raw_write``: open, write, close,
rename of the same result bodies into a fresh folder beside the worker's): what the file system charges
for a new file, which no worker change can remove. It varies 40-600 us per file on this machine's ext4
from one minute to the next (perf: allocating an inode, ext4 scans past recently deleted ones, for
~30 s after a mass delete anywhere on the disk), so each round pairs it with that round's drains, and
the worker's extra beyond it is printed too. Per part, it prints the baseline's CPU and each sink's
extra CPU, and from them the handler CPU per part at which the extra would be 10 %. ``--folder`` puts
the local results (and the raw writes) under DIR instead of the system's temporary folder. One JSON
line last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  after the path setup above

from batchctl.core.pubsub import PubSub  # noqa: E402
from batchctl.core.settings import Settings  # noqa: E402
from batchctl.core.storage import EMULATOR_VAR, Storage  # noqa: E402
from tests.support.gcs import StorageEmulator  # noqa: E402
from tests.support.parts import publish_batch  # noqa: E402
from tests.support.proxy import FaultProxy  # noqa: E402

COST_TARGET = 0.10
BUCKET = "bench-results-sink"
WAYS = ("none", "local", "gcs", "gcs-small")


def drain(env: dict[str, str], batch_id: str, handler: str, output: str | None) -> dict[str, float]:
    cmd = [sys.executable, "-m", "batchctl.worker", "--batch-id", batch_id, "--handler", handler]
    run_env = {**env, **({"BATCHCTL_OUTPUT": output} if output else {})}
    measured = common.run_measured(cmd, env=run_env, timeout=600)
    if measured.returncode != 0:
        raise SystemExit(f"worker exited {measured.returncode}:\n{measured.stderr[-2000:]}")
    final = json.loads([line for line in measured.stderr.splitlines() if '"worker_exited"' in line][-1])
    return {"parts": final["parts_done"], "cpu_s": measured.cpu_s, "drain_cpu_s": final["drain_cpu_s"],
            "drain_s": final["last_ack_at"] - final["first_pull_at"]}


def result_bodies(data: list[list[dict[str, Any]]]) -> list[bytes]:
    """The result object of each part, as the worker writes it."""
    from types import SimpleNamespace

    from batchctl.worker.results import encode, outcome
    from tests.support.handlers import summaries

    return [encode(outcome(summaries(SimpleNamespace(records=records))))[0] for records in data]


def raw_write(bodies: list[bytes], folder: str) -> dict[str, float]:
    """The sink's own file write of the same result objects into a fresh folder: (seconds, CPU seconds)."""
    from batchctl.core.sink import part_name, write_bytes_atomically

    os.makedirs(folder)
    started, cpu = time.perf_counter(), time.process_time()
    for index, body in enumerate(bodies):
        write_bytes_atomically(folder, part_name(index), body)
    return {"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}


@contextmanager
def fresh_bucket(env: dict[str, str], *, answer_delay_s: float = 0.0) -> Iterator[tuple[dict[str, str], Storage]]:
    """A Cloud Storage emulator of its own holding one empty bucket: ``env`` pointing at it, a client.
    With ``answer_delay_s``, both reach it through a ``FaultProxy`` holding each of its answers that long
    (a far bucket's latency: ``bench/results_latency.py``).

    The emulator rewrites one JSON file naming every object it ever held on each upload (deleting
    objects does not help), so its upload time grows with its history: 1.9 ms per upload fresh,
    21 ms after 800 uploads, 36 ms once those are deleted. A fresh one for each gs:// drain and
    each raw loop measures the worker and the client, not the emulator's history."""
    emulator = StorageEmulator.start(log_dir=Path(tempfile.gettempdir()))
    proxy = FaultProxy(emulator.host).start() if answer_delay_s else None
    way_env = {**env, EMULATOR_VAR: proxy.address if proxy else emulator.host}
    storage = Storage(way_env)
    try:
        storage.client.create_bucket(BUCKET)
        if proxy:
            proxy.delay(answer_delay_s, answers_only=True)
        yield way_env, storage
    finally:
        storage.close()
        if proxy:
            proxy.stop()
        emulator.stop()


def raw_upload(storage: Storage, bodies: list[bytes], prefix: str, *, threads: int = 1) -> dict[str, float]:
    """The raw client uploading the same result objects, one after another or on ``threads`` threads:
    (seconds, CPU seconds)."""
    bucket = storage.client.bucket(BUCKET)

    def one(index: int) -> None:
        bucket.blob(f"{prefix}/part-{index:06d}.jsonl").upload_from_string(bodies[index],
                                                                             content_type="application/x-ndjson")

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(bodies))))
    return {"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=2000)
    parser.add_argument("--gcs-parts", type=int, default=200)
    parser.add_argument("--small-parts", type=int, default=20, help="parts of the startup drains")
    parser.add_argument("--records-per-part", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--folder", default=None, help="where local results go (default: a temporary folder)")
    args = parser.parse_args()
    data = [[{"id": p * args.records_per_part + i, "text": f"record {i} of part {p}: some words to count"}
             for i in range(args.records_per_part)] for p in range(args.parts)]
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    uploads: list[dict[str, float]] = []
    writes: list[dict[str, float]] = []
    bodies = result_bodies(data)
    with common.emulator() as emu, tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        env = common.bench_env(emu.host, common.prefix_for("sink"))
        pubsub = PubSub(Settings.from_env(env))
        pubsub.create_topic(pubsub.settings.names.events_topic, exist_ok=True)
        try:
            for n in range(args.runs + 1):  # the first round warms up the emulator and is not counted
                for way in WAYS:
                    batch_id = f"sink-{way}-{n}-{os.getpid()}"
                    size = {"none": args.parts, "local": args.parts, "gcs": args.gcs_parts}.get(way, args.small_parts)
                    publish_batch(pubsub, batch_id, data[:size])
                    output = {"local": f"{tmp}/{batch_id}", "gcs": f"gs://{BUCKET}/{batch_id}/",
                              "gcs-small": f"gs://{BUCKET}/{batch_id}/"}.get(way)
                    handler = "tests.support.handlers:" + ("summaries_dropped" if output is None else "summaries")
                    remote = way.startswith("gcs")
                    if n and way == "local":  # the file system's charge right before the worker's, same state
                        writes.append(raw_write(bodies, f"{tmp}/raw-{n}"))
                    with fresh_bucket(env) if remote else nullcontext((env, None)) as (way_env, _):
                        drained = drain(way_env, batch_id, handler, output)
                    if n:
                        runs[way].append(drained)
                if n:
                    with fresh_bucket(env) as (_, storage):
                        uploads.append(raw_upload(storage, bodies[: args.gcs_parts], f"raw-{n}"))
        finally:
            common.cleanup_prefix(pubsub, pubsub.settings.prefix)
            pubsub.close()
    med = {way: {k: common.median([r[k] for r in rs]) for k in ("cpu_s", "drain_cpu_s", "drain_s")}
           for way, rs in runs.items()}
    figures = figures_of(med, uploads, writes, args)
    figures["cpu_per_part_us"]["local_beyond_fs"] = common.median([  # per round: the worker's own part of it
        (local["drain_cpu_s"] - none["drain_cpu_s"] - raw["cpu_s"]) / args.parts * 1e6
        for local, none, raw in zip(runs["local"], runs["none"], writes, strict=True)])
    per_part = figures["cpu_per_part_us"]
    figures["local_cpu_cost_beyond_fs"] = per_part["local_beyond_fs"] / per_part["baseline"]
    say(figures, med, args)
    return 0 if figures["local_cpu_cost"] <= COST_TARGET else 1


def figures_of(med: dict[str, dict[str, float]], uploads: list[dict[str, float]], writes: list[dict[str, float]],
               args: argparse.Namespace) -> dict[str, Any]:
    """The bench's figures from the medians of each way's drains and of the raw loops."""
    # the baseline drain of as many parts as each sink's: the gs:// one scaled from ``none`` (drain time
    # is first pull to last ack, so it holds no startup)
    scale = args.gcs_parts / args.parts
    bases = {"local": med["none"], "gcs": {"drain_s": med["none"]["drain_s"] * scale}}
    cpu = {way: med[way]["drain_cpu_s"] for way in WAYS}
    figures: dict[str, Any] = {"parts": args.parts, "gcs_parts": args.gcs_parts, "small_parts": args.small_parts,
                               "records_per_part": args.records_per_part, "runs": args.runs,
                               "cost_target": COST_TARGET, **{way: med[way] for way in WAYS}}
    figures["raw_upload"] = {k: common.median([u[k] for u in uploads]) for k in ("seconds", "cpu_s")}
    figures["raw_write"] = {k: common.median([w[k] for w in writes]) for k in ("seconds", "cpu_s")}
    baseline = cpu["none"] / args.parts
    per_part = {  # microseconds of worker CPU per part, first part received to last ack
        "baseline": baseline * 1e6,
        "local_extra": (cpu["local"] / args.parts - baseline) * 1e6,
        "gcs_extra": ((cpu["gcs"] - cpu["gcs-small"]) / max(1, args.gcs_parts - args.small_parts) - baseline) * 1e6,
        "raw_write": figures["raw_write"]["cpu_s"] / args.parts * 1e6,
        "raw_upload": figures["raw_upload"]["cpu_s"] / args.gcs_parts * 1e6,
    }
    figures["cpu_per_part_us"] = per_part
    for way in ("local", "gcs"):
        figures[f"{way}_cpu_cost"] = per_part[f"{way}_extra"] / per_part["baseline"]
        figures[f"{way}_drain_cost"] = med[way]["drain_s"] / bases[way]["drain_s"] - 1
    figures["local_cpu_cost_total"] = med["local"]["cpu_s"] / med["none"]["cpu_s"] - 1
    extra_drain = med["gcs"]["drain_s"] - bases["gcs"]["drain_s"]
    figures["gcs_extra_drain_vs_raw_upload"] = figures["raw_upload"]["seconds"] / extra_drain if extra_drain > 0 else 0
    return figures


def say(figures: dict[str, Any], med: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    per_part = figures["cpu_per_part_us"]
    common.say(f"results sink, {args.parts} parts x {args.records_per_part} records, worker concurrency 1, "
               f"median of {args.runs}")
    for way in WAYS:
        extra = "" if way.startswith("none") or way.endswith("small") else (
            f"   cost: CPU per part {figures[f'{way}_cpu_cost']:+.1%}, drain {figures[f'{way}_drain_cost']:+.1%}")
        common.say(f"  {way:<10} worker CPU {med[way]['cpu_s']:6.2f} s (draining {med[way]['drain_cpu_s']:6.3f} s), "
                   f"drain {med[way]['drain_s']:6.2f} s{extra}")
    raw = figures["raw_upload"]
    common.say(f"  raw client, the same {args.gcs_parts} objects uploaded in a loop: {raw['seconds']:.2f} s "
               f"({raw['seconds'] / args.gcs_parts * 1000:.0f} ms, "
               f"{raw['cpu_s'] / args.gcs_parts * 1000:.1f} ms CPU each); "
               f"raw upload time / gcs extra drain time = {figures['gcs_extra_drain_vs_raw_upload']:.2f}")
    common.say(f"  the sink's own file write, the same {args.parts} objects into a fresh folder (right before each "
               f"local drain): {figures['raw_write']['seconds']:.2f} s, {per_part['raw_write']:.0f} us CPU each; the "
               f"worker's extra beyond it {per_part['local_beyond_fs']:.0f} us per part "
               f"({figures['local_cpu_cost_beyond_fs']:+.1%})")
    common.say(f"  worker CPU per part: baseline {per_part['baseline']:.0f} us (while draining); extra to a folder "
               f"{per_part['local_extra']:.0f} us, to gs:// {per_part['gcs_extra']:.0f} us: 10 % of a handler's "
               f"{per_part['local_extra'] * 10 / 1000:.1f} ms / {per_part['gcs_extra'] * 10 / 1000:.1f} ms per part")
    common.say(f"  (the whole local drain's CPU against the baseline's, startup in, as reported until 2026-12-05: "
               f"{figures['local_cpu_cost_total']:+.1%})")
    common.final_json(figures)


if __name__ == "__main__":
    sys.exit(main())
