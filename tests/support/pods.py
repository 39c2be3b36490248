"""The kubelet's records of the pods it runs, and the Pod objects and statuses it writes for them."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.job_controller import TERMINAL, PodView, iso

Obj = dict[str, Any]


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
class PodRecord:
    """What the kubelet knows of one pod it started: its process, phase and deletion."""

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



def pod_status(pod: PodRecord) -> Obj:
    """The status a kubelet writes for one of its pods: phase, conditions, the container's state."""
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
                "lastTransitionTime": iso(time.time()),
            }
        )
    if pod.waiting_reason:
        state: Obj = {"waiting": {"reason": pod.waiting_reason}}
    elif pod.phase in TERMINAL:
        state = {
            "terminated": {
                "exitCode": pod.exit_code,
                "reason": "Completed" if pod.exit_code == 0 else "Error",
                "startedAt": iso(pod.started),
                "finishedAt": iso(pod.finished or time.time()),
            }
        }
    else:
        state = {"running": {"startedAt": iso(pod.started)}}
    return {
        "phase": pod.phase,
        "startTime": iso(pod.started),
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

def pod_manifest(job: Obj, *, namespace: str, node_name: str) -> Obj:
    """The Pod the Job controller creates for a Job: its template, the Job's labels, an ownerReference."""
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
            "namespace": namespace,
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
        "spec": {**template["spec"], "nodeName": node_name},
    }
