"""``batchctl demo``: the whole pipeline on this machine, started and stopped in one command.

Starts the Pub/Sub emulator unless one answers, writes a sample data set, runs a
local launcher (worker processes) with the built-in handler, follows the batch,
prints a summary, and stops everything it started.
"""

from __future__ import annotations

import json
import random
import secrets
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from batchctl.core import logs
from batchctl.core.emulator import Emulator, EmulatorMissing, answers
from batchctl.core.errors import EXIT_FAILED, EXIT_OK, BadInput
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.core.sink import Sink
from batchctl.frontend import batches
from batchctl.frontend.render import ProgressBar
from batchctl.launcher.app import assemble
from batchctl.launcher.local_backend import LocalBackend
from batchctl.launcher.service import Launcher, Tuning
from batchctl.launcher.state import BatchState
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.submit import SubmitOptions, submit

INSTALL_HINT = ("the Pub/Sub emulator is not installed: install the Google Cloud CLI, then "
                "`gcloud components install beta pubsub-emulator` (it needs Java 17+)")
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")
DEMO_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class DemoOptions:
    records: int = 20000
    workers: int = 4
    output: str | None = None
    records_per_part: int = 100


def sample(path: Path, records: int, seed: int = 7) -> None:
    """Write ``records`` JSONL records of short text, reproducibly."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(records):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
            out.write(json.dumps({"id": i, "text": text, "score": rng.random()}) + "\n")


def run(settings: Settings, options: DemoOptions) -> int:
    log = logs.get("demo")
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batchctl-demo-")))
        settings = _with_emulator(settings, stack, work)
        output = Path(options.output or tempfile.mkdtemp(prefix="batchctl-results-"))
        output.mkdir(parents=True, exist_ok=True)
        settings = replace(settings, backend="local", state_dir=work / "state")
        data = work / "sample.jsonl"
        sample(data, options.records)
        pubsub = PubSub(settings)
        stack.callback(pubsub.close)
        parts = assemble(settings, worker_env={"BATCHCTL_RESULTS_DIR": str(output)})
        launcher = Launcher(settings, pubsub, parts.store, parts.backend, parts.elector,
                            tuning=Tuning(tick_s=0.2, pull_timeout_s=2.0))
        thread = threading.Thread(target=launcher.run, name="launcher", daemon=True)
        thread.start()
        stack.callback(_stop, launcher, thread, parts.backend)
        started = time.monotonic()
        batch_id = "demo-" + secrets.token_hex(3)
        result = submit(pubsub, SubmitOptions([str(data)], batch_id=batch_id,
                                              limits=PartLimits(options.records_per_part),
                                              parts_per_worker=5, max_parallelism=options.workers,
                                              output=str(output / "results")))
        log.info("demo_submitted", batch_id=batch_id, parts=result.parts)
        bar = ProgressBar()
        try:
            final = batches.follow(parts.store, batch_id, timeout=DEMO_TIMEOUT_S, on_poll=lambda b: bar.update(
                batches.describe(b, batches.active_workers(parts.backend, b))))
        finally:
            bar.close()
        elapsed = time.monotonic() - started
        _summary(final, result.records, elapsed, output)
        return EXIT_OK if final.state == "succeeded" else EXIT_FAILED


def _with_emulator(settings: Settings, stack: ExitStack, work: Path) -> Settings:
    if settings.emulator_host and answers(settings.emulator_host):
        return settings
    if settings.emulator_host is None and answers("127.0.0.1:8085"):
        return replace(settings, emulator_host="127.0.0.1:8085", project=settings.project or "batchctl-local",
                       environ={**settings.environ, "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"})
    try:
        emulator = Emulator.start(log_dir=work)
    except EmulatorMissing as exc:
        raise BadInput(INSTALL_HINT if "not installed" in str(exc) else str(exc)) from exc
    stack.callback(emulator.stop)
    print(f"started the Pub/Sub emulator on {emulator.host}", file=sys.stderr)
    environ = {**settings.environ, "PUBSUB_EMULATOR_HOST": emulator.host}
    return replace(settings, emulator_host=emulator.host, project=settings.project or "batchctl-local",
                   environ=environ)


def _stop(launcher: Launcher, thread: threading.Thread, backend: object) -> None:
    launcher.stop()
    thread.join(timeout=30)
    if isinstance(backend, LocalBackend):
        backend.stop_all(timeout=30)


def _summary(final: BatchState, records: int, elapsed: float, output: Path) -> None:
    files = len(list(output.glob(f"{final.batch_id}-*.json")))
    manifest = Sink(str(output / "results")).read_success()
    returned = (f"{manifest['records_out']} part summaries returned to {output / 'results'} (_SUCCESS: "
                f"{manifest['parts']} parts, {manifest['records_in']} records in)" if manifest else "no _SUCCESS")
    print(f"""
batch      {final.batch_id}: {final.state}
records    {records} in {final.parts} parts ({len(final.done)} parts done)
time       {elapsed:.1f} s  ({records / elapsed:,.0f} records/s end to end)
results    {files} files in {output}
returned   {returned}""")
