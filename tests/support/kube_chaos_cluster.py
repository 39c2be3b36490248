"""The stand-in cluster of a Kubernetes chaos run, all on loopback, and what the driver reads of it.

The Pub/Sub emulator behind a fault proxy (every client goes through it: submit, the launchers, the
workers the Jobs run); the strict kmock API server, which the launchers reach through a second
fault proxy while the test kubelet (the cluster's own side) and the driver talk to it directly;
the test kubelet running each Job's pods as ``batchctl worker`` processes; two ``batchctl launcher``
replicas (processes) electing a leader through the Lease.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kubernetes import client, config

from batchctl.core.emulator import free_port
from batchctl.core.names import LABEL_BATCH, Names
from batchctl.launcher.state import BatchState, decode
from batchctl.launcher.store import STATE_KEY
from tests.support.chaos_handler import CALLS_ENV, WORK_ENV
from tests.support.containers import IMAGE_ENV
from tests.support.kube import ApiServer, running_api_server, write_kubeconfig
from tests.support.kube_chaos_plan import KubeChaosConfig
from tests.support.kube_objects import CONFIGMAPS, JOBS, LEASES
from tests.support.kubelet import USER_AGENT, Kubelet
from tests.support.pods import PodHandle
from tests.support.processes import http_ok
from tests.support.proxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "default"
DRIVER_AGENT = "batchctl-chaos-driver"
"""The driver's own API client (its corrupting write): the faults meant for the launchers spare it."""


class Replica:
    """One ``batchctl launcher`` process (restartable), ``BATCHCTL_POD_NAME`` = ``name``."""

    def __init__(self, name: str, env: dict[str, str], folder: Path) -> None:
        self.name, self.env, self.log = name, {**env, "BATCHCTL_POD_NAME": name}, folder / f"{name}.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.expected_exit = False
        """Set while the driver is stopping or killing it: its exit is not a crash."""

    def start(self) -> None:
        self.starts += 1
        self.expected_exit = False
        with self.log.open("ab") as out:
            out.write(f"---- launcher start {self.starts}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batchctl", "launcher", "--port", str(self.port)], env=self.env, cwd=REPO,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return self.alive() and http_ok(f"http://127.0.0.1:{self.port}/readyz")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stop(self, timeout: float = 45) -> int | None:
        """SIGTERM (after SIGCONT, in case it is frozen); SIGKILL if it has not exited in time."""
        if self.proc is None:
            return None
        self.expected_exit = True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


class KubeCluster:
    """Start with ``start()``, end with ``close()`` (bounded, idempotent)."""

    def __init__(self, cfg: KubeChaosConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.work_dir
        self.names = Names(cfg.prefix)
        self.results, self.calls, self.pods_dir = self.dir / "results", self.dir / "calls", self.dir / "pods"
        self._stack = contextlib.ExitStack()
        self.emulator: Any = None
        self.pubsub_proxy: FaultProxy | None = None
        self.api_proxy: FaultProxy | None = None
        self.server: ApiServer | None = None
        self.kubelet: Kubelet | None = None
        self.replicas: list[Replica] = []
        self.env: dict[str, str] = {}
        self._api: client.ApiClient | None = None

    # ---- start and end ---------------------------------------------------------------------------
    def start(self) -> None:
        from batchctl.core.emulator import Emulator

        for folder in (self.results, self.calls, self.pods_dir):
            folder.mkdir(parents=True, exist_ok=True)
        upstream = self.cfg.emulator_host
        if not upstream:
            self.emulator = Emulator.start(log_dir=self.dir)
            self._stack.callback(self.emulator.stop)
            upstream = self.emulator.host
        self.pubsub_proxy = self._stack.enter_context(FaultProxy(upstream))
        self.server, direct = self._stack.enter_context(running_api_server(self.dir, namespace=NAMESPACE))
        url = json.loads(direct.read_text())["clusters"][0]["cluster"]["server"]
        self.api_proxy = self._stack.enter_context(FaultProxy(url.removeprefix("http://")))
        proxied = write_kubeconfig(self.dir / "kubeconfig-proxied", f"http://{self.api_proxy.address}",
                                   namespace=NAMESPACE)
        self._api = config.new_client_from_config(config_file=str(direct))
        self._api.user_agent = DRIVER_AGENT
        self._stack.callback(self._api.close)
        self.env = self._environment(proxied)
        self.kubelet = Kubelet(direct, namespace=NAMESPACE, env=self._image_env(), log_dir=self.pods_dir).start()
        self._stack.callback(self.kubelet.stop, 30)
        self.replicas = [Replica(name, self.env, self.dir) for name in ("launcher-a", "launcher-b")]
        self._stack.callback(self._stop_replicas)
        for replica in self.replicas:
            replica.start()

    def close(self) -> None:
        self._stack.close()

    def _stop_replicas(self) -> None:
        for replica in self.replicas:
            if replica.alive():
                replica.expected_exit = True
                replica.signal(signal.SIGCONT)
                replica.signal(signal.SIGKILL)
                replica.proc.wait(10)  # type: ignore[union-attr]

    def _environment(self, kubeconfig: Path) -> dict[str, str]:
        """What the launchers, submit and status run with: both services through their proxies."""
        assert self.pubsub_proxy is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCTL_")}
        env.update({
            "PYTHONPATH": str(REPO), "GOOGLE_CLOUD_PROJECT": "batchctl-chaos",
            "PUBSUB_EMULATOR_HOST": self.pubsub_proxy.address, "KUBECONFIG": str(kubeconfig),
            "BATCHCTL_BACKEND": "kubernetes", "BATCHCTL_NAMESPACE": NAMESPACE, "BATCHCTL_PREFIX": self.cfg.prefix,
            "BATCHCTL_LEADER_ELECTION": "true", "BATCHCTL_EMPTY_PULLS": "3", "BATCHCTL_DRAIN_BUDGET_S": "5",
        })
        return env

    def _image_env(self) -> dict[str, str]:
        """The pods' image: batchctl's ENV, the chaos handler importable, fast pull settings."""
        return {**IMAGE_ENV, "PYTHONPATH": str(REPO), "BATCHCTL_RESULTS_DIR": str(self.results),
                CALLS_ENV: str(self.calls), WORK_ENV: str(self.cfg.part_s), "BATCHCTL_PULL_TIMEOUT_S": "0.5",
                "BATCHCTL_LEASE_S": str(self.cfg.lease_s)}

    # ---- reading the cluster -----------------------------------------------------------------------
    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self._api)

    def leader(self) -> Replica | None:
        """The replica named in the Lease, if it is alive (a SIGKILLed holder stays named until taken)."""
        assert self.server is not None
        lease = self.server.read_object(LEASES, NAMESPACE, self.names.lease) or {}
        holder = (lease.get("spec") or {}).get("holderIdentity")
        return next((r for r in self.replicas if r.name == holder and r.alive()), None)

    def wait_leader(self, timeout: float = 60) -> Replica:
        deadline = time.monotonic() + timeout
        while (leader := self.leader()) is None or not leader.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no launcher led within {timeout} s (logs in {self.dir})")
            time.sleep(0.2)
        return leader

    def stored(self, batch_id: str) -> BatchState | None:
        """The batch as its state ConfigMap holds it now (read at the server, past any proxy)."""
        assert self.server is not None
        name = self.names.state_object(batch_id)
        cm = self.server.read_object(CONFIGMAPS, NAMESPACE, name)
        if cm is None or STATE_KEY not in (cm.get("data") or {}):
            return None
        return decode(cm["data"][STATE_KEY], version=None, where=f"ConfigMap {name}", batch_id=batch_id)

    def jobs(self, batch_id: str) -> list[dict[str, Any]]:
        assert self.server is not None
        return [j for j in self.server.list_objects(JOBS, NAMESPACE)
                if (j["metadata"].get("labels") or {}).get(LABEL_BATCH) == batch_id]

    def running_jobs(self, batch_id: str) -> list[dict[str, Any]]:
        def ended(job: dict[str, Any]) -> bool:
            return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                       for c in (job.get("status") or {}).get("conditions") or [])

        return [j for j in self.jobs(batch_id) if not ended(j) and not j["metadata"].get("deletionTimestamp")]

    def live_pods(self, batch_id: str) -> list[PodHandle]:
        """Pods of the batch's Jobs whose worker process runs and that are not being deleted."""
        assert self.kubelet is not None
        return [p for job in self.jobs(batch_id) for p in self.kubelet.pods(job["metadata"]["name"])
                if p.phase == "Running" and not p.terminating and p.proc is not None and p.proc.poll() is None]

    def any_pod_running(self) -> int:
        assert self.kubelet is not None
        return sum(1 for job in self.jobs(self.cfg.batch_id) + self.jobs(self.cfg.spare_id)
                   for p in self.kubelet.pods(job["metadata"]["name"]) if p.proc is not None and p.proc.poll() is None)

    def created(self) -> tuple[Counter[str], Counter[str], list[tuple[str, int | None]]]:
        """From the API server's request log: Jobs the launchers created (201) per batch, pods the
        Job controller created per batch, and every Job create with its answer."""
        assert self.server is not None
        log = self.server.request_log()
        creates = [r for r in log if r.rbac == ("batch", "jobs", "create") and r.user_agent != USER_AGENT]
        job_batch: dict[str, str] = {}
        jobs: Counter[str] = Counter()
        for r in creates:
            if r.status == 201:
                batch_id = (r.body["metadata"].get("labels") or {}).get(LABEL_BATCH, "?")
                job_batch[r.body["metadata"]["name"]] = batch_id
                jobs[batch_id] += 1
        pods: Counter[str] = Counter()
        for r in log:
            if r.rbac == ("", "pods", "create") and r.status == 201:
                owners = (r.body.get("metadata") or {}).get("ownerReferences") or [{}]
                pods[job_batch.get(owners[0].get("name", ""), "?")] += 1
        return jobs, pods, [(r.body["metadata"]["name"], r.status) for r in creates]

    def answered(self, status: int) -> int:
        """Requests of the launchers and the CLI the API server answered with ``status``."""
        assert self.server is not None
        return sum(1 for r in self.server.request_log() if r.status == status and r.user_agent != USER_AGENT)

    def relists_since(self, received: float) -> int:
        """Job lists by the launchers (not the kubelet) that arrived after ``received`` (monotonic)."""
        assert self.server is not None
        return sum(1 for r in self.server.request_log() if r.rbac == ("batch", "jobs", "list")
                   and r.user_agent != USER_AGENT and r.received >= received)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "batchctl", *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, check=False)
