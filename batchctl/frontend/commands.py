"""The subcommands: each adds its arguments and runs against a Settings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from batchctl.core.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput
from batchctl.core.messages import PRIORITIES
from batchctl.core.names import validate_batch_id
from batchctl.core.settings import WORK_ACK_DEADLINE_S, Settings
from batchctl.frontend.helptext import add_command

WAIT_TIMEOUT_S = 24 * 3600.0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port")
    return value


def batch_id_arg(text: str) -> str:
    """An ID argument, checked while parsing: a bad id exits 2 naming it, before any configuration is read."""
    try:
        return validate_batch_id(text)
    except BadInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_all(sub: Any, *, parents: list[argparse.ArgumentParser]) -> None:
    _add_submit(sub, parents)
    for name, run in (("status", run_status), ("list", run_list)):
        p = add_command(sub, name, parents)
        if name == "status":
            p.add_argument("batch_id", metavar="ID", type=batch_id_arg, help="the batch")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(run=run)
    for name in ("cancel", "retry"):
        p = add_command(sub, name, parents)
        p.add_argument("batch_id", metavar="ID", type=batch_id_arg, help="the batch")
        p.add_argument("--json", action="store_true", help="print the resulting status as JSON")
        p.set_defaults(run=run_control, action=name)
    p = add_command(sub, "results", parents)
    p.add_argument("batch_id", metavar="ID", type=batch_id_arg, help="the batch")
    p.add_argument("--output", metavar="FILE", help="write them to FILE (written whole, or not at all; default stdout)")
    p.add_argument("--partial", action="store_true",
                   help="read the parts done so far, even if the batch has not succeeded")
    p.set_defaults(run=run_results)
    p = add_command(sub, "profiles", parents)
    p.add_argument("--json", action="store_true", help="print JSON: an object per profile, by name")
    p.set_defaults(run=run_profiles)
    p = add_command(sub, "gc", parents)
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(run=run_gc)
    p = add_command(sub, "launcher", parents)
    p.add_argument("--port", metavar="PORT", type=port_number, default=8080,
                   help="health and metrics port (default 8080)")
    p.set_defaults(run=run_launcher)
    from batchctl.worker import cli as worker_cli

    w = add_command(sub, "worker", parents)
    worker_cli.add_arguments(w)
    w.set_defaults(run=run_worker)
    d = add_command(sub, "demo", parents)
    d.add_argument("--records", metavar="N", type=positive_int, default=20000,
                   help="records in the sample (default 20000)")
    d.add_argument("--workers", metavar="N", type=positive_int, default=4, help="max parallelism (default 4)")
    d.add_argument("--output", metavar="DIR", help="where result files go (default: a new folder under /tmp)")
    d.set_defaults(run=run_demo)


def _add_submit(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "submit", parents)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="file, folder, gs://BUCKET/PREFIX, or - for stdin")
    p.add_argument("--batch-id", metavar="ID", type=batch_id_arg,
                   help="the batch's id (default: generated, b-YYMMDD-HHMMSS-xxxx)")
    p.add_argument("--format", choices=("jsonl", "csv", "lines"), help="input format (default: from the extension)")
    p.add_argument("--records-per-part", metavar="N", type=positive_int, default=100,
                   help="records per part (default 100)")
    p.add_argument("--max-part-bytes", metavar="BYTES", type=positive_int, default=1024 * 1024,
                   help="largest part in bytes (default 1048576, at most 10 MB)")
    p.add_argument("--handler", metavar="MODULE:FUNC", default="batchctl.worker.demo:handle",
                   help="MODULE:FUNC called per part (default batchctl.worker.demo:handle)")
    p.add_argument("--parts-per-worker", metavar="N", type=positive_int, default=10,
                   help="parts one worker is sized for (default 10)")
    p.add_argument("--max-parallelism", metavar="N", type=positive_int, default=10,
                   help="most workers at once (default 10)")
    p.add_argument("--priority", choices=PRIORITIES, default="normal",
                   help="weight in the launcher's worker budget, BATCHCTL_MAX_WORKERS: low 1, normal 2, high 4 "
                        "(default normal)")
    p.add_argument("--max-delivery-attempts", metavar="N", type=positive_int, default=5,
                   help="deliveries before a part is dead-lettered (5..100, default 5)")
    p.add_argument("--ack-deadline", metavar="SECONDS", type=positive_int, default=WORK_ACK_DEADLINE_S,
                   help="work subscription's ack deadline, seconds (10..600, default 20)")
    p.add_argument("--profile", metavar="NAME", default="default",
                   help="the operator's worker profile to run under (default 'default'; see `batchctl profiles`)")
    p.add_argument("--image", metavar="IMAGE",
                   help="one of the profile's allowed images (default: the profile's image)")
    p.add_argument("--output", metavar="DEST",
                   help="where handlers' results go: gs://BUCKET/PREFIX/, or a folder with the local backend")
    p.add_argument("--wait", action="store_true", help="follow the batch to its end; exit 0 succeeded, 1 not")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(run=run_submit)


def emit_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True))


def _client(settings: Settings) -> Any:
    from batchctl.frontend.client import Client

    return Client(settings=settings)


def run_submit(args: argparse.Namespace, settings: Settings) -> int:
    from batchctl.core.topology import BatchTopology
    from batchctl.splitter.partitioner import PartLimits
    from batchctl.splitter.submit import SubmitOptions

    options = SubmitOptions(
        inputs=args.inputs, batch_id=args.batch_id, format=args.format,
        limits=PartLimits(args.records_per_part, args.max_part_bytes), handler=args.handler,
        parts_per_worker=args.parts_per_worker, max_parallelism=args.max_parallelism, image=args.image,
        priority=args.priority,
        topology=BatchTopology(ack_deadline_s=args.ack_deadline, max_delivery_attempts=args.max_delivery_attempts),
        output=args.output, profile=args.profile,
    )
    with _client(settings) as client:
        if args.wait:
            _ = client.store  # fail on an unreachable cluster before publishing
        result = client.submit_options(options, stdin=sys.stdin.buffer if "-" in args.inputs else None)
        if args.wait:
            return _follow(client.batch(result.batch_id), as_json=args.json)
    if args.json:
        emit_json({"batch_id": result.batch_id, "parts": result.parts, "records": result.records,
                   "bytes": result.bytes})
    else:
        print(f"submitted {result.batch_id}: {result.parts} parts, {result.records} records, {result.bytes} bytes")
    return EXIT_OK


def _follow(batch: Any, *, as_json: bool) -> int:
    from batchctl.frontend.client import BatchFailed
    from batchctl.frontend.render import ProgressBar

    bar = ProgressBar()
    try:
        final = batch.wait(timeout=WAIT_TIMEOUT_S, poll_s=0.5, on_poll=lambda s: bar.update(s.as_dict()))
    except BatchFailed as exc:
        final = exc.status
    finally:
        bar.close()
    if as_json:
        emit_json(final.as_dict())
    elif final.state == "rejected":
        print(f"{batch.id} rejected: {final.reason}")
    else:
        print(f"{batch.id} {final.state}: {final.parts_done}/{final.parts_total} parts done, "
              f"{final.parts_dead} dead")
    return exit_code(final.state)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    from batchctl.frontend.render import status_text

    with _client(settings) as client:
        status = client.batch(args.batch_id).status().as_dict()
    emit_json(status) if args.json else status_text(status)
    return EXIT_BAD_INPUT if status["state"] == "rejected" else EXIT_OK


def exit_code(state: str) -> int:
    """What a command that saw a batch end exits with: 0 succeeded, 2 rejected (bad input), 1 otherwise."""
    if state == "succeeded":
        return EXIT_OK
    return EXIT_BAD_INPUT if state == "rejected" else EXIT_FAILED


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from batchctl.frontend.render import table

    with _client(settings) as client:
        rows = [status.as_dict() for status in client.list()]
    if args.json:
        emit_json(rows)
    else:
        table(rows)
    return EXIT_OK


def run_control(args: argparse.Namespace, settings: Settings) -> int:
    from batchctl.frontend.render import status_text

    with _client(settings) as client:
        batch = client.batch(args.batch_id)
        status = (batch.cancel() if args.action == "cancel" else batch.retry()).as_dict()
    emit_json(status) if args.json else status_text(status)
    return EXIT_OK


def run_results(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        stream = client.batch(args.batch_id).result_chunks(partial=args.partial)
        if args.output is None:
            for chunk in stream:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return EXIT_OK
        from batchctl.core.sink import write_file_atomically
        from batchctl.frontend.results import spooled

        with spooled(stream) as body:
            write_file_atomically(Path(args.output), body)
    return EXIT_OK


PROFILE_COLUMNS = ("name", "image", "handlers", "max_parallelism", "node_selector", "resources")


def run_profiles(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        offered = client.profiles()
    if args.json:
        emit_json(offered)
        return EXIT_OK
    rows = [[name, " ".join([p["image"], *p["images"]]), " ".join(p["handlers"]), str(p["max_parallelism"]),
             ",".join(f"{k}={v}" for k, v in p["node_selector"].items()) or "-", _resources(p)]
            for name, p in offered.items()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(PROFILE_COLUMNS)]
    for row in [[c.upper() for c in PROFILE_COLUMNS], *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _resources(profile: dict[str, Any]) -> str:
    extended = "".join(f" {k}={v}" for k, v in profile["extended_resources"].items())
    return f"cpu={profile['cpu_request']} memory={profile['memory_request']}{extended}"


def run_gc(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from batchctl.core.pubsub import PubSub
    from batchctl.launcher import gc
    from batchctl.launcher.app import open_backend, open_store

    store, backend = open_store(settings), open_backend(settings)
    pubsub = PubSub(settings)
    try:
        orphans = gc.collect(pubsub, store, backend, now=time.time())
        if orphans and not args.dry_run:
            gc.remove(pubsub, backend, orphans)
    finally:
        pubsub.close()
        backend.close()
    for line in orphans.lines("would delete" if args.dry_run else "deleted"):
        print(line)
    if not orphans:
        print("no orphans")
    return EXIT_OK


def run_launcher(args: argparse.Namespace, settings: Settings) -> int:
    from batchctl.launcher.app import serve

    return serve(settings, port=args.port)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from batchctl.worker import cli as worker_cli

    return int(worker_cli.run(args, settings.environ))


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from batchctl.core import logs
    from batchctl.frontend.demo import DemoOptions, run

    if args.log_level is None:
        logs.configure(level="WARNING")
    return run(settings, DemoOptions(records=args.records, workers=args.workers, output=args.output))
