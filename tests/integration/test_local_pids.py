"""The local backend knows its workers by PID *and* start time (issue 18, finding 10).

Checks: a Job file of an earlier launcher naming a PID that now belongs to an unrelated process
(another start time) counts that worker gone, so the Job ends, and ``cancel`` does not signal the
stranger; the same file with the stranger's real start time counts it running (the check is not
just "always gone"); a worker's recorded start time is what /proc says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.core.settings import Settings
from batchctl.launcher.local_backend import LocalBackend, start_time


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process: what a reused PID points at."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def earlier_job(tmp_path: Path, pid: int, start: str | None) -> LocalBackend:
    settings = Settings.from_env({"BATCHCTL_STATE_DIR": str(tmp_path), "GOOGLE_CLOUD_PROJECT": "p"})
    jobs = settings.state_dir / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    body = {"batch_id": "b", "pids": [pid], "starts": [start], "finished": False, "failed_reason": None}
    (jobs / "p-b-1.json").write_text(json.dumps(body))
    return LocalBackend(settings)


def test_a_reused_pid_is_not_a_worker(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    """The recorded worker started at another time: the Job is over, cancel leaves the stranger alone."""
    backend = earlier_job(tmp_path, stranger.pid, start="1")
    [job] = backend.observe("b")
    assert (job.active, job.finished) == (0, True)
    backend.delete_jobs("b")
    assert stranger.poll() is None


def test_the_recorded_worker_is_still_seen_running(tmp_path: Path, stranger: subprocess.Popen[bytes]) -> None:
    """With the process's true start time recorded, it is the worker: active 1, not finished."""
    backend = earlier_job(tmp_path, stranger.pid, start=start_time(stranger.pid))
    [job] = backend.observe("b")
    assert (job.active, job.finished) == (1, False)


def test_start_time_is_field_22_of_proc_stat(stranger: subprocess.Popen[bytes]) -> None:
    """The start time read back matches /proc/PID/stat's 22nd field, and a gone PID has none."""
    fields = Path(f"/proc/{stranger.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert start_time(stranger.pid) == fields[19]
    assert start_time(2**22 + 12345) is None
