"""What ``batchctl --help`` and ``batchctl COMMAND --help`` say: one line, a paragraph, examples.

Every subcommand is added through ``add_command``, so each one's help has a summary for the
command list, a description of what it does, and an example epilog. The full reference is
``docs/reference.md``; ``tests/unit/test_reference.py`` checks it against the parser.
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass
from typing import Any, NoReturn

WIDTH = 79
"""Descriptions are wrapped here, so that the raw formatter keeps the examples' lines as written."""


@dataclass(frozen=True)
class CommandHelp:
    summary: str
    """One line in ``batchctl --help``'s command list."""
    description: str
    """What the command does, first in its own ``--help``."""
    examples: str
    """Shell lines shown under ``examples:`` at the end of its ``--help``."""


PROGRAM = CommandHelp(
    summary="",
    description=("Cut raw data (JSONL, CSV, text lines) into Pub/Sub parts and drain them with short-lived "
                 "Kubernetes Jobs (or local worker processes). Exit codes: 0 success, 1 batch failed or "
                 "cancelled, 2 bad input or usage, 3 Pub/Sub or Kubernetes unreachable."),
    examples="""\
batchctl demo
batchctl submit data/ --handler mypkg.jobs:handle --wait
batchctl status b-261202-120000-1a2b
batchctl COMMAND --help    (full reference: docs/reference.md)""",
)

COMMANDS: dict[str, CommandHelp] = {
    "submit": CommandHelp(
        "split input, publish it as a batch, request workers",
        "Split INPUT into parts, publish one Pub/Sub message per part on the batch's own topic, then ask "
        "the launcher for workers under an operator-defined --profile, which decides the image, the "
        "handlers allowed and the bounds of every knob (see `batchctl profiles`). A submit that fails "
        "leaves no batch behind. With --wait, follow the batch to its end and exit 0 (succeeded), 1 "
        "(failed or cancelled) or 2 (rejected by the launcher).",
        """\
batchctl submit data/ --handler mypkg.jobs:handle --parts-per-worker 20 --max-parallelism 50
zcat big.csv.gz | batchctl submit - --format csv --batch-id nightly --wait""",
    ),
    "status": CommandHelp(
        "show one batch",
        "Show one batch: its state, parts done and dead-lettered, Jobs and active workers. Read from the "
        "launcher's state, so it works whether or not a launcher runs.",
        """\
batchctl status nightly
batchctl status nightly --json | jq .parts_done""",
    ),
    "list": CommandHelp(
        "list batches, newest first",
        "List every batch the launcher keeps (finished ones until BATCHCTL_RETENTION has passed), newest first.",
        """\
batchctl list
batchctl list --json""",
    ),
    "cancel": CommandHelp(
        "stop a batch: delete its Jobs and work subscription",
        "Stop a batch: the launcher deletes its Jobs (and their pods) and its work subscription, and the "
        "state becomes cancelled. Waits until the launcher has done it.",
        "batchctl cancel nightly",
    ),
    "retry": CommandHelp(
        "republish dead-lettered parts and launch workers for them",
        "Republish a batch's dead-lettered parts to its work topic and launch workers for them. Waits "
        "until the launcher has taken the retry.",
        """\
batchctl retry nightly
batchctl status nightly""",
    ),
    "results": CommandHelp(
        "a batch's results (from submit --output) in part order",
        "Stream a batch's results from its --output DEST (part-000000.jsonl, part-000001.jsonl, ...) in part "
        "order, as JSON lines. Exits 1 unless the batch succeeded and DEST holds its _SUCCESS manifest; "
        "--partial reads the parts done so far.",
        """\
batchctl results nightly --output nightly.jsonl
batchctl results nightly --partial | head""",
    ),
    "profiles": CommandHelp(
        "the worker profiles the launcher offers",
        "List the worker profiles a batch may ask for with submit --profile: image and allowed alternatives, "
        "handler patterns, parallelism cap, node pool and resources. On Kubernetes they are read from the "
        "launcher's namespace (the ConfigMap <prefix>-profiles it publishes); with the local backend from "
        "BATCHCTL_PROFILES, or the one 'default' profile of the BATCHCTL_* variables.",
        """\
batchctl profiles
batchctl profiles --json | jq 'keys'""",
    ),
    "gc": CommandHelp(
        "delete orphans: Pub/Sub resources and Jobs of batches that no longer exist",
        "Find and delete orphans: the prefix's batch topics and subscriptions (P-<id>-work, P-<id>-dead) whose "
        "batch has no state, and Jobs of a batch that has no state. A batch's topics younger than an hour "
        "are spared (its submit may still be publishing). Finished batches themselves are removed by the "
        "launcher after BATCHCTL_RETENTION, not by gc.",
        """\
batchctl gc --dry-run
batchctl gc""",
    ),
    "launcher": CommandHelp(
        "the long-lived service that launches and tracks Jobs",
        "Run the launcher: take batch requests, create a work-queue Job per batch sized from its backlog, "
        "launch follow-up Jobs, count progress, clean up. Serves /healthz, /readyz and /metrics on --port. "
        "Several replicas may run; only the leader launches. Stops cleanly on SIGTERM.",
        """\
batchctl launcher --port 8080
BATCHCTL_BACKEND=local batchctl launcher    (workers as processes on this machine)""",
    ),
    "worker": CommandHelp(
        "drain a batch's parts (inside a Job, or by hand)",
        "Pull a batch's parts and call the handler on each until the subscription is drained. Inside a "
        "Job it is configured by the environment the launcher sets; a flag wins over its variable. Exit "
        "0 drained, 2 configuration error, 3 Pub/Sub unreachable, 143 stopped by SIGTERM.",
        "batchctl worker --batch-id nightly --subscription batchctl-nightly-work --handler mypkg.jobs:handle",
    ),
    "demo": CommandHelp(
        "run the whole pipeline on this machine against the Pub/Sub emulator",
        "Start the Pub/Sub emulator unless one answers, write a sample data set, run a local launcher and "
        "workers with the built-in handler, show progress, print a summary, and stop what it started.",
        """\
batchctl demo
batchctl demo --records 100000 --workers 8 --output /tmp/demo-results""",
    ),
}


def epilog(examples: str) -> str:
    return "examples:\n" + "\n".join("  " + line for line in examples.splitlines())


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"batchctl: error: {message} (see `{self.prog} --help`)\n")


def program_parser(parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    return Parser(prog="batchctl", description=textwrap.fill(PROGRAM.description, WIDTH),
                                   epilog=epilog(PROGRAM.examples), parents=parents,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_command(sub: Any, name: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add subcommand ``name`` with its help from ``COMMANDS`` (KeyError: add an entry there)."""
    text = COMMANDS[name]
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=text.summary, description=textwrap.fill(text.description, WIDTH), epilog=epilog(text.examples),
        parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
