"""The chaos run in its short CI form (the full one is ``bench/chaos``).

2,500 one-record parts on the local backend, 4 workers; at random points of the batch's
progress the driver (``tests.support.chaos``) SIGKILLs two workers and SIGTERMs two,
SIGKILLs the launcher once and starts a new one, and takes Pub/Sub down for 6 s at the
fault proxy every client goes through (the emulator keeps its state; nothing is republished).
Asserts: no part lost (every result file present and right), ``status`` says succeeded with
parts_done exact, the launcher never crashed and stops cleanly on SIGTERM, every planned
disruption happened, duplicates at most the parts in flight at SIGKILLed workers (plus those
whose settlement the outage interrupted), no redelivery caused by SIGTERM (a terminated
worker finishes or nacks what it holds), every redelivery explained, and one Job per need.

The seed is random unless BATCHCTL_CHAOS_SEED is set; every failure message names it, so a
failing schedule can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import secrets
from pathlib import Path

import pytest

from tests.support.chaos import ChaosRun
from tests.support.chaos_analysis import summary_text
from tests.support.chaos_plan import ChaosConfig


@pytest.mark.timeout(300)
def test_chaos_short(tmp_path: Path, emulator_host: str) -> None:
    seed = int(os.environ.get("BATCHCTL_CHAOS_SEED") or random.randrange(1_000_000))
    config = ChaosConfig(
        parts=2500, kills=4, launcher_restarts=("SIGKILL",), pubsub_outage=True, outage_s=6.0,
        part_s=0.02, seed=seed, time_limit_s=180, max_parallelism=4, work_dir=tmp_path, quiet=True,
        emulator_host=emulator_host, prefix="ch" + secrets.token_hex(3),
    )
    report = ChaosRun(config).run()
    text = summary_text(report)
    print(text)
    where = f"seed {seed} (replay: BATCHCTL_CHAOS_SEED={seed}); work folder {tmp_path}\n{text}"
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1, default=str))
    assert report["outcome"] == "succeeded", where
    assert report["lost"] == 0 and report["bad_results"] == 0, f"lost {report['lost_parts']}: {where}"
    status = report["status"]
    assert status["state"] == "succeeded", where
    assert status["parts_done"] == status["parts_total"] == 2500, where
    assert report["parts_completed"] == 2500, where
    assert report["launcher_crashes"] == [], where
    assert [(r["sig"], r["exit_code"]) for r in report["launcher_restarts"]] == [("SIGKILL", -9)], where
    assert report["launcher_final_stop"]["exit_code"] == 0, where
    assert report["kills"] == {"SIGKILL": 2, "SIGTERM": 2}, where
    outage = report["pubsub_outage"]
    assert outage is not None and outage["connections_cut"] > 0 and outage["launcher_survived"], where
    assert report["disruptions_not_done"] == [], where
    assert report["workers_left_running"] == 0, where
    in_flight, causes = report["in_flight_at_kills"], report["duplicates_by_cause"]
    assert causes.get("sigkill", 0) <= in_flight["sigkill"]["in_flight"], where
    assert causes.get("pubsub_outage", 0) <= report["in_flight_at_outage"], where
    assert report["duplicates"] <= in_flight["sigkill"]["in_flight"] + report["in_flight_at_outage"], where
    assert report["redeliveries_by_cause"].get("sigterm", 0) == 0, where
    assert set(report["redeliveries_by_cause"]) <= {"sigkill", "pubsub_outage"}, where  # nothing unexplained
    assert report["jobs"] <= 1 + in_flight["sigkill"]["kills"], where  # the first, one follow-up per SIGKILL at most
