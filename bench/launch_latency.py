"""Request published → Job object created, on the Kubernetes backend (kmock API server, no kubelet).

    .venv/bin/python bench/launch_latency.py [--sequential 100] [--burst 1000] [--quick]

The launcher runs as it does in a cluster, as its own process (``python -m batchctl launcher
--backend kubernetes``, default tuning, leader election on), against kmock's Kubernetes API server
served over HTTP from this process and reached through a kubeconfig, and the real Pub/Sub emulator.
No pod ever runs: what is measured is request → Job object.

1. Sequential: ``--sequential`` batches of one part, one at a time. For each, the batch's topics,
   subscriptions and part are created first (not timed); then the request is built (its ``created``
   is stamped) and published on the control topic, and this process polls the API server's store
   every 2 ms until the Job ``<prefix>-<id>-1`` exists. p50/p95/max (target p50 < 0.5 s; the
   anchor, KEDA, polls every 30 s and reads a backlog metric that lags 1-3 min).
2. Burst: a fresh API server and launcher; ``--burst`` batches' resources created beforehand,
   then all their requests published at once: time until every Job exists, per-batch latency
   p50/p95, and the launcher's peak RSS (VmHWM) and CPU seconds from /proc, plus its CPU use
   while it then holds that many running batches for a few seconds.
Uses $PUBSUB_EMULATOR_HOST, or starts an emulator of its own. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    bench_env,
    cleanup_prefix,
    cpu_seconds,
    emulator,
    final_json,
    median,
    percentile,
    prefix_for,
    say,
    self_cpu_s,
    status_kb,
    wait_until,
)

from batchctl.core import logs, topology
from batchctl.core.emulator import free_port
from batchctl.core.messages import BatchRequest, Control, encode_control
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.splitter.submit import send_control
from tests.support.kube import ApiServer, ServingThread, running_api_server, write_kubeconfig
from tests.support.kube_objects import JOBS, LEASES

P50_TARGET_S = 0.5
NAMESPACE = "default"
HANDLER = "batchctl.worker.demo:handle"
STEADY_S = 10.0


@attrs.define(kw_only=True)
class BoundedHistoryApiServer(ApiServer):
    """The tests' ApiServer, minus kmock 0.8's unbounded request history.

    kmock matches every request against its reactions with ``request in payload._source``, which
    walks every request served so far: each request costs O(requests so far), so 1,000 batches
    (~5 requests each) slow the fake API server to >100 ms per write and the bench would measure
    kmock, not the launcher. The match runs synchronously right after the request is appended
    (no await in between), so dropping every earlier request here changes no answer.
    """

    async def _handle(self, request: Any) -> Any:
        del self._requests[:-1]
        return await ApiServer._handle(self, request)


@contextmanager
def api_server(directory: Path, *, kmock_history: bool) -> Iterator[tuple[ApiServer, Path]]:
    """Like ``tests.support.kube.running_api_server`` (which it is, with ``kmock_history``)."""
    if kmock_history:
        with running_api_server(directory, namespace=NAMESPACE) as served:
            yield served
        return
    server = BoundedHistoryApiServer()
    thread = ServingThread(server)
    thread.start()
    try:
        if not thread.ready.wait(10) or thread.failure is not None:
            raise RuntimeError("the API server did not start within 10 s") from thread.failure
        yield server, write_kubeconfig(directory / "kubeconfig", thread.url, namespace=NAMESPACE)
    finally:
        thread.stop(10)


@dataclass
class LauncherProc:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def figures(self) -> dict[str, float]:
        return {
            "cpu_s": cpu_seconds(self.pid),
            "rss_mb": status_kb(self.pid, "VmRSS") / 1024,
            "peak_rss_mb": status_kb(self.pid, "VmHWM") / 1024,
        }

    def stop(self) -> float:
        """SIGTERM, wait (bounded); seconds it took to exit."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return time.monotonic() - started


def start_launcher(env: dict[str, str], server: ApiServer, prefix: str, log: Path) -> LauncherProc:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchctl", "launcher", "--backend", "kubernetes", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    launcher = LauncherProc(proc, port, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"launcher exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                ok = resp.status == 200
        except OSError:
            return False
        lease = server.read_object(LEASES, NAMESPACE, f"{prefix}-launcher")
        return ok and bool(lease and (lease.get("spec") or {}).get("holderIdentity"))

    try:
        wait_until(ready, timeout=60, interval=0.1, what="the launcher to be ready and leading")
    except BaseException:
        launcher.stop()
        raise
    return launcher


def prepare(pubsub: PubSub, batch_id: str) -> None:
    """Everything ``submit`` does before its request: the batch's topics, subscriptions, one part."""
    topology.create_batch(pubsub, batch_id, topology.BatchTopology())
    data = b'{"n": 1}'
    attributes = {"batch_id": batch_id, "part": "0", "parts": "1", "records": "1", "sha256": "-", "format": "jsonl"}
    pubsub.publish(pubsub.settings.names.work(batch_id), data, attributes).result(timeout=60)


def request(batch_id: str) -> Control:
    return Control(
        "launch",
        batch_id,
        BatchRequest(
            batch_id=batch_id, parts=1, records=1, bytes=8, handler=HANDLER, parts_per_worker=1, max_parallelism=1
        ),
    )


def wait_job(server: ApiServer, name: str, timeout: float = 30.0) -> float:
    """Poll the API server's store until the Job exists; the wall-clock time it was first seen."""
    deadline = time.monotonic() + timeout
    while server.read_object(JOBS, NAMESPACE, name) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Job {name} not created within {timeout:.0f} s")
        time.sleep(0.002)
    return time.time()


def summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "n": len(latencies),
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "max_s": max(latencies),
        "min_s": min(latencies),
        "mean_s": sum(latencies) / len(latencies),
        "median_s": median(latencies),
    }


def scrape_latency_metric(port: int) -> dict[str, float]:
    """The launcher's own histogram of request → first Job (sum and count), as a cross-check."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        for key in ("sum", "count"):
            if line.startswith(f"batchctl_launch_latency_seconds_{key} "):
                found[key] = float(line.split()[1])
    if found.get("count"):
        found["mean_s"] = found["sum"] / found["count"]
    return found


@contextmanager
def kube_bench(
    host: str, prefix: str, workdir: Path, *, kmock_history: bool
) -> Iterator[tuple[ApiServer, dict[str, str], PubSub]]:
    """kmock with a kubeconfig, the environment of a kubernetes-backend launcher, and a Pub/Sub
    client with the shared topics; everything under ``prefix`` is deleted afterwards."""
    with api_server(workdir, kmock_history=kmock_history) as (server, kubeconfig):
        env = bench_env(
            host, prefix, BATCHCTL_BACKEND="kubernetes", KUBECONFIG=str(kubeconfig), BATCHCTL_NAMESPACE=NAMESPACE
        )
        pubsub = PubSub(Settings.from_env(env))
        topology.ensure_shared(pubsub)
        try:
            yield server, env, pubsub
        finally:
            cleanup_prefix(pubsub, prefix)
            pubsub.close()


def sequential(host: str, prefix: str, count: int, workdir: Path, *, kmock_history: bool) -> dict[str, Any]:
    with kube_bench(host, prefix, workdir, kmock_history=kmock_history) as (server, env, pubsub):
        names = pubsub.settings.names
        launcher = start_launcher(env, server, prefix, workdir / "launcher-seq.log")
        try:
            latencies: list[float] = []
            warm: float | None = None
            for i in range(count + 1):  # the first one warms up connections and is reported apart
                batch_id = f"seq-{i:04d}"
                prepare(pubsub, batch_id)
                control = request(batch_id)
                send_control(pubsub, control)
                seen = wait_job(server, names.job(batch_id, 1))
                assert control.request is not None
                latency = seen - control.request.created
                if i == 0:
                    warm = latency
                else:
                    latencies.append(latency)
            figures = summary(latencies)
            figures["first_request_s"] = warm or 0.0
            figures["launcher_metric"] = scrape_latency_metric(launcher.port)
            figures["launcher"] = launcher.figures()
        finally:
            figures_stop = launcher.stop()
    figures["launcher_stop_s"] = figures_stop
    say(
        f"  sequential: {count} batches, request → Job p50 {figures['p50_s'] * 1000:.0f} ms, "
        f"p95 {figures['p95_s'] * 1000:.0f} ms, max {figures['max_s'] * 1000:.0f} ms "
        f"(first request {figures['first_request_s'] * 1000:.0f} ms; target p50 < {P50_TARGET_S * 1000:.0f} ms)"
    )
    return figures


def burst(host: str, prefix: str, count: int, workdir: Path, steady_s: float, *, kmock_history: bool) -> dict[str, Any]:
    with kube_bench(host, prefix, workdir, kmock_history=kmock_history) as (server, env, pubsub):
        names = pubsub.settings.names
        batch_ids = [f"burst-{i:05d}" for i in range(count)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda b: prepare(pubsub, b), batch_ids))
        prepare_s = time.monotonic() - started
        say(f"  burst: {count} batches' topics, subscriptions and parts created in {prepare_s:.1f} s (not timed)")
        launcher = start_launcher(env, server, prefix, workdir / "launcher-burst.log")
        try:
            idle = launcher.figures()
            my_cpu = self_cpu_s()
            created: dict[str, float] = {}
            t0 = time.time()
            futures = []
            for batch_id in batch_ids:
                control = request(batch_id)
                assert control.request is not None
                created[batch_id] = control.request.created
                futures.append(pubsub.publish(names.requests_topic, *encode_control(control)))
            for future in futures:
                future.result(timeout=120)
            published_s = time.time() - t0
            seen: dict[str, float] = {}
            pending = {b: names.job(b, 1) for b in batch_ids}
            deadline = time.monotonic() + max(120.0, count * 0.5)
            while pending and time.monotonic() < deadline:
                now = time.time()
                for batch_id, job in list(pending.items()):
                    if server.read_object(JOBS, NAMESPACE, job) is not None:
                        seen[batch_id] = now
                        del pending[batch_id]
                if launcher.proc.poll() is not None:
                    raise SystemExit(f"launcher exited {launcher.proc.returncode}")
                time.sleep(0.02)
            all_s = (max(seen.values()) - t0) if seen else float("nan")
            after = launcher.figures()
            server_cpu = self_cpu_s() - my_cpu
            # Then hold: every batch is running (no pod will ever run), the launcher reconciles them all.
            time.sleep(steady_s)
            held = launcher.figures()
            figures: dict[str, Any] = {
                "batches": count,
                "launched": len(seen),
                "missing": len(pending),
                "publish_s": published_s,
                "all_jobs_s": all_s,
                "jobs_per_s": len(seen) / all_s if seen else 0.0,
                "latency": summary([seen[b] - created[b] for b in seen]) if seen else {},
                "launcher_idle_rss_mb": idle["rss_mb"],
                "launcher_peak_rss_mb": held["peak_rss_mb"],
                "launcher_cpu_s": after["cpu_s"] - idle["cpu_s"],
                "launcher_cpu_s_total": held["cpu_s"],
                "steady_s": steady_s,
                "steady_cpu_fraction": (held["cpu_s"] - after["cpu_s"]) / steady_s,
                "api_server_and_bench_cpu_s": server_cpu,
                "configmaps": len(server.list_objects(_configmaps(), NAMESPACE)),
                "prepare_s": prepare_s,
            }
        finally:
            stop_s = launcher.stop()
    figures["launcher_stop_s"] = stop_s
    lat = figures["latency"]
    say(
        f"  burst: {figures['launched']}/{count} Jobs in {all_s:.1f} s after the first request "
        f"({figures['jobs_per_s']:.0f} Jobs/s; requests published in {published_s:.1f} s), per-batch "
        f"p50 {lat.get('p50_s', 0):.1f} s p95 {lat.get('p95_s', 0):.1f} s"
    )
    say(
        f"  launcher: RSS {figures['launcher_idle_rss_mb']:.0f} MB idle → "
        f"peak {figures['launcher_peak_rss_mb']:.0f} MB, "
        f"{figures['launcher_cpu_s']:.1f} CPU s to launch {count}, then {figures['steady_cpu_fraction'] * 100:.0f}% "
        f"of a core holding {count} running batches; stopped in {stop_s:.1f} s after SIGTERM"
    )
    return figures


def _configmaps() -> Any:
    from tests.support.kube_objects import CONFIGMAPS

    return CONFIGMAPS


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--steady", type=float, default=STEADY_S, help="seconds to hold the burst's batches")
    parser.add_argument(
        "--kmock-history",
        action="store_true",
        help="serve with the tests' ApiServer as is (kmock keeps every request: writes slow down as O(requests))",
    )
    parser.add_argument("--quick", action="store_true", help="30 sequential, 200 at once, 5 s hold")
    args = parser.parse_args()
    if args.quick:
        args.sequential, args.burst, args.steady = min(args.sequential, 30), min(args.burst, 200), min(args.steady, 5)
    logs.configure(level="WARNING")
    base = prefix_for("ll")
    with emulator() as emu, tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp:
        kind = "as in the tests" if args.kmock_history else "request history bounded"
        say(f"launch_latency: kmock API server ({kind}) + launcher process, emulator {emu.host}")
        seq_dir, burst_dir = Path(tmp, "seq"), Path(tmp, "burst")
        seq_dir.mkdir()
        burst_dir.mkdir()
        seq = sequential(emu.host, f"{base}s", args.sequential, seq_dir, kmock_history=args.kmock_history)
        many = burst(emu.host, f"{base}b", args.burst, burst_dir, args.steady, kmock_history=args.kmock_history)
    ok = seq["p50_s"] < P50_TARGET_S and many["missing"] == 0
    final_json(
        {
            "bench": "launch_latency",
            "ok": ok,
            "p50_target_s": P50_TARGET_S,
            "sequential": seq,
            "burst": many,
            "kmock_history": args.kmock_history,
        }
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
