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
- ``parallelism`` patched on a running Job: extra running pods are deleted (scale down; 0 pauses the
  Job), missing ones created (scale up); ``suspend: true`` deletes the running pods and creates none
  (condition ``Suspended``, no ``startTime``) until it is set back to false (JobResumed).

The kubelet half runs ``command + args`` of the first container (``entrypoint + args`` when the
command is unset, as the image's ENTRYPOINT would), with the container's ``env`` (literal values,
``$(VAR)`` references, ``valueFrom.fieldRef`` and ``configMapKeyRef``) over the image's environment
(``containers.IMAGE_ENV`` unless given: PATH, HOME and the Dockerfile's ENV; never the test's own), in its
own process group; a deleted pod gets SIGTERM, then SIGKILL after its grace period; an exit code
``128 + n`` stands for death by signal ``n``. Deviations: one container per pod; no exponential
back-off between replacements unless ``failure_backoff`` is set (the real one starts at 10 s); no
pod finalizers (counts come from the kubelet's own records of its pods).

Its parts: ``job_controller`` (``plan_job``, pure), ``informer`` (list and watch), ``pods`` (the records
of its pods, the Pod objects and statuses it writes), ``containers`` (environment and process); this
module holds the loop that applies them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from kubernetes import client, config

from tests.support.containers import IMAGE_ENV, ContainerRunner, container_env, spawn
from tests.support.informer import Informer, json_body
from tests.support.job_controller import TERMINAL, JobPlan, epoch, plan_job
from tests.support.pods import PodHandle, PodRecord, pod_manifest, pod_status

log = logging.getLogger(__name__)

Obj = dict[str, Any]
USER_AGENT = "batchctl-test-kubelet"
BATCHCTL_JOBS = "app.kubernetes.io/name=batchctl"
MAX_BACKOFF = 360.0  # the real controller caps its back-off at 6 minutes


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
        runner: ContainerRunner | None = None,
    ) -> None:
        """``label_selector=None`` watches every Job of the namespace.

        ``env`` is the image's environment, what a container has besides its pod spec's ``env`` (as a
        Dockerfile's ENV lines and the runtime's PATH and HOME); default ``containers.IMAGE_ENV``.
        ``runner`` starts each container instead of a local process (``tests/support/image.py``: PodRunner).
        """
        self.runner = runner
        self.namespace, self.entrypoint, self.node_name = namespace, list(entrypoint), node_name
        self.base_env = dict(IMAGE_ENV if env is None else env)
        self.failure_backoff = failure_backoff
        self.errors: list[str] = []
        self._log_dir = log_dir or Path(tempfile.mkdtemp(prefix="kubelet-"))
        self._api = config.new_client_from_config(config_file=str(kubeconfig))
        self._api.user_agent = USER_AGENT
        self._batch, self._core = client.BatchV1Api(self._api), client.CoreV1Api(self._api)
        self._lock = threading.RLock()
        self._pods: dict[str, PodRecord] = {}
        self._ttl_deleted: set[str] = set()
        self._stopping, self._wakeup, self._passed = (
            threading.Event(),
            threading.Event(),
            threading.Condition(),
        )
        self._jobs = Informer(
            "jobs",
            self._batch.list_namespaced_job,
            namespace=namespace,
            selector=label_selector,
            on_change=self._wakeup.set,
            stopping=self._stopping,
        )
        self._pod_api = Informer(
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
            record.name, self.namespace, {"status": pod_status(record)}
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

    def _record(self, pod: PodHandle | str) -> PodRecord:
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
        jobs = json_body(listed)["items"]
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

    def _observe_api(self, pod: PodRecord, api_pod: Obj | None) -> None:
        if api_pod is not None:
            pod.seen = True
            grace = api_pod["metadata"].get("deletionGracePeriodSeconds")
            if api_pod["metadata"].get("deletionTimestamp") and not pod.deleting:
                pod.deleting, pod.grace = True, float(grace if grace is not None else pod.grace)
        elif pod.seen and not pod.removed:
            pod.deleting, pod.removed = True, True  # removed (force-deleted) behind our back

    def _signal_if_due(self, pod: PodRecord, now: float) -> float:
        assert pod.proc is not None
        if pod.deleting and pod.term_at is None:
            pod.term_at, pod.kill_at = now, now + pod.grace
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.proc.pid, signal.SIGTERM)
        if pod.kill_at is not None and now >= pod.kill_at:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.proc.pid, signal.SIGKILL)
        return pod.kill_at if pod.kill_at is not None and pod.kill_at > now else now + 0.5

    def _reap(self, pod: PodRecord, now: float) -> None:
        assert pod.proc is not None
        code = pod.proc.poll()
        if code is not None:
            pod.exit_code = 128 - code if code < 0 else code
            pod.phase, pod.finished = ("Succeeded" if code == 0 else "Failed"), now

    def _report(self, pod: PodRecord) -> None:
        try:
            self._core.patch_namespaced_pod_status(
                pod.name, self.namespace, {"status": pod_status(pod)}
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        pod.reported = pod.phase

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
        ended = max(epoch(c.get("lastTransitionTime")) or now for c in job["status"]["conditions"])
        if now < ended + float(ttl):
            return ended + float(ttl)
        self._ttl_deleted.add(uid)
        with contextlib.suppress(client.ApiException):
            self._batch.delete_namespaced_job(
                job["metadata"]["name"], self.namespace, propagation_policy="Background"
            )
        return now + 0.5

    def _create_pods(self, job: Obj, plan: JobPlan, pods: Sequence[PodRecord], now: float) -> float:
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
            live = json_body(self._batch.read_namespaced_job(name, self.namespace, _preload_content=False))
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
        try:
            written = self._batch.patch_namespaced_job_status(
                job["metadata"]["name"], self.namespace, {"status": patch}, _preload_content=False
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return  # deleted since the cache saw it: nothing to write
            raise
        self._jobs.store(json_body(written))

    def _delete_pod(self, pod: PodRecord) -> None:
        with contextlib.suppress(client.ApiException):
            self._core.delete_namespaced_pod(pod.name, self.namespace)
        with self._lock:
            pod.deleting = True

    def _start_pod(self, job: Obj) -> None:
        manifest = pod_manifest(job, namespace=self.namespace, node_name=self.node_name)
        manifest = cast(Any, manifest)  # the client takes a dict body as it is
        created = json_body(self._core.create_namespaced_pod(self.namespace, manifest, _preload_content=False))
        name, spec = created["metadata"]["name"], created["spec"]
        container = spec["containers"][0]
        pod = PodRecord(
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
            env = container_env(container, created, base=self.base_env, read_config_map=self._config_map)
        except (KeyError, ValueError, client.ApiException) as exc:
            pod.phase, pod.waiting_reason = "Pending", "CreateContainerConfigError"
            self.errors.append(f"pod {name}: {exc}")
            return
        if self.runner is None:
            pod.proc = spawn(container, env, pod.log_path, entrypoint=self.entrypoint)
        else:
            pod.proc = self.runner(container, env, pod.log_path, pod_spec=spec)
        if pod.proc is None:
            pod.phase, pod.exit_code, pod.finished = "Failed", 128, time.time()
        else:
            threading.Thread(target=self._await_exit, args=(pod.proc,), daemon=True).start()

    def _await_exit(self, proc: subprocess.Popen[bytes]) -> None:
        while proc.poll() is None and not self._stopping.is_set():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        self._wakeup.set()
    def _config_map(self, name: str) -> Mapping[str, str]:
        data: Mapping[str, str] = self._core.read_namespaced_config_map(name, self.namespace).data or {}
        return data


@contextlib.contextmanager
def running_kubelet(kubeconfig: Path, **options: Any) -> Iterator[Kubelet]:
    """A started ``Kubelet``, stopped (bounded) on exit."""
    with Kubelet(kubeconfig, **options) as kubelet:
        yield kubelet
