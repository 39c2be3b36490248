"""Local backend: a "Job" is a group of ``batchctl worker`` processes on this machine.

Same semantics as a Kubernetes work-queue Job: up to ``parallelism`` workers; once
one exits 0 no new worker starts; a worker that fails is replaced until
``backoff_limit``; exit code 2 (configuration error) fails the Job at once. Worker
PIDs are written under the state dir (and kept, marked finished, when the Job ends)
so a restarted launcher sees a Job whose workers outlived it, and sees it end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchctl.core import logs
from batchctl.core.errors import ProfileGone
from batchctl.core.profiles import Profile
from batchctl.core.settings import Settings
from batchctl.launcher.backend import inherited_env, worker_env
from batchctl.launcher.jobconfig import JobConfig
from batchctl.launcher.planner import CONFIG_ERROR_REASON, Launch, ObservedJob
from batchctl.launcher.state import BatchState

CONFIG_ERROR_EXIT = 2


@dataclass
class LocalJob:
    name: str
    batch_id: str
    parallelism: int
    env: dict[str, str]
    backoff_limit: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    counted: set[int] = field(default_factory=set)
    """PIDs whose exit is already accounted for."""
    released: set[int] = field(default_factory=set)
    """PIDs stopped by a scale-down: their exit is neither a success nor a failure."""
    succeeded: int = 0
    failed: int = 0
    failed_reason: str | None = None
    deleted: bool = False
    recorded_finished: bool = False

    @property
    def active(self) -> int:
        return sum(1 for p in self.procs if p.poll() is None)


def profile_of(profiles: Mapping[str, Profile], batch: BatchState) -> Profile | None:
    """The batch's profile; None when no profiles are given; ProfileGone when it is no longer offered."""
    if not profiles:
        return None
    profile = profiles.get(batch.request.profile)
    if profile is None:
        raise ProfileGone(f"profile {batch.request.profile!r} of batch {batch.batch_id} is no longer offered")
    return profile


class LocalBackend:
    def __init__(self, settings: Settings, *, backoff_limit: int = 6, worker_env_extra: dict[str, str] | None = None,
                 log_dir: Path | None = None, profiles: Mapping[str, Profile] | None = None) -> None:
        self.settings = settings
        self.profiles = dict(profiles or {})
        self.backoff_limit = backoff_limit
        self.extra = dict(worker_env_extra or {})
        self.dir = settings.state_dir / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir or settings.state_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log = logs.get("local-backend")
        self._jobs: dict[str, LocalJob] = {}
        self._recorded: dict[str, dict[str, Any]] | None = None
        """Job files of earlier launcher processes, read once (they write no more)."""
        self._lock = threading.RLock()
        self.changed = threading.Event()
        """Never set: worker exits are seen by polling on each reconcile tick."""

    def launch(self, batch: BatchState, launch: Launch) -> bool:
        with self._lock:
            if launch.name in self._jobs or self._pid_file(launch.name).exists():
                return False
            env = {**inherited_env(self.settings.environ), **self._profile_env(batch), **self.extra,
                   **worker_env(self.settings, batch)}
            job = LocalJob(launch.name, batch.batch_id, launch.parallelism, env, self.backoff_limit)
            self._jobs[launch.name] = job
            for _ in range(launch.parallelism):
                self._start_worker(job)
            return True

    def _profile_env(self, batch: BatchState) -> dict[str, str]:
        """The worker knobs of the batch's profile (concurrency, drain budget); none if it has none."""
        profile = profile_of(self.profiles, batch)
        return JobConfig().for_profile(profile).worker_env() if profile is not None else {}

    def observe(self, batch_id: str) -> list[ObservedJob]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.batch_id == batch_id]
            for job in jobs:
                self._step(job)
            seen = {j.name for j in jobs}
            result = [self._observed(j) for j in jobs]
        return result + self._orphans(batch_id, seen)

    def resize(self, batch_id: str, job: str, parallelism: int) -> None:
        """Stop the newest workers beyond ``parallelism`` (SIGTERM: they nack what they hold) or start more.

        As the Job controller with ``podReplacementPolicy: Failed``: a stopping worker still counts until
        it exits, so the processes never outnumber the largest parallelism asked for; 0 pauses the Job.
        """
        with self._lock:
            local = self._jobs.get(job)
            if local is None or local.batch_id != batch_id:
                return
            local.parallelism = parallelism
            running = [p for p in local.procs if p.poll() is None and p.pid not in local.released]
            for proc in running[parallelism:]:
                local.released.add(proc.pid)
                proc.send_signal(signal.SIGTERM)
            self._step(local)

    def delete_jobs(self, batch_id: str) -> None:
        with self._lock:
            for job in [j for j in self._jobs.values() if j.batch_id == batch_id]:
                job.deleted = True
                for proc in job.procs:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
            for body in self._earlier().values():
                if body.get("batch_id") == batch_id and not body.get("finished"):
                    for pid, start in _recorded(body):
                        if _alive(pid, start):
                            os.kill(pid, signal.SIGTERM)

    def job_batches(self) -> dict[str, str]:
        """Job records on disk (every launcher's) and this process's Jobs."""
        found = {job.name: job.batch_id for job in self._jobs.values()}
        for path in self.dir.glob("*.json"):
            try:
                found.setdefault(path.stem, str(json.loads(path.read_text()).get("batch_id", "")))
            except (OSError, ValueError, AttributeError):
                continue
        return found

    def forget(self, batch_id: str, job_names: list[str]) -> None:
        """Stop what may still run, then delete the Jobs' files: pid records and worker logs."""
        self.delete_jobs(batch_id)
        with self._lock:
            for name in job_names:
                self._jobs.pop(name, None)
                if self._recorded is not None:
                    self._recorded.pop(name, None)
                self._pid_file(name).unlink(missing_ok=True)
                for log in self.log_dir.glob(f"{name}-*.log"):
                    log.unlink(missing_ok=True)

    def close(self) -> None:
        """Leave workers running: they drain and exit by themselves (like Jobs outliving a launcher)."""

    def stop_all(self, timeout: float = 30.0) -> None:
        """Terminate every worker this backend started (used by ``demo`` and tests)."""
        with self._lock:
            procs = [p for j in self._jobs.values() for p in j.procs if p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    # ---- work-queue semantics --------------------------------------------------------
    def _start_worker(self, job: LocalJob) -> None:
        index = len(job.procs)
        env = {**job.env, "BATCHCTL_WORKER_ID": f"{job.name}-{index}"}
        with (self.log_dir / f"{job.name}-{index}.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "batchctl", "worker"],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        job.procs.append(proc)
        self._write_pids(job)
        self.log.info("worker_started", batch_id=job.batch_id, job=job.name, pid=proc.pid)

    def _step(self, job: LocalJob) -> None:
        """Account for exited workers and replace failed ones, as the Job controller would."""
        exited = [p for p in job.procs if p.poll() is not None and p.pid not in job.counted]
        for proc in exited:
            job.counted.add(proc.pid)
            if proc.pid in job.released:
                continue
            if proc.returncode == 0:
                job.succeeded += 1
            else:
                job.failed += 1
                if proc.returncode == CONFIG_ERROR_EXIT and job.failed_reason is None:
                    job.failed_reason = CONFIG_ERROR_REASON
        if job.deleted or job.succeeded or job.failed_reason:
            if job.failed_reason:
                self._terminate(job)
            return
        while job.active < job.parallelism and job.failed <= job.backoff_limit:
            self._start_worker(job)
        if job.failed > job.backoff_limit and job.active == 0 and job.failed_reason is None:
            job.failed_reason = "BackoffLimitExceeded"

    def _terminate(self, job: LocalJob) -> None:
        for proc in job.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def _observed(self, job: LocalJob) -> ObservedJob:
        active = job.active
        paused = job.parallelism == 0 and not (job.deleted or job.succeeded or job.failed_reason)
        finished = active == 0 and not paused
        if finished and not job.recorded_finished:
            self._write_pids(job, finished=True)
            job.recorded_finished = True
        return ObservedJob(job.name, active, finished, job.failed_reason, parallelism=job.parallelism,
                           succeeded=job.succeeded, failed=job.failed)

    # ---- surviving a launcher restart ------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def _write_pids(self, job: LocalJob, *, finished: bool = False) -> None:
        """Kept after the Job ends (marked finished): a restarted launcher must see it ended,
        not mistake it for one it has yet to observe."""
        body = {"batch_id": job.batch_id, "pids": [p.pid for p in job.procs],
                "starts": [start_time(p.pid) for p in job.procs], "finished": finished,
                "failed_reason": job.failed_reason}
        self._pid_file(job.name).write_text(json.dumps(body))

    def _earlier(self) -> dict[str, dict[str, Any]]:
        """Job files present when this backend first looked: the Jobs of earlier launchers."""
        if self._recorded is None:
            self._recorded = {}
            for path in self.dir.glob("*.json"):
                try:
                    self._recorded[path.stem] = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
        return self._recorded

    def _orphans(self, batch_id: str, seen: set[str]) -> list[ObservedJob]:
        """Jobs started by an earlier launcher process whose workers may still run."""
        result = []
        for name, body in self._earlier().items():
            if name in seen or body.get("batch_id") != batch_id:
                continue
            alive = 0 if body.get("finished") else sum(1 for pid, start in _recorded(body) if _alive(pid, start))
            if not alive and not body.get("finished"):
                body["finished"] = True
                self._pid_file(name).write_text(json.dumps(body))
            result.append(ObservedJob(name, alive, alive == 0, body.get("failed_reason")))
        return result


def start_time(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (``/proc/PID/stat`` field 22): with the
    PID, who it is. A PID is reused once its process is gone; the pair is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else None


def _recorded(body: dict[str, Any]) -> list[tuple[int, str | None]]:
    """A Job file's workers as (pid, start time); files written before start times were kept say None."""
    pids = [int(p) for p in body.get("pids", [])]
    starts = list(body.get("starts") or [None] * len(pids))
    return list(zip(pids, starts + [None] * (len(pids) - len(starts)), strict=True))


def _alive(pid: int, start: str | None = None) -> bool:
    """The recorded worker still runs: the PID is live and, when its start time was recorded, it
    is the same process (not an unrelated one that got the PID since)."""
    if start is not None and start_time(pid) != start:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0
