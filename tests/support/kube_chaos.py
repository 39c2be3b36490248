"""The chaos run on the Kubernetes backend: a big batch and a small one while the cluster is disrupted.

Shared by ``bench/chaos --backend kubernetes`` (the full run) and ``tests/e2e/test_kube_chaos.py``
(its short CI form). Everything is real and on loopback (``kube_chaos_cluster``): the Pub/Sub
emulator and the kmock API server, each behind a fault proxy; the test kubelet running each Job's
pods as worker processes; two ``batchctl launcher`` replicas electing a leader through the Lease;
``batchctl submit`` and ``status`` as subprocesses. The driver only watches and disrupts, at seeded
random points of the main batch's progress (``kube_chaos_plan`` lists the disruptions); it never
helps a batch along. One set-up step departs from the product: the work subscriptions lose their
retry policy right after submit (``retry_policy.py``: the emulator's defect). Progress is the
handler's own (``chaos_handler``'s call logs), so the clock runs on while the launchers cannot save.

The second batch is sacrificial: mid-run its state ConfigMap is cut short. It must end ``failed``
with a reason naming the unreadable state, while the main batch is unaffected and no launcher
crashes. Lasting disruptions (a launcher down, a frozen leader, an API or Pub/Sub outage) run at
most one per holder at a time and are ended on their own clocks while the driver goes on.

The proof at the end comes from the handler's output and the API server's request log
(``kube_chaos_report``): lost parts, duplicates and redeliveries each blamed on a cause, Jobs and
pods created per batch against the bound the launcher promises.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock

from tests.support.chaos_plan import Disruption, Kill, Outage
from tests.support.kube_chaos_cluster import DRIVER_AGENT, NAMESPACE, KubeCluster
from tests.support.kube_chaos_plan import LONG, Done, KubeChaosConfig, schedule
from tests.support.kube_chaos_report import Progress, report
from tests.support.kube_objects import CONFIGMAPS, JOBS, LEASES
from tests.support.pods import PodHandle
from tests.support.retry_policy import drop_retry_policy

SETTLE_S = 60.0


def launchers_only(request: kmock.Request) -> bool:
    """A fault meant for the launchers spares the driver's own writes (the corruption)."""
    return DRIVER_AGENT not in request.headers.get("User-Agent", "")


def pid_of(pod: PodHandle) -> int:
    return pod.proc.pid if pod.proc is not None else 0


class KubeChaosRun:
    """Drive one run; ``run()`` returns the report (a dict, JSON-ready)."""

    def __init__(self, config: KubeChaosConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.cluster = KubeCluster(config)
        self.progress = Progress(self.cluster.calls, config.prefix, (config.batch_id, config.spare_id))
        self.started = 0.0
        self.kills: list[Kill] = []
        self.done: list[Done] = []
        self.outage: Outage | None = None
        self.crashes: list[dict[str, Any]] = []
        self.active: dict[str, tuple[float, Callable[[], None], Done]] = {}
        """Lasting disruptions under way: holder -> (when it ends, how to end it, its record)."""
        self.compacted_at: list[float] = []
        self.forbidden: list[str] = []
        self.corrupted: dict[str, Any] | None = None
        self.submitted: dict[str, Any] = {}

    def say(self, text: str) -> None:
        if not self.cfg.quiet:
            print(f"[{time.monotonic() - self.started:7.1f}s] {text}", flush=True)

    def at_s(self) -> float:
        return round(time.monotonic() - self.started, 1)

    # ---- the run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.started = time.monotonic()
        try:
            self.cluster.start()
            leader = self.cluster.wait_leader()
            self.say(f"cluster up: {leader.name} leads; Pub/Sub at {self.cluster.pubsub_proxy.address}, "  # type: ignore[union-attr]
                     f"API server for the launchers at {self.cluster.api_proxy.address}")  # type: ignore[union-attr]
            plan = schedule(self.cfg, self.rng)
            if not any(d.kind == "delete_job" for d in plan):
                self._forbid_next_create()  # the 403 then meets the first Job create
            self.submitted = {
                self.cfg.batch_id: self._submit(self.cfg.batch_id, self.cfg.parts, self.cfg.max_parallelism),
                self.cfg.spare_id: self._submit(self.cfg.spare_id, self.cfg.spare_parts, 1)}
            outcome = self._drive(plan)
            return report(self, outcome)
        finally:
            self.cluster.close()

    def _submit(self, batch_id: str, parts: int, parallelism: int) -> dict[str, Any]:
        import json

        from tests.support.chaos_plan import record

        path = self.cluster.dir / f"{batch_id}.jsonl"
        path.write_text("".join(json.dumps(record(i)) + "\n" for i in range(parts)))
        began = time.monotonic()
        done = self.cluster.cli("submit", str(path), "--batch-id", batch_id, "--records-per-part", "1",
                                "--handler", "tests.support.chaos_handler:handle",
                                "--max-parallelism", str(parallelism),
                                "--parts-per-worker", str(self.cfg.parts_per_worker),
                                "--ack-deadline", str(self.cfg.ack_deadline_s), "--json")
        if done.returncode != 0:
            raise RuntimeError(f"submit {batch_id} failed ({done.returncode}): {done.stderr[-2000:]}")
        submitted: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        submitted["seconds"] = round(time.monotonic() - began, 1)
        if not self.cfg.retry_policy:  # before any disruption: see retry_policy.py
            drop_retry_policy(self.cluster.env, batch_id)
        self.say(f"submitted {batch_id}: {submitted['parts']} parts in {submitted['seconds']} s")
        return submitted

    def _drive(self, plan: list[Disruption]) -> dict[str, Any]:
        from batchctl.launcher.state import TERMINAL

        corrupt_at = self.rng.uniform(*self.cfg.corrupt_span) if self.cfg.corrupt else None
        deadline = self.started + self.cfg.time_limit_s
        next_at = 0.0
        while True:
            self.progress.update()
            self._end_due()
            self._check_launchers()
            main, spare = self.cluster.stored(self.cfg.batch_id), self.cluster.stored(self.cfg.spare_id)
            ended = [b is not None and b.state in TERMINAL for b in (main, spare)]
            if all(ended) and not self.active:
                self.say(f"{self.cfg.batch_id} {main.state}, {self.cfg.spare_id} {spare.state}")  # type: ignore[union-attr]
                return {"ended": main.state, "pending": [d.kind for d in plan]}  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                self.say("TIME LIMIT reached before the batches ended")
                self._end_all()
                return {"ended": "timeout", "pending": [d.kind for d in plan]}
            progress = self.progress.fraction(self.cfg.batch_id, self.cfg.parts)
            spare_progress = self.progress.fraction(self.cfg.spare_id, self.cfg.spare_parts)
            if corrupt_at is not None and spare_progress >= corrupt_at and self._corrupt(spare_progress):
                corrupt_at = None
            if plan and plan[0].at <= progress and time.monotonic() >= next_at and self._disrupt(plan[0], progress):
                plan.pop(0)
                next_at = time.monotonic() + self.rng.uniform(0.1, 0.6)
            time.sleep(0.1)

    # ---- lasting disruptions -------------------------------------------------------------------
    def _hold(self, kind: str, seconds: float, end: Callable[[], None], record: Done) -> None:
        self.active[LONG[kind]] = (time.monotonic() + seconds, end, record)

    def _end_due(self, force: bool = False) -> None:
        for holder, (due, end, record) in list(self.active.items()):
            if force or time.monotonic() >= due:
                del self.active[holder]
                end()
                record.seconds = round(self.at_s() - record.at_s, 1)

    def _end_all(self) -> None:
        self._end_due(force=True)

    def _check_launchers(self) -> None:
        """A launcher that exits by itself is a crash: record it, start it again, go on."""
        for replica in self.cluster.replicas:
            if replica.proc is None or replica.alive() or replica.expected_exit:
                continue
            tail = replica.log.read_text(errors="replace")[-3000:]
            self.crashes.append({"replica": replica.name, "exit_code": replica.proc.returncode, "at_s": self.at_s(),
                                 "log_tail": tail})
            self.say(f"LAUNCHER {replica.name} CRASHED with exit {replica.proc.returncode}; restarting it")
            replica.start()

    # ---- disruptions ----------------------------------------------------------------------------
    def _disrupt(self, event: Disruption, progress: float) -> bool:
        if event.kind in LONG and LONG[event.kind] in self.active:
            return False
        act = getattr(self, f"_{event.kind}")
        record = Done(event.kind, round(progress, 3), self.at_s())
        if not act(event, record):
            return False
        self.done.append(record)
        self.say(f"{event.kind} {event.sig} at {progress:.0%}: {record.detail}")
        return True

    def _kill(self, event: Disruption, record: Done) -> bool:
        return self._hit_pod(record, lambda pod: self.cluster.kubelet.kill(pod, signal.Signals[event.sig]),  # type: ignore[union-attr]
                             event.sig)

    def _evict(self, event: Disruption, record: Done) -> bool:
        return self._hit_pod(record, self.cluster.kubelet.evict, "EVICTION")  # type: ignore[union-attr]

    def _hit_pod(self, record: Done, act: Callable[[Any], None], cause: str) -> bool:
        struck = {k.pid for k in self.kills}
        pods = [p for p in self.cluster.live_pods(self.cfg.batch_id) if pid_of(p) not in struck]
        if not pods:
            return False
        pod = self.rng.choice(pods)
        act(pod)
        self.kills.append(Kill(time.time(), pid_of(pod), pod.name, cause, record.progress))
        record.detail = {"pod": pod.name, "signal": cause}
        return True

    def _delete_job(self, event: Disruption, record: Done) -> bool:
        running = self.cluster.running_jobs(self.cfg.batch_id)
        if not running:
            return False
        job = running[-1]["metadata"]["name"]
        forbidden = self._forbid_next_create()
        pods = self.cluster.live_pods(self.cfg.batch_id)
        self.cluster.batch.delete_namespaced_job(job, NAMESPACE, propagation_policy="Background")
        for pod in pods:
            if pod.job == job:
                self.kills.append(Kill(time.time(), pid_of(pod), pod.name, "JOB_DELETED", record.progress))
        record.detail = {"job": job, "pods": sum(p.job == job for p in pods), "next_create_403": forbidden}
        return True

    def _forbid_next_create(self) -> str:
        """The launcher's next Job create for the main batch is refused once with 403 (a quota)."""
        stored = self.cluster.stored(self.cfg.batch_id)
        name = self.cluster.names.job(self.cfg.batch_id, len(stored.jobs) + 1 if stored else 1)
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
                  "message": f'jobs "{name}" is forbidden: exceeded quota: chaos, requested: pods=4, limited: pods=0'}
        self.cluster.server[  # type: ignore[index]
            "post", JOBS, kmock.data({"metadata": {"name": name}})][:1] << 403 << status
        self.forbidden.append(name)
        return name

    def _throttle(self, event: Disruption, record: Done) -> bool:
        n = sum(d.kind == "throttle" for d in self.done)
        target = ("patch", CONFIGMAPS, "state saves") if n % 2 == 0 else ("get", LEASES, "Lease reads")
        headers = kmock.headers({"Retry-After": str(self.cfg.retry_after_s)})
        view = self.cluster.server[target[0], target[1]][launchers_only]  # type: ignore[index]
        seen = len(list(view))  # a slice counts every request the filter ever matched: take the next ones
        view[seen : seen + self.cfg.throttle_count] << 429 << headers
        record.detail = {"answers": self.cfg.throttle_count, "on": target[2], "retry_after_s": self.cfg.retry_after_s}
        return True

    def _watch_gone(self, event: Disruption, record: Done) -> bool:
        self.compacted_at.append(time.monotonic())
        self.cluster.server.compact()  # type: ignore[union-attr]
        record.detail = {"watches": "ended, history compacted (410 on resume)"}
        return True

    def _launcher_kill(self, event: Disruption, record: Done) -> bool:
        leader = self.cluster.leader()
        if leader is None:
            return False
        leader.expected_exit = True
        leader.signal(signal.SIGKILL)
        code = leader.proc.wait(30)  # type: ignore[union-attr]
        down = round(self.rng.uniform(0.5, 3.0), 2)
        record.detail = {"replica": leader.name, "exit_code": code, "down_s": down}
        self._hold(event.kind, down, leader.start, record)
        return True

    def _freeze(self, event: Disruption, record: Done) -> bool:
        leader = self.cluster.leader()
        if leader is None:
            return False
        leader.signal(signal.SIGSTOP)
        record.detail = {"replica": leader.name, "frozen_s": self.cfg.freeze_s}

        def thaw() -> None:
            now = self.cluster.leader()
            record.detail["leader_at_thaw"] = now.name if now else None
            leader.signal(signal.SIGCONT)

        self._hold(event.kind, self.cfg.freeze_s, thaw, record)
        return True

    def _api_outage(self, event: Disruption, record: Done) -> bool:
        proxy = self.cluster.api_proxy
        assert proxy is not None
        cut = proxy.stats.cut
        proxy.down()

        def restore() -> None:
            proxy.restore()
            record.detail["connections_cut"] = proxy.stats.cut - cut

        record.detail = {"planned_s": self.cfg.api_outage_s}
        self._hold(event.kind, self.cfg.api_outage_s, restore, record)
        return True

    def _pubsub_outage(self, event: Disruption, record: Done) -> bool:
        proxy = self.cluster.pubsub_proxy
        assert proxy is not None
        outage = self.outage = Outage(record.progress)
        cut = proxy.stats.cut
        outage.started_at = time.time()
        proxy.down()

        def restore() -> None:
            proxy.restore()
            outage.ended_at = time.time()
            outage.seconds = round(outage.ended_at - outage.started_at, 2)
            outage.connections_cut = proxy.stats.cut - cut
            record.detail["connections_cut"] = outage.connections_cut

        record.detail = {"planned_s": self.cfg.pubsub_outage_s}
        self._hold(event.kind, self.cfg.pubsub_outage_s, restore, record)
        return True

    def _corrupt(self, spare_progress: float) -> bool:
        """Cut the second batch's state document short, as a torn write would leave it."""
        from batchctl.launcher.state import TERMINAL
        from batchctl.launcher.store import STATE_KEY

        stored = self.cluster.stored(self.cfg.spare_id)
        if stored is None or stored.state in TERMINAL:
            return False
        name = self.cluster.names.state_object(self.cfg.spare_id)
        cm = self.cluster.server.read_object(CONFIGMAPS, NAMESPACE, name)  # type: ignore[union-attr]
        text = cm["data"][STATE_KEY]  # type: ignore[index]
        garbage = text[: len(text) // 3]
        self.cluster.core.patch_namespaced_config_map(name, NAMESPACE, {"data": {STATE_KEY: garbage}})
        self.corrupted = {"configmap": name, "progress": round(spare_progress, 3), "at_s": self.at_s(),
                          "garbage": garbage, "stored_done": len(stored.done)}
        self.done.append(Done("corrupt", round(self.progress.fraction(self.cfg.batch_id, self.cfg.parts), 3),
                              self.at_s(), {"configmap": name, "spare_progress": round(spare_progress, 3)}))
        self.say(f"state of {self.cfg.spare_id} cut short at {spare_progress:.0%} of its progress ({name})")
        return True

    def work_dir(self) -> Path:
        return self.cluster.dir
