"""End to end on the local backend: submit → launcher → N worker processes → batch succeeded.

    .venv/bin/python bench/e2e_throughput.py [--records 1000000] [--workers 1,2,4] [--handler noop|demo] [--quick]
        [--records-per-part 100]

For each worker count N, a fresh batch of the same ``--records`` small JSONL records (~100 B,
100 per part) is submitted in-process (``splitter.submit.submit``) to an in-process launcher on
the local backend (``tests.support.launching.running_launcher``, the test tuning: 0.1 s tick) with
``max_parallelism=N``; workers are ``python -m batchctl worker`` processes with the test
suite's fast drain settings (``fast_worker_env``) and the product's default concurrency unless
``--concurrency`` is given. The handler is a no-op (``tests.support.handlers:noop``: measures
batchctl, not the handler) unless ``--handler demo`` (``worker.demo:handle``: hashes every
record and writes one fsynced result file per part).

records/s = records / (submit start → batch state ``succeeded`` in the store); also the submit
and the drain phases apart, and CPU seconds of the emulator's JVM, of this process (submit +
launcher) and of the worker processes, against the machine's cores, to say what limits it.
Uses $PUBSUB_EMULATOR_HOST, or starts an emulator of its own. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    bench_env,
    children_cpu_s,
    cleanup_prefix,
    cpu_seconds,
    emulator,
    final_json,
    machine_cpu,
    prefix_for,
    say,
    self_cpu_s,
    wait_until,
)
from split_publish import generate

from batchctl.core import logs
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher.state import SUCCEEDED, TERMINAL
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.submit import SubmitOptions, submit
from tests.support.launching import fast_worker_env, running_launcher

HANDLERS = {"noop": "tests.support.handlers:noop", "demo": "batchctl.worker.demo:handle"}
RECORDS_PER_PART = 100
PARTS_PER_WORKER = 10


def one_run(
    *,
    host: str,
    prefix: str,
    path: Path,
    records: int,
    workers: int,
    handler: str,
    concurrency: int | None,
    workdir: Path,
    java_pid: int | None,
    timeout: float,
    records_per_part: int = RECORDS_PER_PART,
) -> dict[str, Any]:
    state = workdir / f"state-{workers}"
    extra = {"BATCHCTL_BACKEND": "local", "BATCHCTL_STATE_DIR": str(state)}
    env = bench_env(host, prefix, **extra)
    settings = Settings.from_env(env)
    pubsub = PubSub(settings)
    worker_env = fast_worker_env(workdir / f"results-{workers}")
    worker_env["BATCHCTL_LOG_LEVEL"] = "WARNING"
    if concurrency:
        worker_env["BATCHCTL_CONCURRENCY"] = str(concurrency)
    batch_id = f"e2e-w{workers}"
    try:
        with running_launcher(settings, pubsub, worker_env=worker_env) as run:
            cpu0 = {
                "emulator": cpu_seconds(java_pid) if java_pid else 0.0,
                "bench": self_cpu_s(),
                "workers": children_cpu_s(),
            }
            busy0, total0 = machine_cpu()
            t0 = time.monotonic()
            submitted = submit(
                pubsub,
                SubmitOptions(
                    [str(path)],
                    batch_id=batch_id,
                    limits=PartLimits(records_per_part),
                    handler=handler,
                    parts_per_worker=PARTS_PER_WORKER,
                    max_parallelism=workers,
                ),
            )
            t_submitted = time.monotonic()

            def finished() -> Any:
                batch = run.parts.store.load(batch_id)
                return batch if batch is not None and batch.state in TERMINAL else None

            batch = wait_until(finished, timeout=timeout, interval=0.05, what=f"{batch_id} to finish")
            t_done = time.monotonic()
            cpu_done = {"emulator": cpu_seconds(java_pid) if java_pid else 0.0, "bench": self_cpu_s()}
            busy1, total1 = machine_cpu()
            # Workers drain (a few empty pulls) and exit; wait for them so their CPU is counted.
            wait_until(
                lambda: all(j.active == 0 for j in run.parts.backend.observe(batch_id)),
                timeout=60,
                interval=0.1,
                what="the workers to exit",
            )
            cpu_workers = children_cpu_s() - cpu0["workers"]
            jobs = len(batch.jobs)
    finally:
        cleanup_prefix(pubsub, prefix)
        pubsub.close()
    wall = t_done - t0
    cores = os.cpu_count() or 1
    cpu = {
        "emulator_s": cpu_done["emulator"] - cpu0["emulator"],
        "submit_and_launcher_s": cpu_done["bench"] - cpu0["bench"],
        "workers_s": cpu_workers,
    }
    figures = {
        "workers": workers,
        "state": batch.state,
        "records": submitted.records,
        "parts": submitted.parts,
        "jobs": jobs,
        "seconds": wall,
        "records_per_s": submitted.records / wall,
        "submit_s": t_submitted - t0,
        "drain_s": t_done - t_submitted,
        "drain_records_per_s": submitted.records / (t_done - t_submitted),
        "cpu": cpu,
        "cpu_utilisation": sum(cpu.values()) / (wall * cores),
        "emulator_cores": cpu["emulator_s"] / wall,
        "machine_busy": (busy1 - busy0) / max(1e-9, total1 - total0),
    }
    figures["others_cpu_s"] = max(0.0, (busy1 - busy0) - sum(cpu.values()))
    f = figures
    say(
        f"  {workers} worker(s): {f['records']} records, {f['parts']} parts, {batch.state} in {wall:.1f} s "
        f"= {f['records_per_s']:.0f} records/s (submit {f['submit_s']:.1f} s, drain {f['drain_s']:.1f} s "
        f"= {f['drain_records_per_s']:.0f} records/s); CPU s: emulator {cpu['emulator_s']:.1f}, "
        f"submit+launcher {cpu['submit_and_launcher_s']:.1f}, workers {cpu['workers_s']:.1f} "
        f"→ {f['cpu_utilisation'] * 100:.0f}% of {cores} cores; machine {f['machine_busy'] * 100:.0f}% busy "
        f"(other processes {f['others_cpu_s']:.1f} CPU s)"
    )
    return figures


def limits(runs: list[dict[str, Any]]) -> str:
    """One sentence on what bounds the throughput, from the CPU figures."""
    best = max(runs, key=lambda r: r["records_per_s"])
    cores = os.cpu_count() or 1
    cpu = best["cpu"]
    top = max(cpu, key=lambda k: cpu[k])
    share = {k: v / max(1e-9, sum(cpu.values())) for k, v in cpu.items()}
    busy = max(best["machine_busy"], best["cpu_utilisation"])
    if busy >= 0.75:
        bound = "CPU-bound: the cores are nearly saturated"
        if best["others_cpu_s"] > 0.1 * sum(cpu.values()):
            bound += f" (other processes took {best['others_cpu_s']:.1f} CPU s)"
    else:
        bound = "not CPU-bound (waiting on round trips)"
    return (
        f"at {best['workers']} worker(s) (the best) batchctl and the emulator keep "
        f"{best['cpu_utilisation'] * 100:.0f}% of the {cores} cores busy, the whole machine "
        f"{best['machine_busy'] * 100:.0f}%: {bound}; the largest CPU user is {top} "
        f"({share[top] * 100:.0f}% of CPU: emulator {share['emulator_s'] * 100:.0f}%, "
        f"workers {share['workers_s'] * 100:.0f}%, submit+launcher "
        f"{share['submit_and_launcher_s'] * 100:.0f}%); the emulator alone used {best['emulator_cores']:.2f} cores"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="noop")
    parser.add_argument("--concurrency", type=int, default=None, help="worker concurrency (default: product's)")
    parser.add_argument("--quick", action="store_true", help="100k records")
    parser.add_argument("--records-per-part", type=int, default=RECORDS_PER_PART)
    args = parser.parse_args()
    if args.quick:
        args.records = min(args.records, 100_000)
    counts = [int(w) for w in args.workers.split(",")]
    logs.configure(level="WARNING")
    prefix = prefix_for("e2e")
    with emulator() as emu, tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        java_pid = emu.java_pid()
        path = Path(tmp) / "records.jsonl"
        size = generate(path, args.records, 100)
        say(
            f"e2e_throughput: {args.records} records ({size / 1e6:.0f} MB), {args.records_per_part} records/part, "
            f"handler "
            f"{HANDLERS[args.handler]}, worker concurrency {args.concurrency or 'default'}, local backend, "
            f"emulator JVM pid {java_pid or 'not found'}"
        )
        runs = []
        for workers in counts:
            timeout = max(300.0, args.records / 1000)
            runs.append(
                one_run(
                    host=emu.host,
                    prefix=prefix,
                    path=path,
                    records=args.records,
                    workers=workers,
                    handler=HANDLERS[args.handler],
                    concurrency=args.concurrency,
                    workdir=Path(tmp),
                    java_pid=java_pid,
                    timeout=timeout,
                    records_per_part=args.records_per_part,
                )
            )
    verdict = limits(runs)
    say(f"  limit: {verdict}")
    ok = all(r["state"] == SUCCEEDED for r in runs)
    final_json(
        {
            "bench": "e2e_throughput",
            "ok": ok,
            "records": args.records,
            "handler": HANDLERS[args.handler],
            "concurrency": args.concurrency,
            "records_per_part": args.records_per_part,
            "runs": runs,
            "limit": verdict,
            "cores": os.cpu_count(),
        }
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
