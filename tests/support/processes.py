"""Other processes as /proc shows them, and the child-subreaper switch (Linux)."""

from __future__ import annotations

import contextlib
import ctypes
import urllib.request
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def proc_field(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def running(pid: int) -> bool:
    stat = proc_field(pid, "stat")
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def environ_of(pid: int) -> dict[str, str]:
    pairs = (item.partition("=") for item in proc_field(pid, "environ").split("\0") if item)
    return {k: v for k, _, v in pairs}


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def stop_being_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
