"""The Job controller's decisions, pure: what to do next for one Job given its pods.

``plan_job`` follows the real Job controller (see ``kubelet``'s docstring for the semantics it
keeps and where it deviates); ``kubelet.Kubelet`` applies its plans through the API server.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")


def iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()




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


def _condition(kind: str, reason: str, message: str, now: float, status: str = "True") -> Obj:
    stamp = iso(now)
    return {
        "type": kind,
        "status": status,
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
    started, deadline = epoch((job.get("status") or {}).get("startTime")), spec.get("activeDeadlineSeconds")
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
        startTime=status.get("startTime") or iso(now),
        conditions=conditions,
    )
    if not conditions:
        status.pop("conditions")
    return status


def _suspension(spec: Obj, status: Obj, conditions: list[Obj], tally: _Tally, now: float) -> JobPlan | None:
    """``spec.suspend`` (kubernetes.io/docs/concepts/workloads/controllers/job/#suspending-a-job): a
    suspended Job's running pods are deleted and none is created, with condition ``Suspended`` True
    (reason JobSuspended) and no ``startTime``; on resume the condition turns False (JobResumed) and
    ``startTime`` is reset, which restarts the ``activeDeadlineSeconds`` clock. None: not suspended."""
    marked = next((c for c in conditions if c["type"] == "Suspended"), None)
    if not spec.get("suspend"):
        if marked is not None and marked["status"] == "True":
            conditions[conditions.index(marked)] = _condition("Suspended", "JobResumed", "Job resumed", now, "False")
            status.pop("startTime", None)
        return None
    if marked is None or marked["status"] != "True":
        conditions[:] = [c for c in conditions if c is not marked]
        conditions.append(_condition("Suspended", "JobSuspended", "Job suspended", now))
    counters = _counters(status, tally, conditions, now)
    counters.pop("startTime", None)
    return JobPlan(0, tuple(p.name for p in tally.running), counters)


def plan_job(job: Obj, pods: Sequence[PodView], now: float) -> JobPlan:
    """Decide from a Job and its pods what the Job controller does now (level-triggered, no side effects)."""
    spec, status = job["spec"], dict(job.get("status") or {})
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True" or c["type"] == "Suspended"]
    kinds = {c["type"]: c for c in conditions if c.get("status") == "True"}
    if "Complete" in kinds or "Failed" in kinds:
        return JobPlan(0, (), status)
    tally = _Tally.of(pods, (spec.get("podFailurePolicy") or {}).get("rules") or [])
    if "FailureTarget" not in kinds and (paused := _suspension(spec, status, conditions, tally, now)):
        return paused
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
            status["completionTime"] = iso(now)
    else:
        create, delete = _pods_wanted(spec, tally)
    return JobPlan(create, delete, _counters(status, tally, conditions, now), len(tally.failed))


# ---- the kubelet's records and the informers ------------------------------------------------------

