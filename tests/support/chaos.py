"""The chaos run: one batch on the local backend while workers, the launcher and Pub/Sub are disrupted.

Shared by ``bench/chaos`` (the full run) and ``tests/e2e/test_chaos.py`` (its short CI form).

Everything is real and on loopback: the Pub/Sub emulator, ``batchctl launcher --backend local``
as a subprocess, ``batchctl submit`` as a subprocess, workers started by the launcher. The driver
only watches and disrupts; it never helps the batch along, with one exception, stated below. One
set-up step departs from the product: right after submit the work subscription loses its retry
policy (``retry_policy.py``: the emulator's defect).

What the driver does, at random points of the batch's progress (seeded, so a run can be replayed):

* kills random live workers of this run, ``SIGKILL`` or ``SIGTERM`` (balanced, shuffled);
* restarts the launcher (``SIGKILL`` once, ``SIGTERM`` once by default) and starts a new one;
* takes Pub/Sub down once for ``outage_s``.

Every client of the run (submit, the launcher, the workers it starts, status) reaches the emulator
through a fault-injecting proxy (``tests/support/proxy.py``). The outage is made there: new
connections are refused and open ones reset, while the emulator itself runs on and keeps every
topic, subscription and unacked message, as real Pub/Sub would. Nothing is frozen or republished:
whatever a launcher or worker bug loses before, during or after the outage stays lost and shows.

Workers that outlive a killed launcher are reparented to init, which reaps them when they exit;
until then a zombie still answers ``kill(pid, 0)`` and the launcher counts it as a live worker.
``reap_orphans=True`` makes the driver a child subreaper that reaps them at once, for hosts whose
init is slow or absent (here PID 1 reaps within about 2 s, so it is off by default).

The driver also measures how long no worker of the run was alive while parts remained
(``stalls``): the launcher is expected to start a follow-up Job within a tick or two of the last
worker's exit (or one ack deadline after an idle Job), so long stalls point at a launcher bug.

Proof at the end comes from the handler's own output: ``chaos_handler.handle`` runs the built-in demo
handler (one result file per part, ``<batch>-<part:06d>.json``, written atomically) and also appends
one ``S`` line before and one ``D`` line after each call to a per-process file, so redeliveries and
duplicates can be counted and set against what each killed worker had in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.chaos_analysis import analyse_calls, check_results, launcher_log_summary, worker_exits
from tests.support.chaos_handler import CALLS_ENV, WORK_ENV
from tests.support.chaos_plan import ChaosConfig, Disruption, Kill, LauncherRestart, Outage, record, schedule
from tests.support.processes import become_subreaper, environ_of, http_ok, proc_field, running, stop_being_subreaper
from tests.support.proxy import FaultProxy
from tests.support.retry_policy import drop_retry_policy

REPO = Path(__file__).resolve().parents[2]


class ChaosRun:
    """Drive one chaos run; ``run()`` returns the report (a dict, JSON-ready)."""

    def __init__(self, config: ChaosConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.dir = config.work_dir
        self.state_dir = self.dir / "state"
        self.results = self.dir / "results"
        self.calls = self.dir / "calls"
        self.input = self.dir / "input.jsonl"
        self.emulator: Any = None
        self.proxy: FaultProxy | None = None
        self.host = ""
        self.outage_launcher_pid = 0
        self.launcher: subprocess.Popen[bytes] | None = None
        self.launcher_port = 0
        self.launcher_starts = 0
        self.kills: list[Kill] = []
        self.restarts: list[LauncherRestart] = []
        self.crashes: list[dict[str, Any]] = []
        self.outage: Outage | None = None
        self.known_workers: set[int] = set()
        self.terminated: set[int] = set()
        self.subreaper = False
        self.env: dict[str, str] = {}
        self.started = 0.0
        self.stalls: list[dict[str, Any]] = []
        self._stall_began: float | None = None
        self._stall_progress = 0.0

    # ---- output ---------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if not self.cfg.quiet:
            print(f"[{time.monotonic() - self.started:7.1f}s] {text}", flush=True)

    # ---- the run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from batchctl.core.emulator import free_port

        self.started = time.monotonic()
        saved_host = os.environ.get("PUBSUB_EMULATOR_HOST")
        for folder in (self.state_dir, self.results, self.calls):
            folder.mkdir(parents=True, exist_ok=True)
        if self.cfg.reap_orphans:
            self.subreaper = become_subreaper()
        try:
            self._start_emulator()
            self.launcher_port = free_port()
            self.env = self._environment()
            self._write_input()
            self._start_launcher()
            submitted = self._submit()
            outcome = self._drive()
            return self._report(submitted, outcome)
        finally:
            self._cleanup()
            if saved_host is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = saved_host
            if self.subreaper:
                stop_being_subreaper()

    def _start_emulator(self) -> None:
        """The emulator (the given one, or one of our own) behind the run's fault proxy."""
        from batchctl.core.emulator import Emulator

        upstream = self.cfg.emulator_host
        if not upstream:
            self.emulator = Emulator.start(log_dir=self.dir)
            upstream = self.emulator.host
        self.proxy = FaultProxy(upstream).start()
        self.host = self.proxy.address
        self.say(f"emulator {upstream}, reached through the proxy at {self.host}")

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCTL_")}
        env.update({
            "PYTHONPATH": str(REPO),
            "GOOGLE_CLOUD_PROJECT": "batchctl-chaos",
            "PUBSUB_EMULATOR_HOST": self.host,
            "BATCHCTL_BACKEND": "local",
            "BATCHCTL_PREFIX": self.cfg.prefix,
            "BATCHCTL_STATE_DIR": str(self.state_dir),
            "BATCHCTL_RESULTS_DIR": str(self.results),
            CALLS_ENV: str(self.calls),
            WORK_ENV: str(self.cfg.part_s),
            "BATCHCTL_EMPTY_PULLS": "3",
            "BATCHCTL_PULL_TIMEOUT_S": "0.5",
            "BATCHCTL_LEASE_S": str(self.cfg.lease_s),
            "BATCHCTL_DRAIN_BUDGET_S": "5",
        })
        return env

    def _write_input(self) -> None:
        with self.input.open("w") as out:
            for i in range(self.cfg.parts):
                out.write(json.dumps(record(i)) + "\n")

    def _cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "batchctl", *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def _submit(self) -> dict[str, Any]:
        began = time.monotonic()
        done = self._cli("submit", str(self.input), "--batch-id", self.cfg.batch_id, "--records-per-part", "1",
                         "--handler", "tests.support.chaos_handler:handle",
                         "--max-parallelism", str(self.cfg.max_parallelism),
                         "--parts-per-worker", str(self.cfg.parts_per_worker),
                         "--ack-deadline", str(self.cfg.ack_deadline_s), "--json", timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"submit failed ({done.returncode}): {done.stderr[-2000:]}")
        submitted: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        submitted["seconds"] = round(time.monotonic() - began, 1)
        if not self.cfg.retry_policy:  # before any disruption: see retry_policy.py
            drop_retry_policy(self.env, self.cfg.batch_id)
        self.say(f"submitted {submitted['parts']} parts in {submitted['seconds']} s")
        return submitted

    # ---- launcher -------------------------------------------------------------------------------
    def _start_launcher(self) -> float:
        began = time.monotonic()
        self.launcher_starts += 1
        log = (self.dir / "launcher.log").open("ab")
        with log:
            log.write(f"---- launcher start {self.launcher_starts}\n".encode())
            log.flush()
            self.launcher = subprocess.Popen(
                [sys.executable, "-m", "batchctl", "launcher", "--backend", "local",
                 "--port", str(self.launcher_port)],
                env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = began + 60
        url = f"http://127.0.0.1:{self.launcher_port}/readyz"
        while not http_ok(url):
            if self.launcher.poll() is not None:
                raise RuntimeError(f"launcher exited with {self.launcher.returncode} on start")
            if time.monotonic() > deadline:
                raise RuntimeError("launcher not ready within 60 s")
            time.sleep(0.1)
        return time.monotonic() - began

    def _restart_launcher(self, sig: str, progress: float) -> None:
        assert self.launcher is not None
        restart = LauncherRestart(sig, progress)
        began = time.monotonic()
        self.launcher.send_signal(signal.Signals[sig])
        try:
            restart.exit_code = self.launcher.wait(timeout=45)
            restart.stop_s = round(time.monotonic() - began, 2)
        except subprocess.TimeoutExpired:
            self.launcher.kill()
            self.launcher.wait(timeout=10)
            restart.exit_code = None
        down = self.rng.uniform(0.5, 3.0)
        time.sleep(down)  # the chaos itself: how long no launcher runs
        restart.down_s = round(down, 2)
        restart.ready_s = round(self._start_launcher(), 2)
        self.restarts.append(restart)
        self.say(f"launcher {sig} at {progress:.0%}: exit {restart.exit_code} after {restart.stop_s} s, "
                 f"new one ready in {restart.ready_s} s")

    def _check_launcher(self, progress: float) -> None:
        """A launcher that exits by itself is a crash: record it, start another, go on."""
        if self.launcher is None or self.launcher.poll() is None:
            return
        tail = (self.dir / "launcher.log").read_text(errors="replace")[-3000:]
        self.crashes.append({"pid": self.launcher.pid, "exit_code": self.launcher.returncode,
                             "progress": round(progress, 3), "at_s": round(time.monotonic() - self.started, 1),
                             "log_tail": tail})
        self.say(f"LAUNCHER CRASHED with exit {self.launcher.returncode} at {progress:.0%}; restarting it")
        self._start_launcher()

    # ---- workers --------------------------------------------------------------------------------
    def _worker_pids(self) -> set[int]:
        for path in (self.state_dir / "jobs").glob("*.json"):
            try:
                self.known_workers.update(int(p) for p in json.loads(path.read_text()).get("pids", []))
            except (OSError, ValueError):
                continue
        return self.known_workers

    def _ours(self, pid: int) -> bool:
        cmdline = proc_field(pid, "cmdline")
        if "\0-m\0batchctl\0worker" not in cmdline:
            return False
        return environ_of(pid).get("BATCHCTL_STATE_DIR") == str(self.state_dir)

    def live_workers(self) -> list[int]:
        return sorted(p for p in self._worker_pids() if running(p) and self._ours(p))

    def _reap(self) -> None:
        """Reap exited workers that were reparented to us (we are their subreaper)."""
        if not self.subreaper:
            return
        for pid in self.known_workers:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)

    def _kill(self, sig: str, progress: float) -> bool:
        candidates = [p for p in self.live_workers() if p not in self.terminated]
        if not candidates:
            return False
        pid = self.rng.choice(candidates)
        worker = environ_of(pid).get("BATCHCTL_WORKER_ID", "?")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.Signals[sig])
        if sig == "SIGTERM":
            self.terminated.add(pid)
        self.kills.append(Kill(time.time(), pid, worker, sig, progress))
        self.say(f"{sig} worker {worker} (pid {pid}) at {progress:.0%}")
        return True

    # ---- Pub/Sub outage -------------------------------------------------------------------------
    def _pubsub_outage(self, progress: float) -> None:
        """Pub/Sub down at the proxy for ``outage_s`` (the disruption's length, not a wait), then back."""
        assert self.proxy is not None
        outage = Outage(progress)
        self.outage = outage
        self.outage_launcher_pid = self.launcher.pid if self.launcher else 0
        cut_before = self.proxy.stats.cut
        outage.started_at = time.time()
        self.proxy.down()
        self.say(f"Pub/Sub down at {progress:.0%} for {self.cfg.outage_s:.0f} s")
        time.sleep(self.cfg.outage_s)  # the outage itself: everything else keeps running
        self.proxy.restore()
        outage.ended_at = time.time()
        outage.seconds = round(outage.ended_at - outage.started_at, 2)
        outage.connections_cut = self.proxy.stats.cut - cut_before
        self.say(f"Pub/Sub back after {outage.seconds} s ({outage.connections_cut} connections reset)")

    # ---- the loop -------------------------------------------------------------------------------
    def _batch(self) -> Any:
        from batchctl.launcher.store import FileStore

        return FileStore(self.state_dir).load(self.cfg.batch_id)

    def _drive(self) -> dict[str, Any]:
        from batchctl.launcher.state import TERMINAL

        plan = schedule(self.cfg, self.rng)
        deadline = self.started + self.cfg.time_limit_s
        next_at = 0.0
        progress = 0.0
        while True:
            self._worker_pids()
            self._reap()
            batch = self._batch()
            if batch is not None and batch.state in TERMINAL:
                self.say(f"batch {batch.state}: {len(batch.done)}/{batch.parts} done")
                return {"ended": batch.state, "pending": [d.kind for d in plan]}
            if time.monotonic() > deadline:
                self.say("TIME LIMIT reached before the batch ended")
                return {"ended": "timeout", "pending": [d.kind for d in plan]}
            progress = len(batch.done) / batch.parts if batch is not None else 0.0
            self._check_launcher(progress)
            self._watch_stall(batch is not None and batch.state == "running", progress)
            if plan and plan[0].at <= progress and time.monotonic() >= next_at and self._disrupt(plan[0], progress):
                plan.pop(0)
                next_at = time.monotonic() + self.rng.uniform(0.1, 0.6)
            time.sleep(0.1)

    def _watch_stall(self, running: bool, progress: float) -> None:
        """Record each stretch over 2 s in which the batch runs but no worker of it is alive."""
        now = time.monotonic()
        if running and not self.live_workers():
            if self._stall_began is None:
                self._stall_began, self._stall_progress = now, progress
            return
        if self._stall_began is not None and now - self._stall_began > 2.0:
            self.stalls.append({"at_s": round(self._stall_began - self.started, 1),
                                "seconds": round(now - self._stall_began, 1),
                                "progress": round(self._stall_progress, 3)})
            self.say(f"no worker alive for {now - self._stall_began:.1f} s at {self._stall_progress:.0%}")
        self._stall_began = None

    def _disrupt(self, event: Disruption, progress: float) -> bool:
        if event.kind == "kill":
            return self._kill(event.sig, progress)
        if event.kind == "launcher":
            self._restart_launcher(event.sig, progress)
        else:
            self._pubsub_outage(progress)
        return True

    # ---- the end --------------------------------------------------------------------------------
    def _settle_workers(self, timeout: float = 60) -> int:
        """Wait for the workers to drain and exit by themselves (bounded); returns how many remain."""
        deadline = time.monotonic() + timeout
        while (live := self.live_workers()) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.2)
        return len(live)

    def _stop_launcher(self) -> dict[str, Any]:
        if self.launcher is None or self.launcher.poll() is not None:
            return {"exit_code": None if self.launcher is None else self.launcher.returncode, "stop_s": None}
        began = time.monotonic()
        self.launcher.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.launcher.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.launcher.kill()
            self.launcher.wait(timeout=10)
            code = None
        return {"exit_code": code, "stop_s": round(time.monotonic() - began, 2)}

    def _cleanup(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.kill()
            self.launcher.wait(timeout=10)
        for pid in self.live_workers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        self._reap()
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def _report(self, submitted: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
        leftover = self._settle_workers()
        status_run = self._cli("status", self.cfg.batch_id, "--json")
        try:
            status = json.loads(status_run.stdout)
        except ValueError:
            status = {"error": status_run.stderr[-500:]}
        final_stop = self._stop_launcher()
        wall = time.monotonic() - self.started
        results = check_results(self.results, self.cfg.batch_id, self.cfg.parts)
        calls = analyse_calls(self.calls, self.kills, self.outage, self.cfg.lease_s)
        exits = worker_exits(self.state_dir / "logs")
        if self.outage is not None:
            self.outage.launcher_survived = all(c["pid"] != self.outage_launcher_pid for c in self.crashes)
        launcher_errors = launcher_log_summary(self.dir / "launcher.log")
        ok = (results["lost"] == 0 and results["bad"] == 0 and status.get("state") == "succeeded"
              and status.get("parts_done") == status.get("parts_total") == self.cfg.parts and not self.crashes
              and final_stop["exit_code"] == 0 and all(r.exit_code == (0 if r.sig == "SIGTERM" else -9)
                                                      for r in self.restarts))
        return {
            "ok": ok,
            "seed": self.cfg.seed,
            "parts": self.cfg.parts,
            "wall_s": round(wall, 1),
            "submit_s": submitted.get("seconds"),
            "outcome": outcome["ended"],
            "disruptions_not_done": outcome["pending"],
            "status": status,
            "lost": results["lost"],
            "lost_parts": results["lost_parts"],
            "bad_results": results["bad"],
            "kills": dict(Counter(k.sig for k in self.kills)),
            "kills_detail": [{"sig": k.sig, "worker": k.worker, "progress": round(k.progress, 3)} for k in self.kills],
            "launcher_restarts": [vars(r) for r in self.restarts],
            "launcher_crashes": self.crashes,
            "launcher_final_stop": final_stop,
            "launcher_log": launcher_errors,
            "pubsub_outage": None if self.outage is None else {
                k: v for k, v in vars(self.outage).items() if k not in ("started_at", "ended_at")},
            "jobs": len(status.get("jobs") or []),
            "workers_left_running": leftover,
            "worker_exits": exits,
            "subreaper": self.subreaper,
            "stalls": self.stalls,
            **calls,
        }

