"""``launcher.failpoints``: inert unless ``BATCHCTL_FAILPOINT`` names the point; then the process
SIGKILLs itself at that point, after one log line naming it (a crash: nothing after it runs)."""

from __future__ import annotations

import signal
import subprocess
import sys

from batchctl.launcher import failpoints
from tests.support.launching import REPO

SCRIPT = """
from batchctl.core import logs
from batchctl.launcher import failpoints
logs.configure(json=True)
failpoints.hit("not-armed-here")
print("before", flush=True)
failpoints.hit(failpoints.REQUEST_SAVED_BEFORE_ACK, batch_id="b1")
print("after", flush=True)
"""


def run(armed: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    if armed is not None:
        env[failpoints.FAILPOINT_VAR] = armed
    return subprocess.run([sys.executable, "-c", SCRIPT], check=False, env=env, capture_output=True, text=True,
                          timeout=30)


def test_unarmed_points_are_inert() -> None:
    done = run(None)
    assert done.returncode == 0 and done.stdout.split() == ["before", "after"]
    assert failpoints.armed() == frozenset(), "the test process itself must never arm a point"


def test_armed_point_sigkills_the_process_there_after_one_log_line() -> None:
    done = run(f" {failpoints.EVENT_SAVED_BEFORE_ACK} , {failpoints.REQUEST_SAVED_BEFORE_ACK}")
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["before"], "nothing after the point may run"
    assert '"point": "request-saved-before-ack"' in done.stderr and '"batch_id": "b1"' in done.stderr


def test_another_point_armed_leaves_this_one_inert() -> None:
    done = run(failpoints.JOB_CREATED_BEFORE_SAVE)
    assert done.returncode == 0 and done.stdout.split() == ["before", "after"]
