"""The subcommands: each adds its arguments and runs against a Settings."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from batchctl.errors import EXIT_OK
from batchctl.settings import Settings


def add_all(sub: Any) -> None:
    from batchctl.cli import positive_int

    p = sub.add_parser("submit", help="split input, publish it as a batch, request workers")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="file, folder, or - for stdin")
    p.add_argument("--batch-id")
    p.add_argument("--format", choices=("jsonl", "csv", "lines"))
    p.add_argument("--records-per-part", type=positive_int, default=100)
    p.add_argument("--max-part-bytes", type=positive_int, default=1024 * 1024)
    p.add_argument("--handler", default="worker.demo:handle", help="MODULE:FUNC")
    p.add_argument("--parts-per-worker", type=positive_int, default=10)
    p.add_argument("--max-parallelism", type=positive_int, default=10)
    p.add_argument("--max-delivery-attempts", type=positive_int, default=5)
    p.add_argument("--ack-deadline", type=positive_int, default=60, help="seconds (10..600)")
    p.add_argument("--image", help="worker image for this batch (default: the launcher's)")
    p.add_argument("--wait", action="store_true", help="follow the batch to its end")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(run=run_submit)

    w = sub.add_parser("worker", help="drain a batch's parts (inside a Job, or by hand)")
    try:
        from worker import cli as worker_cli
    except ImportError:  # TODO(lead): remove once worker/cli.py lands
        return
    worker_cli.add_arguments(w)
    w.set_defaults(run=run_worker)


def run_submit(args: argparse.Namespace, settings: Settings) -> int:
    from batchctl.cli import emit_json
    from batchctl.pubsub import PubSub
    from splitter.partitioner import PartLimits
    from splitter.submit import SubmitOptions, submit
    from splitter.topology import BatchTopology

    options = SubmitOptions(
        inputs=args.inputs,
        batch_id=args.batch_id,
        format=args.format,
        limits=PartLimits(args.records_per_part, args.max_part_bytes),
        handler=args.handler,
        parts_per_worker=args.parts_per_worker,
        max_parallelism=args.max_parallelism,
        image=args.image,
        topology=BatchTopology(ack_deadline_s=args.ack_deadline, max_delivery_attempts=args.max_delivery_attempts),
    )
    pubsub = PubSub(settings)
    try:
        result = submit(pubsub, options)
    finally:
        pubsub.close()
    summary = {"batch_id": result.batch_id, "parts": result.parts, "records": result.records,
               "bytes": result.bytes}
    if args.json:
        emit_json(summary)
    else:
        print(f"submitted {result.batch_id}: {result.parts} parts, {result.records} records, "
              f"{result.bytes} bytes", file=sys.stdout)
    return EXIT_OK


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker import cli as worker_cli

    return int(worker_cli.run(args, settings.environ))
