"""The CLI as real processes, where exit codes and signals matter.

Checks: `batchctl launcher` serves /healthz, /readyz and /metrics, launches a batch
submitted with `submit --wait` (which follows it to exit 0), and exits 0 on SIGTERM;
`batchctl demo` starts its own emulator when none answers, runs the pipeline and
prints a summary.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from batchctl.core.emulator import answers, free_port
from tests.support.launching import REPO, fast_worker_env, write_records
from tests.support.waiting import wait_for

BATCHCTL = [sys.executable, "-m", "batchctl"]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def test_launcher_serves_probes_follows_submit_wait_and_stops_on_sigterm(env: dict[str, str], tmp_path: Path) -> None:
    """Probes answer, a `submit --wait` batch succeeds (exit 0), metrics count it, SIGTERM exits 0."""
    port = free_port()
    launcher_env = {**env, **fast_worker_env(tmp_path / "results")}
    with (tmp_path / "launcher.log").open("wb") as log:
        proc = subprocess.Popen([*BATCHCTL, "launcher", "--backend", "local", "--port", str(port)],
                                env=launcher_env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(base + "/readyz")[0] == 200, timeout=30, what="/readyz 200")
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/nope")[0] == 404
        path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(12)])
        submit = subprocess.run(
            [*BATCHCTL, "submit", str(path), "--batch-id", "waited", "--records-per-part", "2",
             "--handler", "tests.support.handlers:scripted", "--wait", "--json"],
            env=launcher_env, capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        )
        assert submit.returncode == 0, submit.stderr[-2000:]
        assert '"state": "succeeded"' in submit.stdout and '"parts_done": 6' in submit.stdout
        assert "waited [" in submit.stderr  # the progress line
        metrics = get(base + "/metrics")[1]
        assert "batchctl_jobs_launched_total 1.0" in metrics
        assert 'batchctl_batches{state="succeeded"} 1.0' in metrics
        assert "batchctl_parts_done_total 6.0" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_demo_starts_its_own_emulator_and_succeeds(env: dict[str, str], tmp_path: Path) -> None:
    """`batchctl demo` with no emulator reachable: starts one, runs the batch, prints the summary,
    stops the emulator it started, exit 0."""
    demo_env = {k: v for k, v in env.items() if k not in ("PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    demo_env["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "out"
    result = subprocess.run([*BATCHCTL, "demo", "--records", "2000", "--workers", "2", "--output", str(out)],
                            env=demo_env, capture_output=True, text=True, timeout=240, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started the Pub/Sub emulator" in result.stderr
    assert "succeeded" in result.stdout and "2000 in 20 parts (20 parts done)" in result.stdout
    assert len(list(out.glob("demo-*.json"))) == 20
    started = re.search(r"started the Pub/Sub emulator on (\S+)", result.stderr)
    assert started is not None and not answers(started.group(1)), "the demo left its emulator running"
