"""Kubernetes backend: Jobs through the API server, observed through a watch-fed cache.

The cache is filled by listing the launcher's Jobs (by label) and then watching
them; when a watch ends or breaks it re-lists, so a missed event costs a re-list,
never correctness. A failed list or watch is tried again after the server's Retry-After
(429), else after 1, 2, 4... s, at most ``WATCH_MAX_BACKOFF_S``: an API that is down for
long costs a few tries a minute, and is seen back within that long. ``observe`` reads the
cache; until the first list completes it reads the API server directly.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from batchctl.core import logs
from batchctl.core.errors import BatchctlError, ProfileGone
from batchctl.core.names import LABEL_BATCH, LABEL_COMPONENT, LABEL_NAME
from batchctl.core.profiles import DEFAULT_PROFILE, Profile
from batchctl.core.settings import Settings
from batchctl.launcher import failures, jobspec
from batchctl.launcher.backend import worker_env
from batchctl.launcher.jobconfig import JobConfig
from batchctl.launcher.kube import Conflict, Kube
from batchctl.launcher.planner import Launch, ObservedJob
from batchctl.launcher.state import BatchState

JOB_SELECTOR = f"{LABEL_NAME}=batchctl,{LABEL_COMPONENT}=worker"
WATCH_TIMEOUT_S = 240
WATCH_MAX_BACKOFF_S = failures.API_MAX_BACKOFF_S


def observed(job: dict[str, Any]) -> ObservedJob:
    """Read a Job's status the way the Job controller writes it."""
    status = job.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    kinds = {c.get("type"): c for c in conditions}
    failed = kinds.get("Failed") or kinds.get("FailureTarget")
    finished = "Complete" in kinds or "Failed" in kinds
    spec = job.get("spec") or {}
    return ObservedJob(
        name=job["metadata"]["name"],
        active=int(status.get("active") or 0),
        finished=finished,
        failed_reason=failed.get("reason") if failed else None,
        parallelism=int(spec.get("parallelism") or 0),
        suspended=bool(spec.get("suspend")),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
    )


def job_config(config: JobConfig, profiles: Mapping[str, Profile], batch: BatchState) -> JobConfig:
    """The Job shape of ``batch``: its profile's, with the image it chose among the allowed ones.

    Admission checked both when the batch was accepted; a profile since removed from the file
    is ProfileGone (the batch ends ``failed`` naming it, ``launcher.failures``) rather than a guess.
    """
    profile = profiles.get(batch.request.profile)
    if profile is None:
        raise ProfileGone(f"profile {batch.request.profile!r} of batch {batch.batch_id} is no longer offered")
    shaped = config.for_profile(profile).with_image(batch.request.image)
    chosen = profile.priority_classes.get(batch.request.priority)  # submit --priority, where the profile says so
    return replace(shaped, priority_class=chosen) if chosen else shaped


class KubeBackend:
    def __init__(self, settings: Settings, kube: Kube, config: JobConfig, *, watch: bool = True,
                 profiles: Mapping[str, Profile] | None = None) -> None:
        self.settings = settings
        self.kube = kube
        self.config = config
        self.profiles = profiles if profiles is not None else {DEFAULT_PROFILE: config.default_profile()}
        self.log = logs.get("kube-backend")
        self._jobs: dict[str, dict[str, dict[str, Any]]] = {}
        """batch id -> Job name -> Job: ``observe`` runs for every batch on every tick."""
        self._ever: set[str] = set()
        """Names of every Job the list or watch showed since start: one of them missing now is gone."""
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.changed = threading.Event()
        """Set whenever a watched Job changes, so the launcher can reconcile at once."""
        if watch:
            threading.Thread(target=self._watch_loop, name="job-watch", daemon=True).start()

    def launch(self, batch: BatchState, launch: Launch) -> bool:
        config = job_config(self.config, self.profiles, batch)
        job = jobspec.build_job(
            name=launch.name,
            namespace=self.kube.namespace,
            labels=self.settings.names.batch_labels(batch.batch_id),
            parallelism=min(launch.parallelism, config.max_parallelism),
            env=worker_env(self.settings, batch),
            config=config,
        )
        try:
            self.kube.create_job(jobspec.job_to_dict(job))
        except Conflict:
            return False
        return True

    def observe(self, batch_id: str) -> list[ObservedJob]:
        if not self._synced.is_set():
            items = self.kube.list_jobs(f"{JOB_SELECTOR},{LABEL_BATCH}={batch_id}")
            return [observed(j) for j in items]
        with self._lock:
            jobs = list(self._jobs.get(batch_id, {}).values())
        return [observed(j) for j in jobs]

    def ever_seen(self, name: str) -> bool:
        """The list or watch showed Job ``name`` at some point since this launcher started."""
        with self._lock:
            return name in self._ever

    def resize(self, batch_id: str, job: str, parallelism: int) -> None:
        """Patch ``spec.parallelism`` (mutable on a running Job); the Job controller deletes or adds pods."""
        stored = self.kube.patch_job(job, {"spec": {"parallelism": parallelism}})
        self._apply("MODIFIED", stored)

    def delete_jobs(self, batch_id: str) -> None:
        for job in self.kube.list_jobs(f"{JOB_SELECTOR},{LABEL_BATCH}={batch_id}"):
            self.kube.delete_job(job["metadata"]["name"])

    def job_batches(self) -> dict[str, str]:
        return {job["metadata"]["name"]: _batch_of(job) or "" for job in self.kube.list_jobs(JOB_SELECTOR)}

    def forget(self, batch_id: str, job_names: list[str]) -> None:
        """The Jobs, if their TTL has not removed them yet; nothing else is kept."""
        self.delete_jobs(batch_id)

    def close(self) -> None:
        self._stop.set()

    def _watch_loop(self) -> None:
        tries = 0  # consecutive failures, each before a list and watch came through
        while not self._stop.is_set():
            try:
                self._relist()
                tries = 0
                for kind, job in self.kube.watch_jobs(JOB_SELECTOR, timeout_s=WATCH_TIMEOUT_S):
                    self._apply(kind, job)
                    if self._stop.is_set():
                        return
            except BatchctlError as exc:
                tries += 1
                wait = failures.retry_wait(exc, tries, cap=WATCH_MAX_BACKOFF_S)
                self.log.warning("job_watch_broken", error=str(exc), tries=tries, wait_s=wait)
                self._stop.wait(wait)
            except Exception:  # a watch must never die silently; re-list and go on
                self.log.exception("job_watch_failed")
                self._stop.wait(1.0)

    def _relist(self) -> None:
        items = self.kube.list_jobs(JOB_SELECTOR)
        index: dict[str, dict[str, dict[str, Any]]] = {}
        for job in items:
            index.setdefault(_batch_of(job) or "", {})[job["metadata"]["name"]] = job
        with self._lock:
            self._jobs = index
            self._ever.update(name for jobs in index.values() for name in jobs)
        self._synced.set()
        self.changed.set()

    def _apply(self, kind: str, job: dict[str, Any]) -> None:
        name = job.get("metadata", {}).get("name")
        if not name:
            return
        with self._lock:
            self._ever.add(name)
            jobs_of_batch = self._jobs.setdefault(_batch_of(job) or "", {})
            if kind == "DELETED":
                jobs_of_batch.pop(name, None)
            else:
                jobs_of_batch[name] = job
        self.changed.set()


def _batch_of(job: dict[str, Any]) -> str | None:
    labels = job.get("metadata", {}).get("labels") or {}
    value = labels.get(LABEL_BATCH)
    return str(value) if value else None
