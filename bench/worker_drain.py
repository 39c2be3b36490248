"""Drain throughput of one worker against plain loops over the official client, same run, same data.

    .venv/bin/python bench/worker_drain.py [--parts 2000] [--concurrency 1,8]

After a warm-up batch, for each concurrency C, four fresh batches of identical parts are drained by:
  * ``pull``: a plain synchronous pull/ack loop, ``max_messages=C`` (the baseline);
  * ``pull_event``: the same loop publishing a ``part_done`` event per part and awaiting
    them before the ack, as the contract requires (the naive way to do what the worker does);
  * ``streaming``: the client's StreamingPull, flow control ``max_messages=C``, ack in the callback;
  * ``worker``: ``python -m batchctl.worker`` with a no-op handler and ``--concurrency C``.
Throughput is parts / (last ack - first part received), so process start-up is not
counted. For the worker, "exit after last ack" is the process's exit time minus the
last-ack time it logs. Uses $PUBSUB_EMULATOR_HOST, or starts an emulator of its own.
Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchctl.core.emulator import Emulator  # noqa: E402  after the path setup above
from batchctl.core.messages import Event, encode_event  # noqa: E402
from batchctl.core.pubsub import PubSub  # noqa: E402
from batchctl.core.settings import Settings  # noqa: E402
from tests.support.parts import publish_batch  # noqa: E402

WAYS = ("pull", "pull_event", "streaming", "worker")
RATIO_TARGET = 0.8
EXIT_TARGET_S = 5.0


@contextmanager
def emulator_host() -> Iterator[str]:
    """The emulator in PUBSUB_EMULATOR_HOST, or one started (and stopped) here."""
    existing = os.environ.get("PUBSUB_EMULATOR_HOST")
    if existing:
        yield existing
        return
    emulator = Emulator.start(log_dir=Path(tempfile.gettempdir()))
    try:
        yield emulator.host
    finally:
        emulator.stop()


def drain_pull(pubsub: PubSub, subscription: str, parts: int, max_messages: int) -> dict[str, float]:
    """Baseline: pull up to ``max_messages``, ack them, until every part is acked."""
    acked, first = 0, None
    while acked < parts:
        batch = pubsub.pull(subscription, max_messages=max_messages, timeout_s=5)
        first = first or time.monotonic()
        pubsub.ack(subscription, [m.ack_id for m in batch])
        acked += len(batch)
    return {"parts": acked, "seconds": time.monotonic() - (first or 0.0)}


def drain_pull_event(pubsub: PubSub, subscription: str, parts: int, max_messages: int) -> dict[str, float]:
    """Pull, publish one ``part_done`` per part and await them, then ack: the contract done naively."""
    acked, first = 0, None
    topic = pubsub.settings.names.events_topic
    while acked < parts:
        batch = pubsub.pull(subscription, max_messages=max_messages, timeout_s=5)
        first = first or time.monotonic()
        events = [
            Event(type="part_done", batch_id="bench", worker="loop", part=int(m.attributes["part"])) for m in batch
        ]
        for future in [pubsub.publish(topic, *encode_event(e)) for e in events]:
            future.result(timeout=60)
        pubsub.ack(subscription, [m.ack_id for m in batch])
        acked += len(batch)
    return {"parts": acked, "seconds": time.monotonic() - (first or 0.0)}


def drain_streaming(pubsub: PubSub, subscription: str, parts: int, max_messages: int) -> dict[str, float]:
    """StreamingPull with flow control; the callback acks; done when every part is acked."""
    lock, done = threading.Lock(), threading.Event()
    state = {"acked": 0, "first": 0.0, "last": 0.0}

    def callback(message: Any) -> None:
        message.ack()
        with lock:
            state["first"] = state["first"] or time.monotonic()
            state["acked"] += 1
            state["last"] = time.monotonic()
            if state["acked"] >= parts:
                done.set()

    flow = (
        100 * 1024 * 1024,
        max_messages,
    )  # FlowControl(max_bytes, max_messages), without importing the client
    future = pubsub.subscriber.subscribe(pubsub.subscription_path(subscription), callback, flow_control=flow)
    done.wait(timeout=600)
    future.cancel()
    future.result(timeout=30)
    return {"parts": state["acked"], "seconds": state["last"] - state["first"]}


def drain_worker(env: dict[str, str], batch_id: str, concurrency: int) -> dict[str, float]:
    """The worker as a process, no-op handler; figures from its ``worker_exited`` log line."""
    cmd = [sys.executable, "-m", "batchctl.worker", "--batch-id", batch_id, "--concurrency", str(concurrency)]
    cmd += ["--handler", "tests.support.handlers:noop"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=600)
    exited_at = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"worker exited {proc.returncode}:\n{stderr[-2000:]}")
    final = json.loads([line for line in stderr.splitlines() if '"worker_exited"' in line][-1])
    return {
        "parts": final["parts_done"],
        "seconds": final["last_ack_at"] - final["first_pull_at"],
        "exit_after_last_ack_s": exited_at - final["last_ack_at"],
    }


def warm_up(pubsub: PubSub, parts: int = 1000) -> None:
    """Publish and drain a throw-away batch first, so a cold emulator (JIT) does not favour later ways."""
    work = publish_batch(pubsub, f"bench-warm-{os.getpid()}", [[{"n": i}] for i in range(parts)])
    drain_pull(pubsub, work, parts, 10)


def measure(pubsub: PubSub, env: dict[str, str], parts: int, concurrency: int) -> dict[str, Any]:
    """Drain four identical batches, one per way; return each way's figures."""
    data = [[{"n": i, "text": "some words in a record"}] for i in range(parts)]
    results: dict[str, Any] = {}
    for way in WAYS:
        batch_id = f"bench-{way}-c{concurrency}-{os.getpid()}"
        work = publish_batch(pubsub, batch_id, data)
        if way == "pull":
            figures = drain_pull(pubsub, work, parts, concurrency)
        elif way == "pull_event":
            figures = drain_pull_event(pubsub, work, parts, concurrency)
        elif way == "streaming":
            figures = drain_streaming(pubsub, work, parts, concurrency)
        else:
            figures = drain_worker(env, batch_id, concurrency)
        figures["parts_per_s"] = figures["parts"] / figures["seconds"]
        results[way] = figures
    results["ratio_vs_pull"] = results["worker"]["parts_per_s"] / results["pull"]["parts_per_s"]
    results["ratio_vs_streaming"] = results["worker"]["parts_per_s"] / results["streaming"]["parts_per_s"]
    return results


def report(concurrency: int, results: dict[str, Any]) -> None:
    for way in WAYS:
        figures = results[way]
        extra = f", exit {figures['exit_after_last_ack_s']:.2f} s after last ack" if way == "worker" else ""
        rate = f"{figures['parts']:>6} parts  {figures['parts_per_s']:8.0f} parts/s"
        print(f"  c={concurrency:<3} {way:<11} {rate}{extra}")
    print(
        f"  c={concurrency:<3} ratio worker/pull {results['ratio_vs_pull']:.2f} (target >= {RATIO_TARGET}), "
        f"worker/streaming {results['ratio_vs_streaming']:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--parts", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8", help="comma-separated concurrencies (default 1,8)")
    args = parser.parse_args()
    with emulator_host() as host:
        env = {
            **os.environ,
            "PUBSUB_EMULATOR_HOST": host,
            "GOOGLE_CLOUD_PROJECT": "batchctl-bench",
            "BATCHCTL_PREFIX": f"bench{os.getpid() % 10000}",
            "BATCHCTL_LOG_LEVEL": os.environ.get("BATCHCTL_LOG_LEVEL", "INFO"),
            "PYTHONPATH": str(ROOT),
        }
        pubsub = PubSub(Settings.from_env(env))
        pubsub.create_topic(pubsub.settings.names.events_topic, exist_ok=True)
        warm_up(pubsub)
        all_results = {}
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            all_results[f"c{concurrency}"] = results = measure(pubsub, env, args.parts, concurrency)
            report(concurrency, results)
        pubsub.close()
    # The ratio target is for the default concurrency (1); other concurrencies are reported for context.
    default = all_results.get("c1")
    ok = all(r["worker"]["exit_after_last_ack_s"] <= EXIT_TARGET_S for r in all_results.values()) and (
        default is None or default["ratio_vs_pull"] >= RATIO_TARGET
    )
    print(json.dumps({"bench": "worker_drain", "parts": args.parts, "ok": ok, **all_results}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
