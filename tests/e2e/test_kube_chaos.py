"""The Kubernetes chaos run in its short CI form (the full one is ``bench/chaos --backend kubernetes``).

1,200 one-record parts on the Kubernetes backend (4 workers) and a sacrificial 200-part batch
(1 worker), while the driver (``tests.support.kube_chaos``) at seeded random points of progress:
SIGKILLs two worker pods and SIGTERMs two, evicts one, deletes the running Job (its replacement's
create refused once with 403), answers two bursts of 429 with Retry-After, compacts the watch
history twice (410), SIGKILLs the leading launcher and restarts it, freezes the leader past its
Lease while the other replica runs, takes the API server away from the launchers for 6 s and
Pub/Sub away from everyone for 4 s, and cuts the sacrificial batch's state ConfigMap short.

Asserts: the main batch succeeded with parts_done exact and no part lost; duplicates within the
parts in flight at the disruptions that can cause them, none unexplained; Jobs within the bound
the launcher promises (1 + one per worker disrupted + one per Job deleted; the sacrificial batch 1);
the sacrificial batch failed naming its unreadable ConfigMap, which was left as it was; no launcher
crashed and both stop cleanly; every planned disruption happened and each fault was answered.

It once failed in about one run in four (issue 12): progress handled, acked, never counted. The
launcher nacked the events of a failed save; the emulator never again delivers some of a message
nacked and then leased to a launcher that dies (a leader SIGKILLed right after saves failed under
429s). Events of a failed save are now held by the leader, never nacked (``launcher.held``).

The run may take up to 170 s: a SIGKILL as late as 81 % of progress, after a launcher restart (whose
new term waits out the dead leader's pull, 25 s), is followed by a Job only once the killed pods'
leases lapse (ack deadline 20 s + 3 s) and that Job's pods start; under CI load 110 s ran out
with the follow-up still due (seed 996779: outcome timeout, nothing dead-lettered or dropped).

The seed is random unless BATCHCTL_CHAOS_SEED is set; every failure message names it.
"""

from __future__ import annotations

import json
import os
import random
import secrets
from pathlib import Path

import pytest

from tests.support.kube_chaos import KubeChaosRun
from tests.support.kube_chaos_plan import KubeChaosConfig
from tests.support.kube_chaos_report import summary_text

PARTS = 1200


@pytest.mark.timeout(260)
def test_kube_chaos_short(tmp_path: Path, emulator_host: str) -> None:
    seed = int(os.environ.get("BATCHCTL_CHAOS_SEED") or random.randrange(1_000_000))
    config = KubeChaosConfig(
        parts=PARTS, kills=4, evictions=1, job_deletes=1, launcher_kills=1, freezes=1, freeze_s=18.0,
        api_outage_s=6.0, throttles=2, throttle_count=3, watch_gone=2, pubsub_outage_s=4.0, spare_parts=200,
        part_s=0.08, seed=seed, time_limit_s=170, work_dir=tmp_path, quiet=True, emulator_host=emulator_host,
        prefix="kc" + secrets.token_hex(3),
    )
    report = KubeChaosRun(config).run()
    text = summary_text(report)
    print(text)
    where = f"seed {seed} (replay: BATCHCTL_CHAOS_SEED={seed}); work folder {tmp_path}\n{text}"
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1, default=str))
    main, spare = report["batches"][config.batch_id], report["batches"][config.spare_id]
    assert report["lost"] == 0 and report["bad_results"] == 0, f"lost {report['lost_parts']}: {where}"
    assert report["parts_completed"] == PARTS, where
    in_flight, causes = report["in_flight_at_kills"], report["duplicates_by_cause"]
    for cause, row in in_flight.items():
        assert causes.get(cause, 0) <= row["in_flight"], f"{cause}: {where}"
    assert causes.get("pubsub_outage", 0) <= report["in_flight_at_outage"], where
    assert "unexplained" not in causes and "unexplained" not in report["redeliveries_by_cause"], where
    assert main["jobs_created"] <= report["jobs_bound"], where
    assert main["job_count"] == main["jobs_created"], where  # status --json counts what the API server saw
    assert spare["jobs_created"] <= 1, where
    assert spare["state"] == "failed", where
    assert "stored state unreadable" in spare["reason"], where
    assert f"ConfigMap {config.prefix}-{config.spare_id}-state" in spare["reason"], where
    assert report["corrupt"]["left_as_is"], where
    assert report["launcher_crashes"] == [], where
    assert set(report["launcher_final_stop"].values()) == {0}, where
    assert report["disruptions_not_done"] == [], where
    kills = report["kills"]
    assert (kills["SIGKILL"], kills["SIGTERM"], kills["EVICTION"]) == (2, 2, 1), where
    assert report["disruptions_done"]["delete_job"] == 1 and report["disruptions_done"]["corrupt"] == 1, where
    faults = report["api_faults"]
    assert faults["answered_429"] == 2 * config.throttle_count and faults["answered_403"] >= 1, where
    assert all(n >= 1 for n in faults["relists_after_compaction"]), where
    assert report["workers_left_running"] == 0, where
    assert report["outcome"] == "succeeded" and main["state"] == "succeeded", where
    assert main["parts_done"] == main["parts_total"] == PARTS, where
