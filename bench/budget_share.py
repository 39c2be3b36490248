"""The worker budget under a burst: 100 batches requested at once, BATCHCTL_MAX_WORKERS=50.

    .venv/bin/python bench/budget_share.py [--batches 100] [--budget 50] [--parts 12] [--part-s 0.5]

The launcher runs in this process (its default tuning, as in a cluster) against the tests' strict
API server over HTTP and the real Pub/Sub emulator. The pods are played by this bench (no worker
processes: 50 at once would measure the machine, not the launcher): for every unfinished Job it
runs ``spec.parallelism`` worker threads that pull one part at a time from the batch's real work
subscription, hold it ``--part-s`` seconds, ack it and publish the real ``part_done`` event; a
worker that finds the queue empty twice exits 0 and, as in a work-queue Job, no new one starts;
the Job is marked Complete when its last worker exits. A patch down stops the newest workers.

Each batch has ``--parts`` parts, 2 parts per worker, max parallelism 4 (it wants 4 workers);
one in five is ``high``, one in five ``low``, the rest ``normal``. Reported:
- peak of the sum of ``spec.parallelism`` over unfinished Jobs, from a watch that sees every Job
  version (must be <= the budget), and the time from the requests to the budget fully in use;
- the time until every batch succeeded (every part done exactly once is checked);
- fairness: each batch's worker-seconds (its running workers, sampled every 50 ms) against its fair
  share of the workers in use at each sample (``allocation.allocate`` over the batches with parts
  left; batches due at least one worker-second): min, median, max of the ratio, Jain's index of the
  ratios, the mean ratio per priority; and the mean number of workers running (draining Jobs
  included) against the budget.
Uses $PUBSUB_EMULATOR_HOST, or starts an emulator of its own. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_env, cleanup_prefix, emulator, final_json, prefix_for, say, wait_until
from kubernetes import client, config, watch
from launch_latency import api_server  # kmock with its request history bounded

from batchctl.core import logs, topology
from batchctl.core.messages import BatchRequest, Control, Event, encode_control, encode_event
from batchctl.core.pubsub import PubSub, PullUnanswered, Received
from batchctl.core.settings import Settings
from batchctl.launcher.allocation import Claim, allocate
from batchctl.launcher.app import assemble
from batchctl.launcher.service import Launcher
from batchctl.launcher.state import SUCCEEDED, TERMINAL

NAMESPACE = "default"
PPW, MAX_PAR = 2, 4
SAMPLE_S = 0.05
FOLLOW_S = 0.1


def priority_of(i: int) -> str:
    return "high" if i % 5 == 0 else "low" if i % 5 == 4 else "normal"


def finished(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


# ---- the pods, played by this bench ------------------------------------------------------------------


@dataclass
class SimJob:
    name: str
    batch_id: str
    workers: list[threading.Event] = field(default_factory=list)
    """One stop flag per worker thread started (set: asked to stop, or ended)."""
    alive: int = 0
    drained: bool = False
    completed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class PodPlayer:
    """Runs each unfinished Job's workers as threads, following ``spec.parallelism`` as the Job controller does."""

    def __init__(self, pubsub: PubSub, batch_api: client.BatchV1Api, part_s: float) -> None:
        self.pubsub, self.batch_api, self.part_s = pubsub, batch_api, part_s
        self.jobs: dict[str, SimJob] = {}
        self.stop = threading.Event()
        self.done_events = 0

    def run(self) -> None:
        while not self.stop.wait(FOLLOW_S):
            listed = json.loads(self.batch_api.list_namespaced_job(NAMESPACE, _preload_content=False).data)  # type: ignore[attr-defined]
            for job in listed["items"]:
                if not finished(job):
                    self._follow(job)

    def _follow(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        sim = self.jobs.setdefault(name, SimJob(name, job["metadata"]["labels"]["batchctl.dev/batch-id"]))
        with sim.lock:
            running = [w for w in sim.workers if not w.is_set()]
            want = 0 if sim.drained else int(job["spec"].get("parallelism") or 0)
            for flag in running[want:]:
                flag.set()
            for _ in range(max(0, want - len(running))):
                flag = threading.Event()
                sim.workers.append(flag)
                sim.alive += 1
                threading.Thread(target=self._work, args=(sim, flag), daemon=True).start()
            if sim.drained and sim.alive == 0 and not sim.completed:
                sim.completed = True
                self._complete(name)

    def _work(self, sim: SimJob, flag: threading.Event) -> None:
        sub, empty = self.pubsub.settings.names.work(sim.batch_id), 0
        try:
            while not flag.is_set() and empty < 2:
                msgs = self._pull(sub)
                if msgs is None:
                    continue
                if not msgs:
                    empty += 1
                    continue
                empty = 0
                time.sleep(self.part_s)
                self.pubsub.ack(sub, [msgs[0].ack_id])
                event = Event("part_done", sim.batch_id, f"{sim.name}-w", part=int(msgs[0].attributes["part"]))
                self.pubsub.publish(self.pubsub.settings.names.events_topic, *encode_event(event)).result(30)
            with sim.lock:
                sim.drained = sim.drained or empty >= 2
        finally:
            with sim.lock:
                flag.set()
                sim.alive -= 1

    def _pull(self, sub: str) -> list[Received] | None:
        """One part, [] for an answered empty pull (the drain rule counts those), None for no answer."""
        try:
            return self.pubsub.pull_answered(sub, max_messages=1, timeout_s=2.0)
        except PullUnanswered as exc:
            if not exc.timed_out:
                return None
        try:  # a held pull timed out: asked again to answer at once, as the worker does
            return self.pubsub.pull_answered(sub, max_messages=1, timeout_s=2.0, return_immediately=True)
        except PullUnanswered:
            return None

    def _complete(self, name: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [{"type": kind, "status": "True", "reason": "CompletionsReached", "lastTransitionTime": stamp}
                      for kind in ("SuccessCriteriaMet", "Complete")]
        self.batch_api.patch_namespaced_job_status(
            name, NAMESPACE, {"status": {"conditions": conditions, "succeeded": 1, "completionTime": stamp}})


# ---- what is measured --------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every Job version the watch delivered: the peak of the unfinished Jobs' parallelism and when it was full."""

    budget: int
    sizes: dict[str, int] = field(default_factory=dict)
    peak: int = 0
    full_at: float | None = None
    errors: list[str] = field(default_factory=list)

    def apply(self, kind: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        if kind == "DELETED" or finished(job):
            self.sizes.pop(name, None)
        else:
            self.sizes[name] = int(job["spec"].get("parallelism") or 0)
        total = sum(self.sizes.values())
        self.peak = max(self.peak, total)
        if total >= self.budget and self.full_at is None:
            self.full_at = time.time()


@contextmanager
def watching(batch_api: client.BatchV1Api, ledger: Ledger) -> Iterator[None]:
    stop = threading.Event()
    version = json.loads(batch_api.list_namespaced_job(NAMESPACE, _preload_content=False).data)["metadata"][  # type: ignore[attr-defined]
        "resourceVersion"]

    def run() -> None:
        nonlocal version
        while not stop.is_set():
            try:
                for event in watch.Watch().stream(batch_api.list_namespaced_job, NAMESPACE, resource_version=version,
                                                  timeout_seconds=5, _request_timeout=10):
                    obj = batch_api.api_client.sanitize_for_serialization(event["object"])
                    version = obj["metadata"]["resourceVersion"]
                    ledger.apply(event["type"], obj)
            except Exception as exc:  # resumed from the last version; reported
                ledger.errors.append(repr(exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=15)


@dataclass
class Shares:
    """Worker-seconds held and fairly due, per batch, integrated sample by sample.

    At each sample the workers actually running for batches that still have parts left are divided
    again by ``allocation.allocate`` over those batches: the fair share of what was in use, so the
    ratio measures the division, and ``in_use`` (all workers running, draining Jobs included) the use.
    """

    actual: dict[str, float] = field(default_factory=dict)
    fair: dict[str, float] = field(default_factory=dict)
    in_use: float = 0.0

    def sample(self, launcher: Launcher, player: PodPlayer, dt: float) -> None:
        held: dict[str, int] = {}
        for sim in list(player.jobs.values()):
            with sim.lock:
                held[sim.batch_id] = held.get(sim.batch_id, 0) + sum(1 for w in sim.workers if not w.is_set())
        self.in_use += sum(held.values()) * dt
        claims = [Claim(b.batch_id, b.remaining, b.request.parts_per_worker, b.request.max_parallelism,
                        b.request.priority, b.request.created) for b in list(launcher.batches.values())
                  if b.state not in TERMINAL and b.remaining > 0]
        for batch_id, share in allocate(claims, sum(held.get(c.batch_id, 0) for c in claims)).items():
            self.fair[batch_id] = self.fair.get(batch_id, 0.0) + share * dt
            self.actual[batch_id] = self.actual.get(batch_id, 0.0) + held.get(batch_id, 0) * dt


def prepare(pubsub: PubSub, batch_id: str, parts: int) -> None:
    """What ``submit`` does before its request: the batch's topics and subscriptions, its parts."""
    topology.create_batch(pubsub, batch_id, topology.BatchTopology(ack_deadline_s=10))
    items = [(b'{"n": 1}', {"batch_id": batch_id, "part": str(p), "parts": str(parts), "records": "1",
                             "sha256": "-", "format": "jsonl"}) for p in range(parts)]
    pubsub.publish_many(pubsub.settings.names.work(batch_id), iter(items), what="part")


def request(batch_id: str, parts: int, priority: str) -> Control:
    return Control("launch", batch_id, BatchRequest(
        batch_id=batch_id, parts=parts, records=parts, bytes=8 * parts, handler="batchctl.worker.demo:handle",
        parts_per_worker=PPW, max_parallelism=MAX_PAR, ack_deadline_s=10, priority=priority))


def fairness(shares: Shares, priorities: dict[str, str]) -> dict[str, Any]:
    ratios = {b: shares.actual.get(b, 0.0) / fair for b, fair in shares.fair.items() if fair >= 1.0}
    values = list(ratios.values())
    squares = sum(v * v for v in values)
    jain = sum(values) ** 2 / (len(values) * squares) if squares else float("nan")
    by_priority = {p: statistics.mean(r for b, r in ratios.items() if priorities[b] == p)
                   for p in ("low", "normal", "high")}
    return {"ratio_min": min(values), "ratio_median": statistics.median(values), "ratio_max": max(values),
            "jain_index": jain, "mean_ratio_by_priority": by_priority}


def run(host: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    prefix = prefix_for("bs")
    with api_server(workdir, kmock_history=False) as (_, kubeconfig):
        env = bench_env(host, prefix, BATCHCTL_BACKEND="kubernetes", KUBECONFIG=str(kubeconfig),
                        BATCHCTL_NAMESPACE=NAMESPACE, BATCHCTL_LEADER_ELECTION="false",
                        BATCHCTL_MAX_WORKERS=str(args.budget))
        settings = Settings.from_env(env)
        pubsub = PubSub(settings)
        batch_api = client.BatchV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        try:
            return measure(settings, pubsub, batch_api, args)
        finally:
            cleanup_prefix(pubsub, prefix)
            pubsub.close()


def measure(settings: Settings, pubsub: PubSub, batch_api: client.BatchV1Api,
            args: argparse.Namespace) -> dict[str, Any]:
    topology.ensure_shared(pubsub)
    ids = [f"share-{i:03d}" for i in range(args.batches)]
    priorities = {b: priority_of(i) for i, b in enumerate(ids)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda b: prepare(pubsub, b, args.parts), ids))
    parts = assemble(settings)
    launcher = Launcher(settings, PubSub(settings), parts.store, parts.backend, parts.elector)
    player, ledger, shares = PodPlayer(pubsub, batch_api, args.part_s), Ledger(args.budget), Shares()
    threads = [threading.Thread(target=launcher.run, daemon=True), threading.Thread(target=player.run, daemon=True)]
    with watching(batch_api, ledger):
        for thread in threads:
            thread.start()
        wait_until(lambda: launcher.elector.is_leader, timeout=30, what="the launcher to lead")
        t0 = time.time()
        futures = [pubsub.publish(settings.names.requests_topic, *encode_control(request(b, args.parts, priorities[b])))
                   for b in ids]
        for future in futures:
            future.result(timeout=60)
        elapsed = sample_until_done(launcher, player, shares, args, ids)
        launcher.stop()
        player.stop.set()
        threads[0].join(timeout=30)
    states = {b: launcher.batches[b] for b in ids if b in launcher.batches}
    exact = all(len(s.done) == args.parts and s.state == SUCCEEDED for s in states.values()) and len(states) == len(ids)
    return {"batches": args.batches, "budget": args.budget, "parts_per_batch": args.parts, "part_s": args.part_s,
            "peak_parallelism": ledger.peak, "budget_exceeded": ledger.peak > args.budget,
            "time_to_full_s": None if ledger.full_at is None else ledger.full_at - t0,
            "all_done_s": elapsed, "all_succeeded_exactly": exact,
            "ideal_s": args.batches * args.parts * args.part_s / args.budget,
            "watch_errors": len(ledger.errors), "fairness": fairness(shares, priorities),
            "mean_workers_in_use": shares.in_use / elapsed}


def sample_until_done(launcher: Launcher, player: PodPlayer, shares: Shares, args: argparse.Namespace,
                      ids: list[str]) -> float:
    start = last = shown = time.monotonic()
    while time.monotonic() - start < args.timeout:
        time.sleep(SAMPLE_S)
        now = time.monotonic()
        shares.sample(launcher, player, now - last)
        last = now
        if now - shown > 10:
            shown = now
            ended = sum(1 for i in ids if (b := launcher.batches.get(i)) is not None and b.state in TERMINAL)
            say(f"  {now - start:.0f} s: {ended}/{len(ids)} batches ended")
        if all((b := launcher.batches.get(i)) is not None and b.state in TERMINAL for i in ids):
            return now - start
    raise TimeoutError(f"not every batch finished within {args.timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--parts", type=int, default=12)
    parser.add_argument("--part-s", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--quick", action="store_true", help="40 batches, budget 20, 8 parts each")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.budget, args.parts = 40, 20, 8
    logs.configure(level="WARNING")
    with emulator() as emu, tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        say(f"budget_share: {args.batches} batches at once, budget {args.budget}, emulator {emu.host}")
        figures = run(emu.host, args, Path(tmp))
    fair = figures["fairness"]
    say(f"  peak parallelism {figures['peak_parallelism']} (budget {args.budget}); budget full after "
        f"{figures['time_to_full_s']:.2f} s; all done in {figures['all_done_s']:.1f} s "
        f"(ideal {figures['ideal_s']:.1f} s)")
    say(f"  mean workers running {figures['mean_workers_in_use']:.1f} of {args.budget}")
    say(f"  worker-seconds / fair share: min {fair['ratio_min']:.2f}, median {fair['ratio_median']:.2f}, "
        f"max {fair['ratio_max']:.2f}, Jain {fair['jain_index']:.3f}; by priority {fair['mean_ratio_by_priority']}")
    ok = not figures["budget_exceeded"] and figures["all_succeeded_exactly"]
    final_json({"bench": "budget_share", "ok": ok, **figures})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
