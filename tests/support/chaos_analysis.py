"""The chaos run's evidence, read after the run: result files, the handler's call logs, process logs."""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchctl.worker import demo
from tests.support.chaos_plan import Kill, Outage, record

KILL_SETTLE_WINDOW_S = 2.0
"""A redelivery is blamed on a kill when the victim started (or finished) the part this soon before it."""


def check_results(folder: Path, batch_id: str, parts: int) -> dict[str, Any]:
    """Every part's result file exists and holds the summary of exactly that part's record."""
    found: set[int] = set()
    bad: list[int] = []
    head = f"{batch_id}-"
    for entry in os.scandir(folder):
        name = entry.name
        if not (name.startswith(head) and name.endswith(".json")):
            continue
        index = int(name[len(head) : -5])
        found.add(index)
        try:
            body = json.loads(Path(entry.path).read_text())
        except ValueError:
            bad.append(index)
            continue
        expected = demo.summarize([record(index)])
        if body.get("part") != index or body.get("sha256") != expected["sha256"] or body.get("records") != 1:
            bad.append(index)
    lost = sorted(set(range(parts)) - found)
    return {"lost": len(lost), "lost_parts": lost[:50], "bad": len(bad), "bad_parts": sorted(bad)[:50]}


@dataclass
class Delivery:
    pid: int
    part: int
    attempt: int
    start: float
    end: float | None = None


def read_deliveries(folder: Path, pattern: str = "*.log") -> list[Delivery]:
    """Every handler call in the call logs matching ``pattern`` (``<pid>-<worker id>.log``)."""
    deliveries: list[Delivery] = []
    for path in folder.glob(pattern):
        pid = int(path.name.split("-", 1)[0])
        open_: dict[int, Delivery] = {}
        for line in path.read_text(errors="replace").splitlines():
            bits = line.split()
            if len(bits) != 4 or bits[0] not in ("S", "D"):
                continue  # a line torn by SIGKILL
            kind, part, attempt, ts = bits[0], int(bits[1]), int(bits[2]), float(bits[3])
            if kind == "S":
                open_[part] = Delivery(pid, part, attempt, ts)
                deliveries.append(open_[part])
            elif part in open_:
                open_.pop(part).end = ts
    return deliveries


def _cause(prev: Delivery, kills: dict[int, Kill], outage: Outage | None, lease_s: int) -> str:
    kill = kills.get(prev.pid)
    if kill is not None and kill.at >= prev.start and kill.at - (prev.end or prev.start) <= KILL_SETTLE_WINDOW_S:
        return kill.sig.lower()
    if outage is not None and outage.started_at - lease_s <= prev.start < outage.ended_at:
        return "pubsub_outage"
    return "unexplained"


def analyse_calls(folder: Path, kills: list[Kill], outage: Outage | None, lease_s: int,
                  pattern: str = "*.log") -> dict[str, Any]:
    """Redeliveries and duplicates from the handler's own log, each blamed on a cause (a kill's
    ``sig``, lowercased: ``sigkill``, ``sigterm``, or whatever the driver named its disruption)."""
    deliveries = read_deliveries(folder, pattern)
    by_part: dict[int, list[Delivery]] = {}
    for d in deliveries:
        by_part.setdefault(d.part, []).append(d)
    by_pid = {k.pid: k for k in kills}
    redeliveries: Counter[str] = Counter()
    duplicates: Counter[str] = Counter()
    blamed: Counter[int] = Counter()
    blamed_dups: Counter[int] = Counter()
    examples: list[dict[str, Any]] = []
    for part, runs in by_part.items():
        runs.sort(key=lambda d: d.start)
        completed = 0
        for n, run in enumerate(runs):
            cause = _cause(runs[n - 1], by_pid, outage, lease_s) if n else ""
            if n:
                redeliveries[cause] += 1
                blamed[runs[n - 1].pid] += cause.startswith("sig")
            if run.end is None:
                continue
            completed += 1
            if completed > 1:
                duplicates[cause or "?"] += 1
                blamed_dups[runs[n - 1].pid] += cause.startswith("sig")
                if cause == "unexplained" and len(examples) < 10:
                    examples.append({"part": part, "deliveries": [vars(r) for r in runs]})
    return {
        "handler_calls": len(deliveries),
        "handler_completions": sum(1 for d in deliveries if d.end is not None),
        "parts_completed": sum(1 for runs in by_part.values() if any(r.end is not None for r in runs)),
        "duplicates": sum(duplicates.values()),
        "duplicates_by_cause": dict(duplicates),
        "redeliveries": sum(redeliveries.values()),
        "redeliveries_by_cause": dict(redeliveries),
        "in_flight_at_kills": kill_in_flight(deliveries, kills, blamed, blamed_dups),
        "in_flight_at_outage": outage_in_flight(deliveries, outage),
        "unexplained_examples": examples,
    }


def kill_in_flight(deliveries: list[Delivery], kills: list[Kill], blamed: Counter[int],
                   blamed_dups: Counter[int]) -> dict[str, Any]:
    """Per signal: parts in the handler at the kill, parts finished in the last 0.5 s before it (maybe
    not yet acked: the ack waits for the ``part_done`` confirmation), ``in_flight`` (in the handler or
    finished within the blame window, so possibly unacked), and what was then redelivered."""
    by_pid: dict[int, list[Delivery]] = {}
    for d in deliveries:
        by_pid.setdefault(d.pid, []).append(d)
    out: dict[str, dict[str, Any]] = {}
    for kill in kills:
        mine = by_pid.get(kill.pid, [])
        running = sum(1 for d in mine if d.start <= kill.at and (d.end is None or d.end > kill.at))
        recent = sum(1 for d in mine if d.end is not None and kill.at - 0.5 <= d.end <= kill.at)
        settling = sum(1 for d in mine if d.end is not None and kill.at - KILL_SETTLE_WINDOW_S <= d.end <= kill.at)
        row = out.setdefault(kill.sig.lower(), {"kills": 0, "in_handler": 0, "finished_last_0_5s": 0,
                                                "in_flight": 0, "redelivered": 0, "duplicate_completions": 0,
                                                "per_kill": []})
        row["kills"] += 1
        row["in_handler"] += running
        row["finished_last_0_5s"] += recent
        row["in_flight"] += running + settling
        row["redelivered"] += blamed[kill.pid]
        row["duplicate_completions"] += blamed_dups[kill.pid]
        row["per_kill"].append([running, blamed[kill.pid], blamed_dups[kill.pid]])
    return out


def outage_in_flight(deliveries: list[Delivery], outage: Outage | None) -> int:
    """Handler calls that may hold an unsettled part across the outage: running at any time during it,
    or finished within the blame window before it (their ``part_done`` or ack may not have gone out)."""
    if outage is None:
        return 0
    since = outage.started_at - KILL_SETTLE_WINDOW_S
    return sum(1 for d in deliveries if d.start <= outage.ended_at and (d.end is None or d.end >= since))


def _json_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def worker_exits(folder: Path) -> dict[str, Any]:
    """How workers ended (from their logs; a SIGKILLed worker logs nothing) and what they complained of."""
    reasons: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    logs = sorted(folder.glob("*.log")) if folder.exists() else []
    for path in logs:
        for row in _json_lines(path):
            event = row.get("event", "")
            if event == "worker_exited":
                reasons[row.get("reason", "?")] += 1
            elif event == "worker_failed":
                codes[str(row.get("exit_code"))] += 1
            elif row.get("level") in ("warning", "error", "critical"):
                warnings[event] += 1
    return {"logs": len(logs), "exited": dict(reasons), "failed_exit_codes": dict(codes),
            "warnings": dict(warnings)}


def launcher_log_summary(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    text = path.read_text(errors="replace")
    warnings: Counter[str] = Counter()
    for row in _json_lines(path):
        if row.get("level") in ("warning", "error", "critical"):
            warnings[row.get("event", "?")] += 1
    return {"warnings": dict(warnings), "tracebacks": text.count("Traceback (most recent call last)")}


def summary_text(report: dict[str, Any]) -> str:
    """A few human lines; the JSON line carries every figure."""
    status = report["status"]
    lines = [
        f"chaos run seed={report['seed']} parts={report['parts']} wall={report['wall_s']} s "
        f"(submit {report['submit_s']} s): {'OK' if report['ok'] else 'FAILED'}",
        f"  status: state={status.get('state')} parts_done={status.get('parts_done')}/"
        f"{status.get('parts_total')} dead={status.get('parts_dead')} jobs={len(status.get('jobs') or [])}",
        f"  lost={report['lost']} bad_results={report['bad_results']}",
        f"  worker kills: {report['kills']}",
        *(f"    {sig.upper()} x{row['kills']}: in the handler at the kill {row['in_handler']}, finished in the "
          f"0.5 s before it {row['finished_last_0_5s']}; then redelivered {row['redelivered']}, "
          f"completed twice {row['duplicate_completions']}" for sig, row in report["in_flight_at_kills"].items()),
        "  launcher restarts: " + ", ".join(
            f"{r['sig']} at {r['progress']:.0%} (exit {r['exit_code']} in {r['stop_s']} s, ready {r['ready_s']} s)"
            for r in report["launcher_restarts"]) + f"; crashes: {len(report['launcher_crashes'])}",
        f"  Pub/Sub outage at the proxy: {report['pubsub_outage']}; handler calls in flight across it "
        f"{report['in_flight_at_outage']}",
        f"  handler calls={report['handler_calls']} completions={report['handler_completions']} "
        f"duplicates={report['duplicates']} {report['duplicates_by_cause']} "
        f"redeliveries={report['redeliveries']} {report['redeliveries_by_cause']}",
        f"  worker exits: {report['worker_exits']['exited']} failed codes: "
        f"{report['worker_exits']['failed_exit_codes']}",
    ]
    if report["stalls"]:
        lines.append(f"  stalls (batch running, no worker alive > 2 s): {report['stalls']}")
    if report["disruptions_not_done"]:
        lines.append(f"  disruptions not done (batch ended first): {report['disruptions_not_done']}")
    return "\n".join(lines)
