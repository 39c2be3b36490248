"""REPORT.md rows of the data benches: ``gcs_source`` (submit from gs://), ``results_sink`` and ``results_latency``."""

from __future__ import annotations

from typing import Any

from report import Row, _check, _get, _num, _verdict


def rows(benches: dict[str, Any]) -> list[Row]:
    return (_gcs_source(_get(benches, "gcs_source", "figures", default={}))
            + _results_sink(_get(benches, "results_sink", "figures", default={}))
            + _results_latency(_get(benches, "results_latency", "figures", default={})))


def _gcs_source(gs: dict[str, Any]) -> list[Row]:
    if not gs:
        return []
    ratio, target = _get(gs, "ratio"), _get(gs, "ratio_target", default=0.8)
    return [
        (f"submit gs:// ({_num(_get(gs, 'records'), ',.0f')} records, {_num(_get(gs, 'mb'), '.0f')} MB in "
         f"{_get(gs, 'objects')} objects) / raw download + raw publish loop",
         f"{_num(_get(gs, 'batchctl_records_per_s'), ',.0f')} vs {_num(_get(gs, 'raw_records_per_s'), ',.0f')} "
         f"records/s = {_num(ratio, '.2f')}", f">= {target}", _verdict(_check(ratio, lambda v: v >= target)),
         "gcs_source"),
        ("  gs:// input path alone (2 passes, validated) / raw download",
         f"{_num(_get(gs, 'read_batchctl_s'), '.2f')} s vs {_num(_get(gs, 'read_raw_s'), '.2f')} s = "
         f"{_num(_get(gs, 'read_ratio'), '.2f')}", "(context)", "", "gcs_source"),
        ("  downloads per object (two passes over the input)", _num(_get(gs, "opens_per_object"), ".0f"), "1",
         _verdict(_check(_get(gs, "opens_per_object"), lambda v: v == 1)), "gcs_source"),
        ("  peak Python allocation of the input path: one object / all",
         f"{_num(_get(gs, 'peak_alloc_one_object_mb'), '.1f')} MB / "
         f"{_num(_get(gs, 'peak_alloc_all_objects_mb'), '.1f')} MB", "flat", "", "gcs_source"),
    ]


def _results_sink(rs: dict[str, Any]) -> list[Row]:
    if not rs:
        return []
    target = _get(rs, "cost_target", default=0.1)
    local, gcs, raw = _get(rs, "local_cpu_cost"), _get(rs, "gcs_cpu_cost"), _get(rs, "raw_upload", default={})
    parts = _get(rs, "gcs_parts", default=0) or 1
    per_part = _get(rs, "cpu_per_part_us", default={})
    return [
        (f"results to a local folder, {_get(rs, 'records_per_part')}-record parts: worker CPU per part (startup "
         "out), drain time vs returning nothing",
         f"{_num(local * 100 if isinstance(local, float) else local, '+.1f')} % CPU, "
         f"{_num(_pct(_get(rs, 'local_drain_cost')), '+.1f')} % drain time", f"<= {target:.0%}",
         _verdict(_check(local, lambda v: v <= target)), "results_sink"),
        ("results to gs:// (emulator): worker CPU per part (startup out), drain time vs returning nothing",
         f"{_num(_pct(gcs), '+.0f')} % CPU, {_num(_pct(_get(rs, 'gcs_drain_cost')), '+.0f')} % drain time",
         f"<= {target:.0%}", _verdict(_check(gcs, lambda v: v <= target)), "results_sink"),
        ("  raw client uploading the same objects (per object)",
         f"{_num(_get(raw, 'seconds', default=0) / parts * 1000, '.0f')} ms, "
         f"{_num(_get(raw, 'cpu_s', default=0) / parts * 1000, '.1f')} ms CPU; raw upload time / extra drain = "
         f"{_num(_get(rs, 'gcs_extra_drain_vs_raw_upload'), '.2f')}", "(context)", "", "results_sink"),
        ("  worker CPU per part: baseline / extra to a folder / extra to gs://",
         f"{_num(_get(per_part, 'baseline'), '.0f')} / {_num(_get(per_part, 'local_extra'), '.0f')} / "
         f"{_num(_get(per_part, 'gcs_extra'), '.0f')} us", "(context)", "", "results_sink"),
        ("  a folder: the file system's own write of the same files (same round) / the worker's extra beyond it",
         f"{_num(_get(per_part, 'raw_write'), '.0f')} us / {_num(_get(per_part, 'local_beyond_fs'), '.0f')} us "
         f"({_num(_pct(_get(rs, 'local_cpu_cost_beyond_fs')), '+.1f')} %)", "(context)", "", "results_sink"),
    ]


def _results_latency(rl: dict[str, Any]) -> list[Row]:
    if not rl:
        return []
    target, default = _get(rl, "target", default=0.8), _get(rl, "default_writers")
    rows: list[Row] = []
    for key in sorted((k for k in rl if k.startswith("writers_")), key=lambda k: int(k.split("_")[1])):
        w, at = int(key.split("_")[1]), rl[key]
        first = w == default
        rows.append((
            (f"results to gs:// ~{_num(_get(rl, 'round_trip_ms'), '.0f')} ms away (emulator behind a delaying proxy), "
             if first else "  ") + f"{w} writers{' (default)' if first else ''}: worker / raw client, {w} threads",
            f"{_num(_get(at, 'parts_per_s'), '.0f')} parts/s vs {_num(_get(at, 'raw_objects_per_s'), '.0f')} "
            f"objects/s = {_num(_get(at, 'ratio'), '.2f')}", f">= {target}" if first else "(context)",
            _verdict(_check(_get(at, "ratio"), lambda v: v >= target)) if first else "", "results_latency"))
    rows.sort(key=lambda row: not row[0].startswith("results"))
    return rows


def _pct(value: Any) -> Any:
    return value * 100 if isinstance(value, (int, float)) else value
