"""The chaos run in its short CI form (the full one is ``bench/chaos``).

2,500 one-record parts on the local backend, 4 workers; at random points of the batch's
progress the driver (``tests.support.chaos``) SIGKILLs two workers and SIGTERMs two,
SIGKILLs the launcher once and starts a new one, and restarts the Pub/Sub emulator once:
an 8 s outage the launcher and workers must ride out, then the restore that stands in for
Pub/Sub's durability (see the driver's docstring). Asserts: no part lost (every result
file present and right), ``status`` says succeeded with parts_done exact, the launcher
never crashed and stops cleanly on SIGTERM, every planned disruption happened.

It restarts the emulator, so it starts its own on a free port (and stops it) instead of
using the session's. The seed is random unless BATCHCTL_CHAOS_SEED is set; every
failure message names it, so a failing schedule can be replayed.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from batchctl.core.emulator import EmulatorMissing
from tests.support.chaos import ChaosRun
from tests.support.chaos_analysis import summary_text
from tests.support.chaos_plan import ChaosConfig


@pytest.mark.timeout(300)
def test_chaos_short(tmp_path: Path) -> None:
    seed = int(os.environ.get("BATCHCTL_CHAOS_SEED") or random.randrange(1_000_000))
    config = ChaosConfig(
        parts=2500, kills=4, launcher_restarts=("SIGKILL",), emulator_restart=True, outage_s=8.0,
        part_s=0.02, seed=seed, time_limit_s=180, max_parallelism=4, work_dir=tmp_path, quiet=True,
    )
    try:
        report = ChaosRun(config).run()
    except EmulatorMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Pub/Sub emulator is required in CI: {exc}")
        pytest.skip(str(exc))
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
    restart = report["emulator_restart"]
    assert restart is not None and not restart["error"] and restart["launcher_survived"], where
    assert report["disruptions_not_done"] == [], where
    assert report["workers_left_running"] == 0, where
