"""``batchctl.Client``, the Python API, against the real Pub/Sub emulator and a local launcher.

Checks: records given as a Python iterable and a handler given as a function go through a
batch and come back from ``Batch.results()`` in order; ``wait`` raises BatchFailed naming the
reason when a part is dead-lettered, ``results`` then refuses and ``results(partial=True)``
reads what there is; ``wait`` times out with WaitTimeout; ``retry`` republishes dead parts;
an unknown batch is BadInput.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import batchctl
from batchctl.core.errors import BadInput
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.frontend.results import ResultsNotReady
from tests.support import handlers
from tests.support.launching import fast_worker_env, running_launcher

FAST = {"records_per_part": 2, "parts_per_worker": 3, "max_parallelism": 2, "ack_deadline_s": 10}


def test_records_in_results_out(settings: Settings, pubsub: PubSub, tmp_path: Path) -> None:
    """An iterable of dicts and a handler function: results in order, status succeeded."""
    client = batchctl.Client(settings=settings)
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(tmp_path / "marks")), client:
        batch = client.submit(({"i": i} for i in range(9)), handler=handlers.echo, output=tmp_path / "out",
                              batch_id="api", **FAST)
        final = batch.wait(timeout=90, poll_s=0.2)
        assert final.state == "succeeded" and final.parts_done == final.parts_total == 5
        assert [r["record"]["i"] for r in batch.results()] == list(range(9))
        assert [s.batch_id for s in client.list()] == ["api"]


def test_wait_raises_with_the_reason_and_results_refuse(settings: Settings, pubsub: PubSub, tmp_path: Path) -> None:
    """A poison record: BatchFailed says why; results() refuses; partial reads the done parts; retry
    republishes the dead part."""
    client = batchctl.Client(settings=settings)
    poison = tmp_path / "poison"
    poison.touch()
    records = [{"i": 0}, {"i": 1}, {"fail_while": str(poison)}]
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(tmp_path / "marks")), client:
        batch = client.submit(records, handler="tests.support.handlers:fail_while_file_exists",
                              output=tmp_path / "out", batch_id="api-bad", max_delivery_attempts=5,
                              records_per_part=1, parts_per_worker=3, max_parallelism=2, ack_deadline_s=10)
        with pytest.raises(batchctl.BatchFailed, match="batch api-bad failed: 1 parts dead-lettered") as info:
            batch.wait(timeout=120, poll_s=0.2)
        assert info.value.status.parts_dead == 1
        with pytest.raises(ResultsNotReady, match="batch api-bad is failed"):
            batch.results()
        assert list(batch.results(partial=True)) == []  # the handler returns None: empty results
        poison.unlink()
        assert batch.retry().state in ("running", "succeeded", "failed")
        assert batch.wait(timeout=120, poll_s=0.2).state == "succeeded"


def test_wait_times_out(settings: Settings, pubsub: PubSub, tmp_path: Path) -> None:
    """No launcher runs: the batch never ends, wait gives up after its timeout."""
    with batchctl.Client(settings=settings) as client:
        batch = client.submit([{"i": 1}], handler="tests.support.handlers:noop", batch_id="api-wait")
        with pytest.raises(batchctl.WaitTimeout, match=r"batch api-wait has not ended after 0\.5s"):
            batch.wait(timeout=0.5, poll_s=0.1)


def test_unknown_batch_is_bad_input(settings: Settings) -> None:
    with pytest.raises(BadInput, match="no batch 'nope' is known"):
        batchctl.Client(settings=settings).batch("nope").status()
