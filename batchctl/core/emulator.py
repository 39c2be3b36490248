"""Start and stop the real Pub/Sub emulator (`gcloud beta emulators pubsub start`): for `demo`, tests and benches."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


class EmulatorMissing(RuntimeError):
    """Raised when gcloud or its Pub/Sub emulator component is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(host: str, timeout: float = 1.0) -> bool:
    """True when the emulator's HTTP endpoint says Ok."""
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


class Emulator:
    """One emulator process in its own process group, stopped as a whole."""

    def __init__(self, host: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.host = host
        self.proc = proc
        self.log = log

    @classmethod
    def start(cls, *, port: int | None = None, log_dir: Path | None = None, timeout: float = 60.0) -> Emulator:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise EmulatorMissing("gcloud is not installed (needs the pubsub-emulator component and Java)")
        host = f"127.0.0.1:{port or free_port()}"
        log = (log_dir or Path("/tmp")) / f"pubsub-emulator-{host.replace(':', '-')}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={host}", "--quiet"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answers(host):
                return cls(host, proc, log)
            if proc.poll() is not None:
                raise EmulatorMissing(f"emulator exited with {proc.returncode}: {log.read_text()[-500:]}")
            time.sleep(0.2)
        cls(host, proc, log).stop()
        raise EmulatorMissing(f"emulator did not answer on {host} within {timeout}s")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
