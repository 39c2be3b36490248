"""A stand-in for the Job controller and the kubelet: runs each Job's pods as local processes.

It talks to the API server only through the official ``kubernetes`` client, as the real components do:
it lists and watches Jobs (by label) and Pods, creates Pod objects (``generateName: <job>-``, the Job's
labels, an ownerReference), writes Pod and Job status through the ``status`` subresources, and deletes
pods gracefully. The decisions are one pure function, ``plan_job``, following the Job controller:

- work queue (``completions`` unset): up to ``parallelism`` pods; once one pod succeeded no new pod
  starts; the Job completes when every pod has finished and one succeeded (``SuccessCriteriaMet``,
  then ``Complete`` with ``completionTime``); with ``completions`` set, it completes at that count;
- a failed pod is replaced while the counted failures stay within ``backoffLimit``; beyond it the Job
  gets ``FailureTarget`` (reason BackoffLimitExceeded), its running pods are deleted, then ``Failed``;
- ``podFailurePolicy`` rules, first match wins: ``FailJob`` (onExitCodes In/NotIn) fails the Job at
  once (reason PodFailurePolicy); ``Ignore`` (e.g. onPodConditions DisruptionTarget, which ``evict``
  sets) neither counts nor shows in ``status.failed``; ``Count`` or no match counts;
- ``activeDeadlineSeconds`` (reason DeadlineExceeded); ``podReplacementPolicy: Failed`` (the default
  with a podFailurePolicy) waits for a terminating pod to end before replacing it;
- ``ttlSecondsAfterFinished``: a finished Job is deleted (Background) when its TTL has passed.

The kubelet half runs ``command + args`` of the first container (``entrypoint + args`` when the
command is unset, as the image's ENTRYPOINT would), with the container's ``env`` (literal values,
``$(VAR)`` references, ``valueFrom.fieldRef`` and ``configMapKeyRef``) over a base environment, in its
own process group; a deleted pod gets SIGTERM, then SIGKILL after its grace period; an exit code
``128 + n`` stands for death by signal ``n``. Deviations: one container per pod; no exponential
back-off between replacements unless ``failure_backoff`` is set (the real one starts at 10 s); no
``suspend``; no pod finalizers (counts come from the kubelet's own records of its pods).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import urllib3
from kubernetes import client, config, watch

log = logging.getLogger(__name__)

Obj = dict[str, Any]
USER_AGENT = "batchctl-test-kubelet"
BATCHCTL_JOBS = "app.kubernetes.io/name=batchctl"
TERMINAL = ("Succeeded", "Failed")
MAX_BACKOFF = 360.0  # the real controller caps its back-off at 6 minutes
VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _json(response: object) -> Obj:
    """The body of a call made with ``_preload_content=False`` (an urllib3 response), as a dict."""
    decoded: Obj = json.loads(cast(Any, response).data)
    return decoded


def _iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---- the Job controller's decisions, pure --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PodView:
    """What the controller knows of one of a Job's pods."""

    name: str
    phase: str  # Pending, Running, Succeeded, Failed
    terminating: bool = False  # deletion requested, process not ended yet
    exit_code: int | None = None
    disrupted: bool = False  # has the DisruptionTarget condition (evicted)
    container: str = "worker"


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """What the controller does next for one Job: pods to create and delete, the status to write."""

    create: int
    delete: tuple[str, ...]
    status: Obj
    counted_failures: int = 0


def pod_failure_action(pod: PodView, rules: Sequence[Mapping[str, Any]]) -> tuple[str, int | None]:
    """The action (and index) of the first podFailurePolicy rule matching a failed pod; Count if none."""
    for index, rule in enumerate(rules):
        codes = rule.get("onExitCodes")
        if codes and pod.exit_code not in (None, 0):
            if codes.get("containerName") not in (None, pod.container):
                continue
            inside = pod.exit_code in codes.get("values", [])
            if inside == (codes.get("operator", "In") == "In"):
                return rule["action"], index
        for pattern in rule.get("onPodConditions") or []:
            if (
                pattern.get("type") == "DisruptionTarget"
                and pod.disrupted
                and pattern.get("status", "True") == "True"
            ):
                return rule["action"], index
    return "Count", None


def _condition(kind: str, reason: str, message: str, now: float) -> Obj:
    stamp = _iso(now)
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
    }


def _failure(job: Obj, failed: Sequence[PodView], now: float) -> tuple[str, str] | None:
    """Why the Job fails now, if it does: (reason, message) of its FailureTarget condition."""
    spec, namespace = job["spec"], job["metadata"].get("namespace", "default")
    rules = (spec.get("podFailurePolicy") or {}).get("rules") or []
    for pod in failed:
        action, index = pod_failure_action(pod, rules)
        if action == "FailJob":
            return "PodFailurePolicy", (
                f"Container {pod.container} for pod {namespace}/{pod.name} failed with exit "
                f"code {pod.exit_code} matching FailJob rule at index {index}"
            )
    if len(failed) > spec.get("backoffLimit", 6):
        return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    started, deadline = _epoch((job.get("status") or {}).get("startTime")), spec.get("activeDeadlineSeconds")
    if deadline is not None and started is not None and now >= started + deadline:
        return "DeadlineExceeded", "Job was active longer than specified deadline"
    return None


SUCCESS = ("CompletionsReached", "Reached expected number of succeeded pods")


@dataclasses.dataclass(frozen=True)
class _Tally:
    running: list[PodView]  # not terminal, not being deleted: status.active
    terminating: list[PodView]  # not terminal, being deleted: status.terminating
    succeeded: int
    failed: list[PodView]  # failed and not ignored by the podFailurePolicy: status.failed

    @classmethod
    def of(cls, pods: Sequence[PodView], rules: Sequence[Mapping[str, Any]]) -> _Tally:
        return cls(
            running=[p for p in pods if p.phase not in TERMINAL and not p.terminating],
            terminating=[p for p in pods if p.phase not in TERMINAL and p.terminating],
            succeeded=sum(p.phase == "Succeeded" for p in pods),
            failed=[p for p in pods if p.phase == "Failed" and pod_failure_action(p, rules)[0] != "Ignore"],
        )


def _pods_wanted(spec: Obj, tally: _Tally) -> tuple[int, tuple[str, ...]]:
    """Pods to create and to delete while the Job is neither failing nor done."""
    want, completions = spec.get("parallelism", 1), spec.get("completions")
    if completions is not None:
        want = min(want, completions - tally.succeeded)
    elif tally.succeeded:
        want = len(tally.running)  # work queue: after one success, no new pod; the others run on
    replacing = spec.get("podReplacementPolicy") == "Failed"
    busy = len(tally.running) + (len(tally.terminating) if replacing else 0)
    return max(0, want - busy), tuple(p.name for p in tally.running[want:])


def _counters(status: Obj, tally: _Tally, conditions: list[Obj], now: float) -> Obj:
    """The status with the counters the real controller writes (zero counts are omitted, as in its JSON)."""
    status = dict(status)
    counters = {"active": len(tally.running), "succeeded": tally.succeeded, "failed": len(tally.failed)}
    for key, value in counters.items():
        if value:
            status[key] = value
        else:
            status.pop(key, None)
    status.update(
        ready=sum(p.phase == "Running" for p in tally.running),
        terminating=len(tally.terminating),
        startTime=status.get("startTime") or _iso(now),
        conditions=conditions,
    )
    if not conditions:
        status.pop("conditions")
    return status


def plan_job(job: Obj, pods: Sequence[PodView], now: float) -> JobPlan:
    """Decide from a Job and its pods what the Job controller does now (level-triggered, no side effects)."""
    spec, status = job["spec"], dict(job.get("status") or {})
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    kinds = {c["type"]: c for c in conditions}
    if "Complete" in kinds or "Failed" in kinds:
        return JobPlan(0, (), status)
    tally = _Tally.of(pods, (spec.get("podFailurePolicy") or {}).get("rules") or [])
    target = kinds.get("FailureTarget")
    failure = (target["reason"], target["message"]) if target else _failure(job, tally.failed, now)
    completions = spec.get("completions")
    done = (
        tally.succeeded >= completions if completions is not None else tally.succeeded and not tally.running
    )
    settled = not tally.running and not tally.terminating
    create, delete = 0, tuple(p.name for p in tally.running)
    if failure is not None:
        conditions += [
            _condition(kind, failure[0], failure[1], now)
            for kind in ("FailureTarget", "Failed")
            if kind not in kinds and (kind == "FailureTarget" or settled)
        ]
    elif done:
        conditions += [
            _condition(kind, SUCCESS[0], SUCCESS[1], now)
            for kind in ("SuccessCriteriaMet", "Complete")
            if kind not in kinds and (kind == "SuccessCriteriaMet" or settled)
        ]
        if settled:
            status["completionTime"] = _iso(now)
    else:
        create, delete = _pods_wanted(spec, tally)
    return JobPlan(create, delete, _counters(status, tally, conditions, now), len(tally.failed))


# ---- the kubelet's records and the informers ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PodHandle:
    """A snapshot of one pod the kubelet runs: its name, Job, process and outcome."""

    name: str
    job: str
    proc: subprocess.Popen[bytes] | None
    phase: str
    exit_code: int | None
    terminating: bool
    log_path: Path


@dataclasses.dataclass
class _Pod:
    name: str
    job: str
    job_uid: str
    container: str
    proc: subprocess.Popen[bytes] | None
    log_path: Path
    grace: float
    started: float
    phase: str = "Running"
    exit_code: int | None = None
    finished: float | None = None
    disrupted: bool = False
    deleting: bool = False
    term_at: float | None = None
    kill_at: float | None = None
    reported: str = "Pending"
    seen: bool = False  # seen in the API, so its absence there means it was removed
    removed: bool = False
    waiting_reason: str = ""

    def view(self) -> PodView:
        return PodView(
            self.name,
            self.phase,
            self.deleting and self.phase not in TERMINAL,
            self.exit_code,
            self.disrupted,
            self.container,
        )


class _Informer(threading.Thread):
    """List, then watch from the list's resourceVersion; re-list on 410 or error. Keeps a cache by name."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        *,
        namespace: str,
        selector: str | None,
        on_change: Callable[[], None],
        stopping: threading.Event,
    ) -> None:
        super().__init__(name=f"kubelet-informer-{kind}", daemon=True)
        self._list, self._namespace, self.selector = list_fn, namespace, selector
        self._on_change, self._stopping = on_change, stopping
        self._lock = threading.Lock()
        self._cache: dict[str, Obj] = {}
        self._watch: watch.Watch | None = None
        self.synced = threading.Event()

    def snapshot(self) -> dict[str, Obj]:
        with self._lock:
            return dict(self._cache)

    def store(self, obj: Obj) -> None:
        """Keep a newer version we wrote ourselves, without waiting for its watch event."""
        with self._lock:
            name, old = obj["metadata"]["name"], self._cache.get(obj["metadata"]["name"])
            if old is None or int(old["metadata"]["resourceVersion"]) < int(
                obj["metadata"]["resourceVersion"]
            ):
                self._cache[name] = obj

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._list_and_watch()
            except client.ApiException as exc:
                if exc.status != 410:
                    log.warning("kubelet %s watch failed: %s", self.name, exc)
                    self._stopping.wait(0.2)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if not self._stopping.is_set():
                    log.warning("kubelet %s watch broke: %s", self.name, exc)
                    self._stopping.wait(0.2)

    def _list_and_watch(self) -> None:
        kwargs = {"label_selector": self.selector} if self.selector else {}
        listed = _json(self._list(self._namespace, _preload_content=False, **kwargs))
        with self._lock:
            self._cache = {item["metadata"]["name"]: item for item in listed["items"]}
        self.synced.set()
        self._on_change()
        version = listed["metadata"]["resourceVersion"]
        while not self._stopping.is_set():
            self._watch = watch.Watch()
            for event in self._watch.stream(
                self._list, self._namespace, resource_version=version, timeout_seconds=5, **kwargs
            ):
                obj = event["raw_object"]
                version = obj["metadata"]["resourceVersion"]
                with self._lock:
                    if event["type"] == "DELETED":
                        self._cache.pop(obj["metadata"]["name"], None)
                    else:
                        self._cache[obj["metadata"]["name"]] = obj
                self._on_change()


def _expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names expand, others stay, ``$$`` is a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1), match.group(0))

    return VAR_REF.sub(one, text)


class Kubelet:
    """The Job controller and kubelet for tests; see the module docstring for the semantics.

    Use as a context manager, or ``start()`` then ``stop()``.
    """

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespace: str = "default",
        entrypoint: Sequence[str] = (sys.executable, "-m", "batchctl"),
        env: Mapping[str, str] | None = None,
        label_selector: str | None = BATCHCTL_JOBS,
        log_dir: Path | None = None,
        failure_backoff: float = 0.0,
        node_name: str = "kubelet-harness",
    ) -> None:
        """``label_selector=None`` watches every Job of the namespace; ``env`` defaults to ``os.environ``."""
        self.namespace, self.entrypoint, self.node_name = namespace, list(entrypoint), node_name
        self.base_env = dict(os.environ if env is None else env)
        self.failure_backoff = failure_backoff
        self.errors: list[str] = []
        self._log_dir = log_dir or Path(tempfile.mkdtemp(prefix="kubelet-"))
        self._api = config.new_client_from_config(config_file=str(kubeconfig))
        self._api.user_agent = USER_AGENT
        self._batch, self._core = client.BatchV1Api(self._api), client.CoreV1Api(self._api)
        self._lock = threading.RLock()
        self._pods: dict[str, _Pod] = {}
        self._ttl_deleted: set[str] = set()
        self._stopping, self._wakeup, self._passed = (
            threading.Event(),
            threading.Event(),
            threading.Condition(),
        )
        self._jobs = _Informer(
            "jobs",
            self._batch.list_namespaced_job,
            namespace=namespace,
            selector=label_selector,
            on_change=self._wakeup.set,
            stopping=self._stopping,
        )
        self._pod_api = _Informer(
            "pods",
            self._core.list_namespaced_pod,
            namespace=namespace,
            selector="batch.kubernetes.io/controller-uid",
            on_change=self._wakeup.set,
            stopping=self._stopping,
        )
        self._loop = threading.Thread(target=self._run, name="kubelet-loop", daemon=True)

    # ---- public surface -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Start watching; return once both caches are synced with the API server."""
        for thread in (self._jobs, self._pod_api, self._loop):
            thread.start()
        deadline = time.monotonic() + timeout
        for informer in (self._jobs, self._pod_api):
            if not informer.synced.wait(max(0.0, deadline - time.monotonic())):
                self.stop()
                raise TimeoutError(f"kubelet: {informer.name} did not sync within {timeout}s")
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def pods(self, job_name: str) -> list[PodHandle]:
        """The pods this kubelet started for a Job, oldest first."""
        with self._lock:
            return [
                PodHandle(
                    p.name,
                    p.job,
                    p.proc,
                    p.phase,
                    p.exit_code,
                    p.deleting and p.phase not in TERMINAL,
                    p.log_path,
                )
                for p in self._pods.values()
                if p.job == job_name
            ]

    def kill(self, pod: PodHandle | str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to a pod's processes, as a crash or the OOM killer would (it counts as a failure)."""
        record = self._record(pod)
        if record.proc is not None and record.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.proc.pid, sig)

    def evict(self, pod: PodHandle | str) -> None:
        """Evict a pod as the Eviction API does: DisruptionTarget condition, then a graceful delete."""
        record = self._record(pod)
        with self._lock:
            record.disrupted = True
        self._core.patch_namespaced_pod_status(
            record.name, self.namespace, {"status": self._pod_status(record)}
        )
        self._delete_pod(record)

    def wait_idle(self, timeout: float) -> None:
        """Wait until no pod runs, every write is done and every watched Job has finished."""
        deadline = time.monotonic() + timeout
        while not self._idle():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"kubelet not idle after {timeout}s: {self._busy_summary()}")
            with self._passed:
                self._passed.wait(min(left, 0.2))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching; SIGTERM every pod, SIGKILL each after its grace period. Bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wakeup.set()
        for informer in (self._jobs, self._pod_api):
            informer.stop()
        with self._lock:
            live = [
                (p.proc, p.grace) for p in self._pods.values() if p.proc is not None and p.proc.poll() is None
            ]
        for proc, _ in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        started = time.monotonic()
        for proc, grace in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, min(deadline, started + grace) - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.1, deadline - time.monotonic()))
        for thread in (self._loop, self._jobs, self._pod_api):
            if thread.is_alive():
                thread.join(max(0.1, deadline - time.monotonic()))
        self._api.close()

    # ---- the loop --------------------------------------------------------------------------------------

    def _record(self, pod: PodHandle | str) -> _Pod:
        with self._lock:
            return self._pods[pod if isinstance(pod, str) else pod.name]

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            due = time.time() + 0.5
            try:
                with self._lock:
                    due = min(due, self._run_pods(), self._run_jobs())
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.exception("kubelet pass failed")
                self.errors.append(repr(exc))
            with self._passed:
                self._passed.notify_all()
            self._wakeup.wait(max(0.01, due - time.time()))

    def _idle(self) -> bool:
        with self._lock:
            if any(
                p.phase not in TERMINAL or p.reported != p.phase or (p.deleting and not p.removed)
                for p in self._pods.values()
            ):
                return False
        listed = self._batch.list_namespaced_job(
            self.namespace, label_selector=self._jobs.selector, _preload_content=False
        )
        jobs = _json(listed)["items"]
        return all(self._finished(job) or job["metadata"].get("deletionTimestamp") for job in jobs)

    def _busy_summary(self) -> str:
        with self._lock:
            pods = [
                f"{p.name}={p.phase}/{p.reported}{' deleting' if p.deleting else ''}"
                for p in self._pods.values()
            ]
        jobs = {
            name: [c["type"] for c in (job.get("status") or {}).get("conditions", [])]
            for name, job in self._jobs.snapshot().items()
        }
        return f"pods {pods}, jobs {jobs}, errors {self.errors}"

    @staticmethod
    def _finished(job: Obj) -> bool:
        return any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (job.get("status") or {}).get("conditions") or []
        )

    # ---- the kubelet half --------------------------------------------------------------------------------

    def _run_pods(self) -> float:
        """Follow the processes: deletions asked through the API, signals due, exits to report."""
        api_pods, due, now = self._pod_api.snapshot(), time.time() + 0.5, time.time()
        for pod in list(self._pods.values()):
            self._observe_api(pod, api_pods.get(pod.name))
            if pod.proc is not None and pod.phase not in TERMINAL:
                due = min(due, self._signal_if_due(pod, now))
                self._reap(pod, now)
            if pod.reported != pod.phase and not pod.removed:
                self._report(pod)
            if pod.deleting and pod.phase in TERMINAL and not pod.removed:
                with contextlib.suppress(client.ApiException):
                    self._core.delete_namespaced_pod(pod.name, self.namespace, grace_period_seconds=0)
                pod.removed = True
        return due

    def _observe_api(self, pod: _Pod, api_pod: Obj | None) -> None:
        if api_pod is not None:
            pod.seen = True
            grace = api_pod["metadata"].get("deletionGracePeriodSeconds")
            if api_pod["metadata"].get("deletionTimestamp") and not pod.deleting:
                pod.deleting, pod.grace = True, float(grace if grace is not None else pod.grace)
        elif pod.seen and not pod.removed:
            pod.deleting, pod.removed = True, True  # removed (force-deleted) behind our back

    def _signal_if_due(self, pod: _Pod, now: float) -> float:
        assert pod.proc is not None
        if pod.deleting and pod.term_at is None:
            pod.term_at, pod.kill_at = now, now + pod.grace
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.proc.pid, signal.SIGTERM)
        if pod.kill_at is not None and now >= pod.kill_at:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.proc.pid, signal.SIGKILL)
        return pod.kill_at if pod.kill_at is not None and pod.kill_at > now else now + 0.5

    def _reap(self, pod: _Pod, now: float) -> None:
        assert pod.proc is not None
        code = pod.proc.poll()
        if code is not None:
            pod.exit_code = 128 - code if code < 0 else code
            pod.phase, pod.finished = ("Succeeded" if code == 0 else "Failed"), now

    def _report(self, pod: _Pod) -> None:
        try:
            self._core.patch_namespaced_pod_status(
                pod.name, self.namespace, {"status": self._pod_status(pod)}
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        pod.reported = pod.phase

    def _pod_status(self, pod: _Pod) -> Obj:
        running = pod.phase == "Running"
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if running else "False"},
        ]
        if pod.disrupted:
            conditions.append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "EvictionByEvictionAPI",
                    "message": "Eviction API: evicting",
                    "lastTransitionTime": _iso(time.time()),
                }
            )
        if pod.waiting_reason:
            state: Obj = {"waiting": {"reason": pod.waiting_reason}}
        elif pod.phase in TERMINAL:
            state = {
                "terminated": {
                    "exitCode": pod.exit_code,
                    "reason": "Completed" if pod.exit_code == 0 else "Error",
                    "startedAt": _iso(pod.started),
                    "finishedAt": _iso(pod.finished or time.time()),
                }
            }
        else:
            state = {"running": {"startedAt": _iso(pod.started)}}
        return {
            "phase": pod.phase,
            "startTime": _iso(pod.started),
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": pod.container,
                    "ready": running,
                    "started": running,
                    "restartCount": 0,
                    "image": "",
                    "imageID": "",
                    "state": state,
                }
            ],
        }

    # ---- the Job controller half --------------------------------------------------------------------------

    def _run_jobs(self) -> float:
        due, now = time.time() + 0.5, time.time()
        for job in self._jobs.snapshot().values():
            if job["metadata"].get("deletionTimestamp"):
                continue
            if self._finished(job):
                due = min(due, self._expire(job, now))
                continue
            pods = [p for p in self._pods.values() if p.job_uid == job["metadata"]["uid"]]
            plan = plan_job(job, [p.view() for p in pods], now)
            for name in plan.delete:
                self._delete_pod(self._pods[name])
            due = min(due, self._create_pods(job, plan, pods, now))
            if plan.create:  # count the pods just created, as the real controller does in the same sync
                pods = [p for p in self._pods.values() if p.job_uid == job["metadata"]["uid"]]
                plan = plan_job(job, [p.view() for p in pods], now)
            self._write_status(job, plan.status)
        return due

    def _expire(self, job: Obj, now: float) -> float:
        """The TTL-after-finished controller: delete a finished Job once its TTL has passed."""
        ttl, uid = job["spec"].get("ttlSecondsAfterFinished"), job["metadata"]["uid"]
        if ttl is None or uid in self._ttl_deleted:
            return now + 0.5
        ended = max(_epoch(c.get("lastTransitionTime")) or now for c in job["status"]["conditions"])
        if now < ended + float(ttl):
            return ended + float(ttl)
        self._ttl_deleted.add(uid)
        with contextlib.suppress(client.ApiException):
            self._batch.delete_namespaced_job(
                job["metadata"]["name"], self.namespace, propagation_policy="Background"
            )
        return now + 0.5

    def _create_pods(self, job: Obj, plan: JobPlan, pods: Sequence[_Pod], now: float) -> float:
        if plan.create and plan.counted_failures and self.failure_backoff:
            last = max(p.finished or 0.0 for p in pods)
            delay = min(MAX_BACKOFF, self.failure_backoff * 2.0 ** (plan.counted_failures - 1))
            if now < last + delay:
                return last + delay
        if plan.create and not self._still_wanted(job):
            return now + 0.5
        for _ in range(plan.create):
            self._start_pod(job)
        return now + 0.5

    def _still_wanted(self, job: Obj) -> bool:
        """Read the Job afresh before creating pods: the cache may not show its deletion yet."""
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        try:
            live = _json(self._batch.read_namespaced_job(name, self.namespace, _preload_content=False))
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(live["metadata"]["uid"] == uid and not live["metadata"].get("deletionTimestamp"))

    def _write_status(self, job: Obj, status: Obj) -> None:
        current = job.get("status") or {}
        if status == current:
            return
        patch = {key: status.get(key) for key in {*status, *current}}  # None removes a key
        written = self._batch.patch_namespaced_job_status(
            job["metadata"]["name"], self.namespace, {"status": patch}, _preload_content=False
        )
        self._jobs.store(_json(written))

    def _delete_pod(self, pod: _Pod) -> None:
        with contextlib.suppress(client.ApiException):
            self._core.delete_namespaced_pod(pod.name, self.namespace)
        with self._lock:
            pod.deleting = True

    def _pod_manifest(self, job: Obj) -> Obj:
        meta, template = job["metadata"], job["spec"]["template"]
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "controller-uid": meta["uid"],
            "batch.kubernetes.io/job-name": meta["name"],
            "job-name": meta["name"],
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{meta['name']}-",
                "namespace": self.namespace,
                "labels": labels,
                "annotations": (template.get("metadata") or {}).get("annotations") or {},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": self.node_name},
        }

    def _start_pod(self, job: Obj) -> None:
        manifest = cast(Any, self._pod_manifest(job))  # the client takes a dict body as it is
        created = _json(self._core.create_namespaced_pod(self.namespace, manifest, _preload_content=False))
        name, spec = created["metadata"]["name"], created["spec"]
        container = spec["containers"][0]
        pod = _Pod(
            name=name,
            job=job["metadata"]["name"],
            job_uid=job["metadata"]["uid"],
            container=container.get("name", ""),
            proc=None,
            log_path=self._log_dir / f"{name}.log",
            grace=float(spec.get("terminationGracePeriodSeconds", 30)),
            started=time.time(),
        )
        self._pods[name] = pod
        try:
            env = self._container_env(container, created)
        except (KeyError, ValueError, client.ApiException) as exc:
            pod.phase, pod.waiting_reason = "Pending", "CreateContainerConfigError"
            self.errors.append(f"pod {name}: {exc}")
            return
        pod.proc = self._spawn(container, env, pod.log_path)
        if pod.proc is None:
            pod.phase, pod.exit_code, pod.finished = "Failed", 128, time.time()
        else:
            threading.Thread(target=self._await_exit, args=(pod.proc,), daemon=True).start()

    def _await_exit(self, proc: subprocess.Popen[bytes]) -> None:
        while proc.poll() is None and not self._stopping.is_set():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        self._wakeup.set()

    def _spawn(
        self, container: Obj, env: Mapping[str, str], log_path: Path
    ) -> subprocess.Popen[bytes] | None:
        command = [_expand(arg, env) for arg in container.get("command") or []]
        args = [_expand(arg, env) for arg in container.get("args") or []]
        argv = (command or self.entrypoint) + args
        with log_path.open("wb") as out:
            try:
                return subprocess.Popen(
                    argv,
                    env=dict(env),
                    cwd=container.get("workingDir"),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:  # StartError: the container cannot run
                out.write(f"cannot start {argv}: {exc}\n".encode())
                return None

    def _container_env(self, container: Obj, pod: Obj) -> dict[str, str]:
        defined: dict[str, str] = {}
        for var in container.get("env") or []:
            if "valueFrom" in var:
                defined[var["name"]] = self._value_from(var["valueFrom"], pod)
            else:
                defined[var["name"]] = _expand(var.get("value", ""), defined)
        return {**self.base_env, "HOSTNAME": pod["metadata"]["name"], **defined}

    def _value_from(self, source: Obj, pod: Obj) -> str:
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            meta, spec = pod["metadata"], pod["spec"]
            fields = {
                "metadata.name": meta["name"],
                "metadata.namespace": meta["namespace"],
                "metadata.uid": meta["uid"],
                "spec.nodeName": spec.get("nodeName", ""),
                "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
                "status.podIP": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
            }
            found = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
            if found:
                return str((meta.get(found.group(1)) or {}).get(found.group(2), ""))
            return str(fields[path])
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = self._core.read_namespaced_config_map(ref["name"], self.namespace).data or {}
            return str(data[ref["key"]])
        raise ValueError(f"unsupported valueFrom {sorted(source)}")


@contextlib.contextmanager
def running_kubelet(kubeconfig: Path, **options: Any) -> Iterator[Kubelet]:
    """A started ``Kubelet``, stopped (bounded) on exit."""
    with Kubelet(kubeconfig, **options) as kubelet:
        yield kubelet
