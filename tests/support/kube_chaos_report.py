"""The Kubernetes chaos run's evidence: progress from the handler's call logs, and the report.

The analysis of the handler's output is ``chaos_analysis``'s (shared with the local run); this
module adds what only the Kubernetes backend has: Jobs and pods created per batch (counted in the
API server's own request log, and as ``status --json`` shows them), the API faults answered, the
corrupt batch's outcome, and the launcher replicas' logs.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.chaos_analysis import analyse_calls, check_results, launcher_log_summary, worker_exits
from tests.support.kube_chaos_cluster import NAMESPACE
from tests.support.kube_objects import CONFIGMAPS

if TYPE_CHECKING:
    from tests.support.kube_chaos import KubeChaosRun

WORKER_DISRUPTIONS = ("SIGKILL", "SIGTERM", "EVICTION")


class Progress:
    """Parts the handler completed, per batch, read incrementally from the call logs."""

    def __init__(self, folder: Path, prefix: str, batch_ids: tuple[str, ...]) -> None:
        self.folder, self.prefix = folder, prefix
        self.done: dict[str, set[int]] = {b: set() for b in batch_ids}
        self._offsets: dict[str, int] = {}

    def pattern(self, batch_id: str) -> str:
        """Call logs are ``<pid>-<worker id>.log``; a worker id is its pod's name, ``P-<batch>-<n>-xxxxx``."""
        return f"*-{self.prefix}-{batch_id}-*.log"

    def update(self) -> None:
        for batch_id, done in self.done.items():
            for path in self.folder.glob(self.pattern(batch_id)):
                offset = self._offsets.get(path.name, 0)
                try:
                    with path.open("rb") as log:
                        log.seek(offset)
                        chunk = log.read()
                except OSError:
                    continue
                complete = chunk[: chunk.rfind(b"\n") + 1]
                self._offsets[path.name] = offset + len(complete)
                for line in complete.split(b"\n"):
                    bits = line.split()
                    if len(bits) == 4 and bits[0] == b"D":
                        done.add(int(bits[1]))

    def fraction(self, batch_id: str, parts: int) -> float:
        return len(self.done[batch_id]) / parts if parts else 1.0


def settle(run: KubeChaosRun, timeout: float) -> int:
    """Wait (bounded) for every worker pod to end by itself; returns how many still run."""
    deadline = time.monotonic() + timeout
    while (left := run.cluster.any_pod_running()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def status_of(run: KubeChaosRun, batch_id: str) -> dict[str, Any]:
    shown = run.cluster.cli("status", batch_id, "--json", timeout=60)
    try:
        status: dict[str, Any] = json.loads(shown.stdout)
    except ValueError:
        status = {"error": (shown.stderr or shown.stdout)[-500:]}
    return status


def dead_lettered_events(run: KubeChaosRun) -> dict[str, Any]:
    """Events the launchers' subscription gave up on (after 10 deliveries), and events still unacked
    on it once the launchers stopped: progress never applied."""
    from batchctl.core.messages import decode_event
    from batchctl.core.pubsub import PubSub
    from batchctl.core.settings import Settings

    settings = Settings.from_env(run.cluster.env)
    pubsub = PubSub(settings)
    found: dict[str, Any] = {}
    try:
        for where in (settings.names.events_dead_letters, settings.names.events_subscription):
            kinds: Counter[str] = Counter()
            parts: set[int] = set()
            held = []
            while msgs := pubsub.pull(where, max_messages=1000, timeout_s=2):
                held += [m.ack_id for m in msgs]
                for msg in msgs:
                    event = decode_event(msg.data, msg.attributes)
                    kinds[f"{event.batch_id}/{event.type}/attempt {msg.delivery_attempt}"] += 1
                    if event.batch_id == run.cfg.batch_id and event.type == "part_done":
                        parts.update(event.done_parts)
            if held:
                pubsub.nack(where, held)
            found[where] = {"events": dict(kinds), "main_parts_named": len(parts)}
    finally:
        pubsub.close()
    return found


def unrecorded(run: KubeChaosRun) -> dict[str, Any]:
    """Parts the handler completed that the stored state does not count done, and when they were handled."""
    from tests.support.chaos_analysis import read_deliveries

    stored = run.cluster.stored(run.cfg.batch_id)
    if stored is None or stored.corrupt:
        return {}
    missing = set(range(run.cfg.parts)) - stored.done
    if not missing:
        return {"count": 0}
    wall0 = time.time() - (time.monotonic() - run.started)
    ends = sorted(d.end - wall0 for d in read_deliveries(run.cluster.calls, run.progress.pattern(run.cfg.batch_id))
                  if d.part in missing and d.end is not None)
    return {"count": len(missing), "handled_from_s": round(ends[0], 1) if ends else None,
            "handled_until_s": round(ends[-1], 1) if ends else None, "examples": sorted(missing)[:20]}


def state_regressions(run: KubeChaosRun) -> list[dict[str, Any]]:
    """Writes of the main batch's state that dropped parts an earlier stored write had done (a stale
    writer overwriting newer progress), from the API server's request log: when, by which
    precondition, and how many parts."""
    from batchctl.launcher.state import BatchState

    assert run.cluster.server is not None
    name = run.cluster.names.state_object(run.cfg.batch_id)
    before: set[int] = set()
    found = []
    for r in run.cluster.server.request_log():
        if r.rbac != ("", "configmaps", "patch") or r.name != name or r.status != 200:
            continue
        text = ((r.body or {}).get("data") or {}).get("state.json")
        if not text:
            continue
        done = BatchState.from_json(text).done
        if before - done:
            found.append({"at_s": round(r.received - run.started, 1), "dropped": len(before - done),
                          "precondition": ((r.body or {}).get("metadata") or {}).get("resourceVersion")})
        before = done
    return found


def report(run: KubeChaosRun, outcome: dict[str, Any]) -> dict[str, Any]:
    from tests.support.kube_chaos import SETTLE_S

    cfg, cluster = run.cfg, run.cluster
    leftover = settle(run, SETTLE_S)
    statuses = {b: status_of(run, b) for b in (cfg.batch_id, cfg.spare_id)}
    missing = unrecorded(run)
    stops = {r.name: r.stop() for r in cluster.replicas}
    dead_events = dead_lettered_events(run)
    wall = round(time.monotonic() - run.started, 1)
    results = check_results(cluster.results, cfg.batch_id, cfg.parts)
    calls = analyse_calls(cluster.calls, run.kills, run.outage, cfg.lease_s, pattern=run.progress.pattern(cfg.batch_id))
    jobs, pods, creates = cluster.created()
    worker_hits = sum(1 for k in run.kills if k.sig in WORKER_DISRUPTIONS)
    deletes = sum(1 for d in run.done if d.kind == "delete_job")
    bound = 1 + worker_hits + deletes
    spare = statuses[cfg.spare_id]
    corrupt = dict(run.corrupted or {})
    if corrupt:
        cm = cluster.server.read_object(CONFIGMAPS, NAMESPACE, corrupt["configmap"]) or {}  # type: ignore[union-attr]
        corrupt["left_as_is"] = (cm.get("data") or {}).get("state.json") == corrupt.pop("garbage")
        corrupt["state"], corrupt["reason"] = spare.get("state"), spare.get("reason")
    per_batch: dict[str, dict[str, Any]] = {
        b: {"state": s.get("state"), "reason": s.get("reason"), "parts_done": s.get("parts_done"),
                     "parts_total": s.get("parts_total"), "job_count": s.get("job_count"), "pods": s.get("pods"),
                     "jobs_created": jobs.get(b, 0), "pods_created": pods.get(b, 0)}
                 for b, s in statuses.items()}
    main = per_batch[cfg.batch_id]
    logs = {r.name: launcher_log_summary(r.log) for r in cluster.replicas}
    relists = [cluster.relists_since(at) for at in run.compacted_at]
    not_done = list(outcome["pending"]) + ([] if run.corrupted or not cfg.corrupt else ["corrupt"])
    ok = (results["lost"] == 0 and results["bad"] == 0 and main["state"] == "succeeded"
          and main["parts_done"] == main["parts_total"] == cfg.parts and not run.crashes
          and main["jobs_created"] <= bound and per_batch[cfg.spare_id]["jobs_created"] <= 1
          and (not cfg.corrupt or (spare.get("state") == "failed" and "stored state unreadable" in
                                   str(spare.get("reason"))))
          and all(code == 0 for code in stops.values()) and not not_done)
    return {
        "ok": ok, "backend": "kubernetes", "seed": cfg.seed, "parts": cfg.parts, "spare_parts": cfg.spare_parts,
        "wall_s": wall, "submit_s": {b: s.get("seconds") for b, s in run.submitted.items()},
        "outcome": outcome["ended"], "batches": per_batch, "jobs_bound": bound,
        "jobs_bound_rule": "1 + one per worker SIGKILLed, SIGTERMed or evicted + one per Job deleted",
        "job_creates": creates, "status": statuses[cfg.batch_id],
        "lost": results["lost"], "lost_parts": results["lost_parts"], "bad_results": results["bad"],
        "disruptions": [vars(d) for d in run.done], "disruptions_done": dict(Counter(d.kind for d in run.done)),
        "disruptions_not_done": not_done,
        "kills": dict(Counter(k.sig for k in run.kills)),
        "api_faults": {"answered_429": cluster.answered(429), "answered_403": cluster.answered(403),
                       "forbidden_job_creates": run.forbidden, "relists_after_compaction": relists},
        "unrecorded_parts": missing, "events_dead_lettered": dead_events, "state_regressions": state_regressions(run),
        "corrupt": corrupt, "launcher_crashes": run.crashes, "launcher_final_stop": stops,
        "launcher_starts": {r.name: r.starts for r in cluster.replicas}, "launcher_log": logs,
        "pubsub_outage": None if run.outage is None else {
            k: v for k, v in vars(run.outage).items() if k not in ("started_at", "ended_at")},
        "workers_left_running": leftover, "worker_exits": worker_exits(cluster.pods_dir),
        "work_dir": str(cluster.dir), "pid": os.getpid(), **calls,
    }


def summary_text(report: dict[str, Any]) -> str:
    """A few human lines; the JSON line carries every figure."""
    lines = [f"kube chaos run seed={report['seed']} parts={report['parts']} (+{report['spare_parts']} in the "
             f"corrupted batch) wall={report['wall_s']} s: {'OK' if report['ok'] else 'FAILED'}"]
    for batch_id, b in report["batches"].items():
        lines.append(f"  {batch_id}: {b['state']} parts_done={b['parts_done']}/{b['parts_total']} "
                     f"Jobs created={b['jobs_created']} (status job_count {b['job_count']}) pods created="
                     f"{b['pods_created']} (status pods {b['pods']})"
                     + (f"; reason: {b['reason']}" if b["reason"] else ""))
    lines += [
        f"  Jobs bound {report['jobs_bound']} ({report['jobs_bound_rule']})",
        f"  lost={report['lost']} bad_results={report['bad_results']} duplicates={report['duplicates']} "
        f"{report['duplicates_by_cause']} redeliveries={report['redeliveries']} {report['redeliveries_by_cause']}",
        *(f"    {sig.upper()} x{row['kills']}: in the handler at the kill {row['in_handler']}, in flight "
          f"{row['in_flight']}; then redelivered {row['redelivered']}, completed twice {row['duplicate_completions']}"
          for sig, row in report["in_flight_at_kills"].items()),
        f"  disruptions done: {report['disruptions_done']}; not done: {report['disruptions_not_done']}",
        *(f"    {d['at_s']:7.1f}s {d['progress']:5.0%} {d['kind']}"
          f"{'' if d['seconds'] is None else ' for ' + str(d['seconds']) + ' s'}: {d['detail']}"
          for d in report["disruptions"]),
        f"  API faults answered: 429 x{report['api_faults']['answered_429']}, 403 x"
        f"{report['api_faults']['answered_403']}; Job lists after each compaction "
        f"{report['api_faults']['relists_after_compaction']}",
        f"  corrupt state: {report['corrupt']}",
        f"  parts handled but not counted done: {report['unrecorded_parts']}; events dead-lettered: "
        f"{report['events_dead_lettered']}; stored progress dropped by a write: {report['state_regressions']}",
        f"  launchers: starts {report['launcher_starts']}, crashes {len(report['launcher_crashes'])}, final stop "
        f"exit codes {report['launcher_final_stop']}, tracebacks "
        f"{ {k: v.get('tracebacks') for k, v in report['launcher_log'].items()} }",
        f"  handler calls={report['handler_calls']} completions={report['handler_completions']}; worker exits "
        f"{report['worker_exits']['exited']} failed codes {report['worker_exits']['failed_exit_codes']}; "
        f"left running {report['workers_left_running']}",
    ]
    return "\n".join(lines)
