"""Write bench/results.json, bench/REPORT.md and bench/throughput.png from the benches' JSON lines.

    .venv/bin/python bench/report.py [bench/results.json]   # re-render REPORT.md and the plot

``bench/run`` calls ``write(results)``; ``results`` holds ``machine``, ``mode`` and, per bench,
its final JSON line under ``benches[name]["figures"]`` with the command that printed it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results.json"
REPORT = BENCH / "REPORT.md"
PLOT = BENCH / "throughput.png"

Row = tuple[str, str, str, str, str]  # figure, measured, target, verdict, bench


def _get(data: Any, *path: str, default: Any = None) -> Any:
    """``data[path[0]][path[1]]...``, or ``default`` where a key is missing (a bench's format may change)."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _num(value: Any, fmt: str) -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "**FAIL**")


def _check(value: Any, test: Callable[[float], bool]) -> bool | None:
    return test(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def rows(benches: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    sp = _get(benches, "split_publish", "figures", default={})
    if sp:
        ratio = _get(sp, "ratio")
        target = _get(sp, "ratio_target", default=0.9)
        out.append(
            (
                "split+publish, batchctl submit (in-process)",
                f"{_num(_get(sp, 'batchctl_records_per_s'), ',.0f')} records/s",
                "",
                "",
                "split_publish",
            )
        )
        out.append(
            (
                "split+publish, raw PublisherClient loop",
                f"{_num(_get(sp, 'raw_records_per_s'), ',.0f')} records/s",
                "",
                "",
                "split_publish",
            )
        )
        if _get(sp, "raw_bulk_records_per_s") is not None:
            out.append(
                (
                    "split+publish, raw loop over the client's API layer (publish requests)",
                    f"{_num(_get(sp, 'raw_bulk_records_per_s'), ',.0f')} records/s "
                    f"(batchctl / raw-bulk = {_num(_get(sp, 'ratio_vs_bulk'), '.2f')})",
                    "",
                    "",
                    "split_publish",
                )
            )
        out.append(
            (
                f"ratio batchctl / raw ({_num(_get(sp, 'records'), ',')} records, median of "
                f"{len(_get(sp, 'runs', 'raw', default=[]))})",
                _num(ratio, ".2f"),
                f">= {target}",
                _verdict(_check(ratio, lambda v: v >= target)),
                "split_publish",
            )
        )
        bd = _get(sp, "breakdown", default={})
        if bd:
            out.append(
                (
                    "  where the time goes (one run)",
                    f"batchctl split {_num(bd.get('batchctl_split_s'), '.2f')} s + publish "
                    f"{_num(bd.get('batchctl_publish_s'), '.2f')} s; raw read {_num(bd.get('raw_read_s'), '.2f')} s "
                    f"+ publish {_num(bd.get('raw_publish_s'), '.2f')} s",
                    "",
                    "",
                    "split_publish",
                )
            )
        rss = _get(sp, "submit_rss", default={})
        rss_target = _get(sp, "rss_target_mb", default=200)
        out.append(
            (
                f"peak RSS of `batchctl submit`, {_num(rss.get('input_mb'), ',.0f')} MB input",
                f"{_num(rss.get('peak_rss_mb'), '.0f')} MB ({_num(rss.get('seconds'), '.0f')} s, "
                f"{_num(rss.get('records_per_s'), ',.0f')} records/s)",
                f"< {rss_target:g} MB",
                _verdict(_check(rss.get("peak_rss_mb"), lambda v: v < rss_target)),
                "split_publish",
            )
        )
    wd = _get(benches, "worker_drain", "figures", default={})
    if wd:
        for key, figures in sorted((k, v) for k, v in wd.items() if k.startswith("c") and isinstance(v, dict)):
            ratio = _get(figures, "ratio_vs_pull")
            worker_rate = _get(figures, "worker", "parts_per_s")
            pull_rate = _get(figures, "pull", "parts_per_s")
            target = ">= 0.8" if key == "c1" else "(context)"
            out.append(
                (
                    f"worker drain, concurrency {key[1:]}: worker / raw pull+ack",
                    f"{_num(worker_rate, ',.0f')} vs {_num(pull_rate, ',.0f')} parts/s = {_num(ratio, '.2f')}",
                    target,
                    _verdict(_check(ratio, lambda v: v >= 0.8)) if key == "c1" else "",
                    "worker_drain",
                )
            )
            exit_s = _get(figures, "worker", "exit_after_last_ack_s")
            out.append(
                (
                    f"drain → exit latency, concurrency {key[1:]}",
                    f"{_num(exit_s, '.2f')} s",
                    "<= 5 s",
                    _verdict(_check(exit_s, lambda v: v <= 5.0)),
                    "worker_drain",
                )
            )
    ll = _get(benches, "launch_latency", "figures", default={})
    if ll:
        seq = ll.get("sequential", {})
        target = ll.get("p50_target_s", 0.5)
        out.append(
            (
                f"request → Job created, p50 ({seq.get('n', '?')} batches one at a time)",
                f"{_num(_ms(seq.get('p50_s')), '.0f')} ms",
                f"< {target * 1000:.0f} ms",
                _verdict(_check(seq.get("p50_s"), lambda v: v < target)),
                "launch_latency",
            )
        )
        out.append(
            (
                "request → Job created, p95 / max",
                f"{_num(_ms(seq.get('p95_s')), '.0f')} ms / {_num(_ms(seq.get('max_s')), '.0f')} ms",
                "(KEDA: 30 s poll + 1-3 min lag)",
                "",
                "launch_latency",
            )
        )
        burst = ll.get("burst", {})
        n = burst.get("batches", "?")
        out.append(
            (
                f"{n} batches at once: all Jobs created",
                f"{_num(burst.get('all_jobs_s'), '.1f')} s ({_num(burst.get('jobs_per_s'), '.0f')} Jobs/s; "
                f"{burst.get('launched', '?')}/{n})",
                f"all {n}",
                _verdict(burst.get("missing") == 0 if "missing" in burst else None),
                "launch_latency",
            )
        )
        out.append(
            (
                f"{n} at once: per-batch request → Job p50 / p95",
                f"{_num(_get(burst, 'latency', 'p50_s'), '.1f')} s / {_num(_get(burst, 'latency', 'p95_s'), '.1f')} s",
                "",
                "",
                "launch_latency",
            )
        )
        out.append(
            (
                f"launcher with {n} batches: peak RSS, CPU",
                f"{_num(burst.get('launcher_peak_rss_mb'), '.0f')} MB "
                f"(idle {_num(burst.get('launcher_idle_rss_mb'), '.0f')} MB); "
                f"{_num(burst.get('launcher_cpu_s'), '.1f')} CPU s to launch, then "
                f"{_num(_pct(burst.get('steady_cpu_fraction')), '.0f')}% of a core holding them",
                "",
                "",
                "launch_latency",
            )
        )
    out.extend(history_rows(_get(benches, "history", "figures", default={})))
    out.extend(budget_rows(_get(benches, "budget_share", "figures", default={})))
    out.extend(drain_bulk_rows(_get(benches, "drain_bulk", "figures", default={})))
    out.extend(launcher_events_rows(_get(benches, "launcher_events", "figures", default={})))
    e2e = _get(benches, "e2e_throughput", "figures", default={})
    if e2e:
        for run in e2e.get("runs", []):
            out.append(
                (
                    f"end to end, {e2e.get('records', 0):,} records, {run['workers']} worker(s)",
                    f"{_num(run.get('records_per_s'), ',.0f')} records/s ({_num(run.get('seconds'), '.1f')} s: submit "
                    f"{_num(run.get('submit_s'), '.1f')} s + drain {_num(run.get('drain_s'), '.1f')} s)",
                    "",
                    "pass" if run.get("state") == "succeeded" else f"**{run.get('state')}**",
                    "e2e_throughput",
                )
            )
    from report_data import rows as data_rows  # the data benches' rows live in their own module
    from report_image import rows as image_rows  # and the image's

    return out + data_rows(benches) + image_rows(benches)


def history_rows(hist: dict[str, Any]) -> list[Row]:
    """bench/history.py: a launcher holding many finished batches against one holding few."""
    if not hist or len(hist.get("runs", [])) < 2:
        return []
    low, high = hist["runs"][0], hist["runs"][-1]
    target = f"<= {hist.get('flat_target', 1.5)}x"
    out: list[Row] = []
    for key, label, unit, fmt in (("takeover_s", "takeover (load the unsettled batches)", "ms", ".0f"),
                                  ("held_mb", "heap held by the batches", "MB", ".1f"),
                                  ("tick_cpu_ms", "CPU per reconcile tick", "ms", ".2f")):
        scale = 1000 if key == "takeover_s" else 1
        ratio = _get(hist, "ratios", key)
        out.append((
            f"launcher with {high['finished']:,} vs {low['finished']:,} finished batches "
            f"(+{high['running']} running): {label}",
            f"{_num(high[key] * scale, fmt)} vs {_num(low[key] * scale, fmt)} {unit} = {_num(ratio, '.1f')}x",
            target, _verdict(_check(ratio, lambda r: r <= hist.get("flat_target", 1.5))), "history",
        ))
    if high.get("sweep_cpu_ms") is not None:
        out.append((
            f"  retention sweep (at most once a minute) over {high['finished']:,} vs {low['finished']:,} settled",
            f"{_num(high['sweep_cpu_ms'], '.1f')} vs {_num(low['sweep_cpu_ms'], '.1f')} ms CPU", "", "", "history",
        ))
    return out


def budget_rows(fig: dict[str, Any]) -> list[Row]:
    """bench/budget_share.py: many batches at once under BATCHCTL_MAX_WORKERS."""
    if not fig:
        return []
    head = f"{fig.get('batches')} batches at once, budget {fig.get('budget')}"
    fair = fig.get("fairness") or {}
    prio = fair.get("mean_ratio_by_priority") or {}
    return [
        (f"{head}: peak sum of spec.parallelism (watch, every Job version)", f"{fig.get('peak_parallelism')}",
         f"<= {fig.get('budget')}", _verdict(not fig.get("budget_exceeded")), "budget_share"),
        (f"{head}: requests -> budget fully in use", f"{_num(fig.get('time_to_full_s'), '.2f')} s", "", "",
         "budget_share"),
        (f"{head}: every batch succeeded, parts exact",
         f"in {_num(fig.get('all_done_s'), '.1f')} s (ideal {_num(fig.get('ideal_s'), '.1f')} s)", "",
         _verdict(bool(fig.get("all_succeeded_exactly"))), "budget_share"),
        (f"{head}: mean workers running (draining Jobs included)", f"{_num(fig.get('mean_workers_in_use'), '.1f')}",
         "", "", "budget_share"),
        (f"{head}: worker-seconds / fair share",
         f"min {_num(fair.get('ratio_min'), '.2f')}, median {_num(fair.get('ratio_median'), '.2f')}, "
         f"max {_num(fair.get('ratio_max'), '.2f')}; Jain {_num(fair.get('jain_index'), '.3f')}; low/normal/high "
         f"{_num(prio.get('low'), '.2f')}/{_num(prio.get('normal'), '.2f')}/{_num(prio.get('high'), '.2f')}",
         "", "", "budget_share"),
    ]


def drain_bulk_rows(fig: dict[str, Any]) -> list[Row]:
    """bench/drain_bulk.py: one worker at its defaults against the bulk raw loop; events per part; kill."""
    out: list[Row] = []
    for key in sorted(k for k in fig if k.startswith("defaults_r")):
        r = fig[key]
        out.append((
            f"worker at defaults, {key.removeprefix('defaults_r')}-record parts ({fig.get('parts'):,}), no-op: "
            "worker / bulk raw loop (pull <= 1000, bulk ack)",
            f"{_num(r.get('worker_parts_per_s'), ',.0f')} vs {_num(r.get('raw_parts_per_s'), ',.0f')} parts/s = "
            f"{_num(r.get('ratio'), '.2f')}", ">= 0.5", _verdict(_check(r.get("ratio"), lambda v: v >= 0.5)),
            "drain_bulk",
        ))
    c8 = fig.get("c8") or {}
    if c8:
        out.append((
            "worker concurrency 8 / raw pull loop of 8, 1-record parts",
            f"{_num(c8.get('worker_parts_per_s'), ',.0f')} vs {_num(c8.get('raw_parts_per_s'), ',.0f')} parts/s = "
            f"{_num(c8.get('ratio'), '.2f')}", ">= 0.9", _verdict(_check(c8.get("ratio"), lambda v: v >= 0.9)),
            "drain_bulk",
        ))
    r1 = fig.get("defaults_r1") or {}
    if r1:
        per_part = r1.get("events_per_part")
        out.append(("Pub/Sub messages the worker publishes per part (events), 1-record parts",
                    f"{_num(per_part, '.4f')} ({r1.get('events_published')} events)", "<= 0.05",
                    _verdict(_check(per_part, lambda v: v <= 0.05)), "drain_bulk"))
    if "kill_to_done_s" in fig:
        kill = fig["kill_to_done_s"]
        out.append(("kill -9 of a worker mid-part -> part redelivered and done (4 s part)", f"{_num(kill, '.1f')} s",
                    "<= 25 s", _verdict(_check(kill, lambda v: v <= 25)), "drain_bulk"))
    return out


def launcher_events_rows(fig: dict[str, Any]) -> list[Row]:
    """bench/launcher_events.py: aggregated part_done events applied and saved for one batch."""
    if not fig:
        return []
    return [(
        f"launcher applying aggregated part_done events, one batch ({fig.get('parts'):,} parts in "
        f"{fig.get('events'):,} events, {fig.get('saves')} coalesced saves)",
        f"{_num(fig.get('completions_per_s'), ',.0f')} completions/s", ">= 20,000",
        _verdict(_check(fig.get("completions_per_s"), lambda v: v >= 20_000)), "launcher_events",
    )]


def _ms(value: Any) -> Any:
    return value * 1000 if isinstance(value, (int, float)) else value


def _pct(value: Any) -> Any:
    return value * 100 if isinstance(value, (int, float)) else value


def markdown(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    benches = results.get("benches", {})
    lines = [
        "# batchctl benchmarks",
        "",
        f"Run {machine.get('date', '?')} in **{results.get('mode', '?')}** mode, "
        f"{results.get('duration_s', 0):.0f} s in all, on {machine.get('nproc', '?')} cores / "
        f"{machine.get('mem_total_mb', '?')} MB, Python {machine.get('python', '?')} "
        f"({machine.get('platform', '?')}); load average at start "
        f"{', '.join(f'{v:.2f}' for v in machine.get('loadavg_at_start', []))} (the machine is shared). "
        "Everything on loopback: the real Pub/Sub emulator "
        f"({'started by bench/run' if results.get('emulator_started_here') else 'from PUBSUB_EMULATOR_HOST'}) and "
        "kmock's Kubernetes API server. Ratios compare batchctl with the raw client in the same run.",
        "",
        "| Figure | Measured | Target | Verdict | Bench |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows(benches)]
    e2e = _get(benches, "e2e_throughput", "figures", default={})
    if e2e.get("limit"):
        lines += [
            "",
            f"End to end (handler `{e2e.get('handler')}`, worker concurrency "
            f"{e2e.get('concurrency') or 'default'}): {e2e['limit']}.",
            "",
            "![end-to-end throughput](throughput.png)",
        ]
    ll = _get(benches, "launch_latency", "figures", default={})
    if ll and not ll.get("kmock_history"):
        lines += [
            "",
            "Launch figures use the tests' kmock ApiServer with kmock's request history bounded: kmock 0.8 "
            "matches each request against every request served before it, which makes a write cost "
            "O(requests so far) (>100 ms after a few thousand) and would measure kmock, not the launcher "
            "(`bench/launch_latency.py --kmock-history` to see it).",
        ]
    hist = _get(benches, "history", "figures", default={})
    if hist and hist.get("ok"):
        lines += [
            "",
            "History (`bench/history.py`) is flat because settled batches (finished and cleaned up) are kept "
            "apart in the store (a label on state ConfigMaps, `batches/settled/` for files): a taking-over "
            "launcher lists only the others, a batch leaves memory a few minutes after it settles (`retry` "
            "loads it again), and the retention sweep reads only their end times (an annotation, a file's "
            "mtime). Before that change the same bench measured 95x takeover, 74x heap and 7x CPU per tick.",
        ]
    if hist and not hist.get("ok"):
        lines += [
            "",
            "History (`bench/history.py`) is not flat: the launcher loads every batch the store keeps at "
            "takeover, holds each in memory with its part sets until BATCHCTL_RETENTION forgets it, and "
            "walks all of them on every tick. Retention bounds the history (7 days by default), not its "
            "cost. Flat would need a store that lists unfinished batches apart (a label on state "
            "ConfigMaps, a folder of its own for files), finished batches dropped from memory once settled "
            "(retry and status load them on demand), and the retention sweep reading only their end times.",
        ]
    lines += ["", "## Commands", "", "Everything: `bench/run` (or `bench/run --quick`). Each bench alone:", ""]
    for name, bench in benches.items():
        status = "ok" if bench.get("returncode") == 0 else f"exit {bench.get('returncode')}"
        earlier = f"; figures kept from the run of {bench['kept_from']}" if bench.get("kept_from") else ""
        lines.append(f"- `{bench.get('command', name)}` ({bench.get('seconds', 0):.0f} s, {status}{earlier})")
    failed = [name for name, bench in benches.items() if not bench.get("figures")]
    if failed:
        lines += ["", f"No figures from: {', '.join(failed)} (see their output)."]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path = PLOT) -> bool:
    runs = _get(results, "benches", "e2e_throughput", "figures", "runs", default=[])
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = [r["workers"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(workers, [r["records_per_s"] for r in runs], "o-", label="end to end (submit → succeeded)")
    ax.plot(workers, [r["drain_records_per_s"] for r in runs], "s--", label="drain only (after submit)")
    records = _get(results, "benches", "e2e_throughput", "figures", "records", default=0)
    nproc = _get(results, "machine", "nproc", default="?")
    ax.set_title(f"batchctl local backend: {records:,} records, {nproc} cores")
    ax.set_xlabel("workers (max_parallelism)")
    ax.set_ylabel("records / s")
    ax.set_xticks(workers)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write(results: dict[str, Any], directory: Path = BENCH) -> list[Path]:
    written = [directory / RESULTS.name, directory / REPORT.name]
    (directory / RESULTS.name).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (directory / REPORT.name).write_text(markdown(results))
    if plot(results, directory / PLOT.name):
        written.append(directory / PLOT.name)
    return written


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else RESULTS
    results = json.loads(source.read_text())
    for path in write(results, source.parent):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
