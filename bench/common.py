"""Shared by the benchmarks: the emulator, the environment of a bench, /proc figures, timing.

Everything here talks only to loopback: the emulator a bench starts (or the one named
by ``PUBSUB_EMULATOR_HOST``) and in-process kmock API servers.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from batchctl.core.emulator import Emulator  # noqa: E402  after the path setup above

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROJECT = "batchctl-bench"
TIME_V = Path("/usr/bin/time")


# ---- the emulator --------------------------------------------------------------------------------


@dataclass
class EmulatorInfo:
    host: str
    started_here: bool

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    def java_pid(self) -> int | None:
        """PID of the emulator's JVM (what does the work), found by its ``--port`` argument."""
        return find_pid(lambda args: "cloud-pubsub-emulator" in args and f"--port={self.port}" in args)


@contextmanager
def emulator() -> Iterator[EmulatorInfo]:
    """The emulator in PUBSUB_EMULATOR_HOST, or one started here (and stopped with its process group)."""
    existing = os.environ.get("PUBSUB_EMULATOR_HOST")
    if existing:
        yield EmulatorInfo(existing, started_here=False)
        return
    started = Emulator.start(log_dir=Path(tempfile.gettempdir()), timeout=90)
    try:
        yield EmulatorInfo(started.host, started_here=True)
    finally:
        started.stop()


def bench_env(host: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of batchctl processes in a bench: this emulator, a prefix of its own."""
    return {
        **os.environ,
        "PUBSUB_EMULATOR_HOST": host,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "BATCHCTL_PREFIX": prefix,
        "BATCHCTL_LOG_LEVEL": os.environ.get("BATCHCTL_LOG_LEVEL", "INFO"),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def prefix_for(tag: str) -> str:
    """A Pub/Sub prefix unique to this process (letters, digits, '-', at most 12)."""
    return f"{tag[:5]}{os.getpid() % 100000}"


def cleanup_prefix(pubsub: Any, prefix: str) -> None:
    """Best effort: delete every subscription and topic of ``prefix`` (for a shared emulator)."""
    try:
        for sub in pubsub.list_subscriptions():
            if sub.startswith(prefix + "-"):
                pubsub.delete_subscription(sub)
        for topic in pubsub.list_topics():
            if topic.startswith(prefix + "-"):
                pubsub.delete_topic(topic)
    except Exception as exc:  # cleaning up must not hide the figures
        print(f"  (cleanup of {prefix} failed: {type(exc).__name__}: {exc})", file=sys.stderr)


# ---- /proc -----------------------------------------------------------------------------------------


def find_pid(match: Callable[[str], bool]) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if match(args):
            return int(entry.name)
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (not its children), in seconds; 0.0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` figure of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = now); 0 once gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat (every tenant)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / CLK_TCK, sum(fields) / CLK_TCK


def children_maxrss_mb() -> float:
    """Largest peak RSS of any waited-for child so far (getrusage reports kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Measured:
    returncode: int
    seconds: float
    peak_rss_mb: float
    cpu_s: float
    stdout: str
    stderr: str
    how: str


def run_measured(cmd: Sequence[str], *, env: dict[str, str], timeout: float, cwd: Path = ROOT) -> Measured:
    """Run ``cmd`` to the end; its wall time, peak RSS and CPU (``/usr/bin/time -v``, else getrusage)."""
    use_time = TIME_V.exists()
    full = [str(TIME_V), "-v", *cmd] if use_time else list(cmd)
    before_cpu = children_cpu_s()
    started = time.monotonic()
    proc = subprocess.run(full, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.monotonic() - started
    stderr = proc.stderr
    if use_time:
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
        user = re.search(r"User time \(seconds\): ([\d.]+)", stderr)
        system = re.search(r"System time \(seconds\): ([\d.]+)", stderr)
        peak = int(rss.group(1)) / 1024 if rss else 0.0
        cpu = float(user.group(1)) + float(system.group(1)) if user and system else 0.0
        stderr = stderr.split("\tCommand being timed:")[0]
        how = "/usr/bin/time -v"
    else:
        peak, cpu, how = children_maxrss_mb(), children_cpu_s() - before_cpu, "getrusage(RUSAGE_CHILDREN)"
    return Measured(proc.returncode, seconds, peak, cpu, proc.stdout, stderr, how)


# ---- timing and output -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str) -> Any:
    """Poll ``predicate`` until truthy (returned) or ``timeout`` seconds (TimeoutError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
        "mem_total_mb": _mem_total_mb(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _mem_total_mb() -> int:
    match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return int(match.group(1)) // 1024 if match else 0


def final_json(payload: dict[str, Any]) -> None:
    """The last line a bench prints: every figure, machine-readable (``bench/run`` reads it)."""
    print(json.dumps(payload, sort_keys=True), flush=True)


def say(text: str) -> None:
    print(text, flush=True)
