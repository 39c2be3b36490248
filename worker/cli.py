"""``batchctl worker``: flags for running by hand, and ``run`` returning the exit code.

Inside a Job the worker is configured from the environment the launcher sets;
the same variables and these flags work by hand (a flag wins over its variable):

    BATCHCTL_BATCH_ID        --batch-id       batch to drain
    BATCHCTL_SUBSCRIPTION    --subscription   short name or projects/…/subscriptions/…
    BATCHCTL_HANDLER         --handler        MODULE:FUNC (default batchctl.worker.demo:handle)
    BATCHCTL_CONCURRENCY     --concurrency    parts at once (default 1)
    BATCHCTL_EMPTY_PULLS     --empty-pulls    consecutive empty pulls meaning drained (3)
    BATCHCTL_PULL_TIMEOUT_S  --pull-timeout   longest pull, least spacing of empty pulls (1.0)
    BATCHCTL_DRAIN_BUDGET_S  --drain-budget   after SIGTERM, time for in-flight parts (20)
    BATCHCTL_LEASE_S         --lease          ack deadline renewed on held parts (20)
    BATCHCTL_UNREACHABLE_S   --unreachable-timeout  seconds Pub/Sub may stay unreachable before exit 3 (30)
    BATCHCTL_PREFETCH        --prefetch       parts pulled ahead of a free slot (~0.5 s of work)
    BATCHCTL_PREFETCH_BYTES  --prefetch-bytes bytes of waiting parts before pulling pauses (16 MiB)
    BATCHCTL_PART_TIMEOUT_S  --part-timeout   longest run of one part before it is nacked (7200)
    BATCHCTL_MAX_DELIVERY_ATTEMPTS --max-delivery-attempts  the batch's dead-letter policy (launcher sets it)
    BATCHCTL_ACK_DEADLINE_S  --subscription-ack-deadline    the work subscription's ack deadline (launcher sets it)
    BATCHCTL_WORKER_ID       --worker-id      name in events (hostname-pid)
    BATCHCTL_RESULTS_DIR     --results-dir    where the demo handler writes (./batchctl-results)
    BATCHCTL_OUTPUT          --output         the batch's results: DEST/part-NNNNNN.jsonl (gs:// or folder)
    BATCHCTL_WRITERS         --writers        threads writing results (4 for gs://, 0 = on the slot for a folder)

Exit codes: 0 drained (the queue is empty), 143 stopped by SIGTERM/SIGINT after
finishing or nacking its parts (not drained, so a Job replaces it), 1 crash or a
second signal, 2 configuration error (bad value, handler not importable,
subscription or events topic missing), 3 Pub/Sub unreachable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping
from typing import Any

from batchctl.core import logs
from batchctl.core.errors import BadInput
from batchctl.core.messages import EXIT_ERROR_PREFIX
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.core.sink import Sink
from batchctl.worker import results
from batchctl.worker.config import OPTIONS, WorkerConfig
from batchctl.worker.events import Events
from batchctl.worker.handler import load_handler
from batchctl.worker.runtime import Worker
from batchctl.worker.shutdown import Shutdown

REPORT_TIMEOUT_S = 5.0
"""How long a worker that cannot start waits to tell the launcher why."""

FLAG_HELP = {
    "batch_id": "batch to drain (BATCHCTL_BATCH_ID)",
    "subscription": "work subscription, short name or full path (BATCHCTL_SUBSCRIPTION)",
    "handler": "MODULE:FUNC called per part (BATCHCTL_HANDLER, default batchctl.worker.demo:handle)",
    "concurrency": "parts handled at once (BATCHCTL_CONCURRENCY, default 1)",
    "empty_pulls": "consecutive empty pulls meaning drained (BATCHCTL_EMPTY_PULLS, default 3)",
    "pull_timeout_s": "seconds per pull and between empty pulls (BATCHCTL_PULL_TIMEOUT_S, default 1)",
    "drain_budget_s": "seconds in-flight parts get after SIGTERM (BATCHCTL_DRAIN_BUDGET_S, default 20)",
    "lease_s": "ack deadline renewed on held parts, seconds (BATCHCTL_LEASE_S, default 20)",
    "unreachable_s": "seconds Pub/Sub may stay unreachable before exit 3 (BATCHCTL_UNREACHABLE_S, default 30)",
    "prefetch": "parts pulled ahead of a free slot (BATCHCTL_PREFETCH, default about 0.5 s of work)",
    "prefetch_bytes": "bytes of waiting parts beyond which pulling pauses (BATCHCTL_PREFETCH_BYTES, default 16 MiB)",
    "part_timeout_s": "longest a handler may run on one part, seconds (BATCHCTL_PART_TIMEOUT_S, default 7200)",
    "max_delivery_attempts": "the batch's max delivery attempts (BATCHCTL_MAX_DELIVERY_ATTEMPTS, set by the launcher)",
    "ack_deadline_s": "the work subscription's ack deadline, seconds (BATCHCTL_ACK_DEADLINE_S, set by the launcher)",
    "worker_id": "name in events and logs (BATCHCTL_WORKER_ID, default hostname-pid)",
    "results_dir": "demo handler output folder (BATCHCTL_RESULTS_DIR, default ./batchctl-results)",
    "output": "where returned results go, gs://BUCKET/PREFIX/ or a folder (BATCHCTL_OUTPUT, default none)",
    "writers": "threads writing results beside the handler slots, 0..10 (BATCHCTL_WRITERS, default 4 for gs://, "
               "0 for a folder: written on the slot)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the worker's flags; each defaults to None so its variable (or default) applies."""
    for option in OPTIONS:
        flags = [option.flag, "--ack-deadline"] if option.field == "lease_s" else [option.flag]
        parser.add_argument(
            *flags, dest=f"worker_{option.field}", metavar="VALUE", default=None, help=FLAG_HELP[option.field]
        )


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Configure, import the handler, run until drained or stopped; returns the exit code."""
    try:
        settings = Settings.from_env(environ)
        flags = {o.field: getattr(args, f"worker_{o.field}", None) for o in OPTIONS}
        config = WorkerConfig.from_sources(environ, flags, prefix=settings.prefix)
    except BadInput as exc:
        sys.stderr.write(f"batchctl: error: worker: {exc}\n")
        return exc.exit_code
    try:
        handler = results.wrap(load_handler(config.handler), output=config.output is not None)
    except BadInput as exc:
        sys.stderr.write(f"batchctl: error: worker: {exc}\n")
        _report_exit_error(settings, config, exc)
        return exc.exit_code
    log = logs.get("worker", batch_id=config.batch_id, worker=config.worker_id)
    shutdown = Shutdown(config.drain_budget_s)
    shutdown.install()
    pubsub = PubSub(settings)
    try:
        return Worker(config, pubsub, handler, shutdown=shutdown, log=log, sink=_sink(config, settings)).run()
    finally:
        _close(pubsub, log)


def _sink(config: WorkerConfig, settings: Settings) -> Sink | None:
    return None if config.output is None else Sink(config.output, environ=settings.environ, project=settings.project)


def _report_exit_error(settings: Settings, config: WorkerConfig, exc: BadInput) -> None:
    """Best effort and silent: tell the launcher why this worker exits, so that ``status`` can say it.

    The exit code and the stderr line already report the error; a missing events topic or an
    unreachable Pub/Sub must neither add output nor hold the exit longer than a few seconds.
    """
    with contextlib.suppress(Exception):
        pubsub = PubSub(settings)
        try:
            events = Events(pubsub, batch_id=config.batch_id, worker_id=config.worker_id)
            events.exited(f"{EXIT_ERROR_PREFIX}{exc}", timeout_s=REPORT_TIMEOUT_S)
        finally:
            pubsub.close()


def _close(pubsub: PubSub, log: Any) -> None:
    try:
        pubsub.close()
    except Exception as exc:  # closing must not turn a clean exit into a crash
        log.warning("pubsub_close_failed", error=f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    """``python -m batchctl.worker``: the same as ``batchctl worker``."""
    parser = argparse.ArgumentParser(prog="python -m batchctl.worker", description="Drain one batch's parts.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logs.configure()
    return run(args, os.environ)
