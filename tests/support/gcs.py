"""Start and stop the real Cloud Storage emulator (``gcp-storage-emulator`` from PyPI) for tests and benches.

It is a real HTTP server for the JSON API (list, ranged reads, resumable uploads), run
in memory on a free port. It does not enforce ``ifGenerationMatch``: nothing in batchctl
relies on preconditions.

It serves one connection at a time (HTTP/1.0, a connection per request) and listens with Python's
default backlog of 5 (``socketserver.TCPServer.request_queue_size``). A worker's 16 writers then
overflow it: the kernel drops their connection attempts and each retries after a second (20 parts
drained in 1.3 s, not 0.3 s). Cloud Storage accepts them all; so the emulator is started with a
backlog of 128 (``LAUNCH``), and changes nothing else.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from batchctl.core.emulator import free_port

LAUNCH = ("import socketserver, sys; socketserver.TCPServer.request_queue_size = 128; "
          "from gcp_storage_emulator.__main__ import main; sys.exit(main())")


class StorageEmulatorMissing(RuntimeError):
    """Raised when the emulator cannot be started (not installed, or it never answered)."""


def answers(host: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/storage/v1/b?project=probe", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


class StorageEmulator:
    """One ``gcp-storage-emulator start --in-memory`` process in its own process group."""

    def __init__(self, host: str, proc: subprocess.Popen[bytes]) -> None:
        self.host = host
        self.proc = proc

    @classmethod
    def start(cls, *, log_dir: Path, timeout: float = 30.0) -> StorageEmulator:
        if importlib.util.find_spec("gcp_storage_emulator") is None:
            raise StorageEmulatorMissing("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
        host = f"127.0.0.1:{free_port()}"
        port = host.rsplit(":", 1)[1]
        with (log_dir / f"storage-emulator-{port}.log").open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "start", "--host", "127.0.0.1", "--port", port,
                                     "--in-memory"],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answers(host):
                return cls(host, proc)
            if proc.poll() is not None:
                raise StorageEmulatorMissing(f"storage emulator exited with {proc.returncode}")
            time.sleep(0.1)
        cls(host, proc).stop()
        raise StorageEmulatorMissing(f"storage emulator did not answer on {host} within {timeout}s")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
