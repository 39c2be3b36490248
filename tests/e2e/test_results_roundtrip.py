"""From a bucket to a bucket: gs:// sources -> batch -> results under gs:// with ``_SUCCESS``.

Real Pub/Sub and Cloud Storage emulators, the launcher in-process, workers as processes.
Checks: JSONL, CSV and gzip objects come back as results, every record exactly once and
in part order, with a ``_SUCCESS`` manifest (batch id, parts, records in and out, timings);
``batchctl results`` streams them; a generator and an ``async def`` handler both produce
results; a worker killed after writing a part's result and before acking it leaves one
object for that part, not two (to a folder and to gs://); a failed batch writes no ``_SUCCESS`` and ``results``
exits 1 unless ``--partial``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.core.storage import Storage
from batchctl.core.topology import BatchTopology
from batchctl.frontend.cli import main
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.submit import SubmitOptions, Submitted, submit
from tests.support.handlers import markers
from tests.support.launching import fast_worker_env, running_launcher, wait_terminal

TOPOLOGY = BatchTopology(ack_deadline_s=10, max_delivery_attempts=5, min_backoff_s=1, max_backoff_s=2)


@pytest.fixture
def gsettings(gcs_env: dict[str, str]) -> Settings:
    return Settings.from_env(gcs_env)


def send(pubsub: PubSub, inputs: list[str], batch_id: str, output: str, *, handler: str = "tests.support.handlers:echo",
         per_part: int = 3, storage: Storage | None = None) -> Submitted:
    return submit(pubsub, SubmitOptions(inputs, batch_id=batch_id, limits=PartLimits(per_part), handler=handler,
                                        parts_per_worker=3, max_parallelism=2, topology=TOPOLOGY, output=output),
                  storage=storage)


def results_of(env: dict[str, str], batch_id: str, tmp_path: Path, *extra: str) -> list[Any]:
    out = tmp_path / f"{batch_id}.jsonl"
    assert main(["results", batch_id, "--output", str(out), *extra], environ=env) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_bucket_to_bucket_jsonl_csv_gzip(
    gsettings: Settings, gcs_env: dict[str, str], pubsub: PubSub, gcs: Storage, bucket: str, tmp_path: Path
) -> None:
    """Three objects in three formats, 3 records per part: results once each, in part order, with _SUCCESS."""
    gcs.write(f"gs://{bucket}/in/a.jsonl", b"".join(b'{"i": %d}\n' % i for i in range(7)))
    gcs.write(f"gs://{bucket}/in/b.csv", b"i,name\n7,x\n8,y\n")
    gcs.write(f"gs://{bucket}/in/c.jsonl.gz", gzip.compress(b"".join(b'{"i": %d}\n' % i for i in range(9, 14))))
    with running_launcher(gsettings, pubsub, worker_env=fast_worker_env(tmp_path / "marks")) as run:
        sent = send(pubsub, [f"gs://{bucket}/in/"], "b2b", f"gs://{bucket}/out", storage=gcs)
        batch = wait_terminal(run.parts, "b2b")
    assert batch.state == "succeeded", batch.reason
    assert (sent.records, sent.parts) == (14, 5)
    got = results_of(gcs_env, "b2b", tmp_path)
    assert [r["part"] for r in got] == sorted(r["part"] for r in got)
    assert [int(r["record"]["i"]) for r in got] == list(range(14))
    manifest = json.loads(gcs.read(f"gs://{bucket}/out/_SUCCESS"))
    assert {k: manifest[k] for k in ("batch_id", "parts", "records_in", "records_out", "output")} == {
        "batch_id": "b2b", "parts": 5, "records_in": 14, "records_out": 14, "output": f"gs://{bucket}/out/"}
    assert manifest["seconds"] > 0 and manifest["finished"] >= manifest["created"]
    names = sorted(o.name for o in gcs.list(f"gs://{bucket}/out/"))
    assert names == [f"out/part-{i:06d}.jsonl" for i in range(5)]


def test_async_handler_results_to_a_local_folder(
    settings: Settings, env: dict[str, str], pubsub: PubSub, tmp_path: Path
) -> None:
    """An ``async def`` handler's returned list is the part's result; DEST is a folder (local backend)."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(10)))
    dest = tmp_path / "out"
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(tmp_path / "marks")) as run:
        send(pubsub, [str(path)], "asy", str(dest), handler="tests.support.handlers:echo_async")
        batch = wait_terminal(run.parts, "asy")
    assert batch.state == "succeeded", batch.reason
    assert [r["record"]["i"] for r in results_of(env, "asy", tmp_path)] == list(range(10))
    assert json.loads((dest / "_SUCCESS").read_text())["records_out"] == 10


def die_once_at_part_1(flag: Path) -> bytes:
    """12 JSONL records, 3 per part: record 4 (part 1) arms ``echo_then_die_once``."""
    records: list[dict[str, Any]] = [{"i": i} for i in range(12)]
    records[4]["die_once"] = str(flag)
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.mark.timeout(180)
def test_worker_killed_between_result_and_ack_leaves_one_result(
    settings: Settings, env: dict[str, str], pubsub: PubSub, tmp_path: Path
) -> None:
    """Part 1's worker dies (SIGKILL) as its result's write returns, before any ack: the part is
    redone and overwrites its own object; every record comes back exactly once, in order. No timing:
    the writer thread itself kills the worker once the write returned (``echo_then_die_once``)."""
    path = tmp_path / "in.jsonl"
    flag = tmp_path / "died"
    path.write_bytes(die_once_at_part_1(flag))
    marks = tmp_path / "marks"
    dest = tmp_path / "out"
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(marks)) as run:
        send(pubsub, [str(path)], "kill", str(dest), handler="tests.support.handlers:echo_then_die_once")
        batch = wait_terminal(run.parts, "kill", timeout=120)
    assert batch.state == "succeeded", batch.reason
    first = Path(f"{flag}.written")
    assert first.exists(), "the worker was not killed after writing part 1's result"
    assert markers(marks, "started").count(1) == 2, "part 1 ran twice"
    assert (dest / "part-000001.jsonl").stat().st_ino != int(first.read_text()), "part 1's file was not rewritten"
    assert [r["record"]["i"] for r in results_of(env, "kill", tmp_path)] == list(range(12))
    visible = sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))  # a killed write leaves .part-*.tmp
    assert visible == ["_SUCCESS"] + [f"part-{i:06d}.jsonl" for i in range(4)]
    assert json.loads((dest / "_SUCCESS").read_text())["records_out"] == 12


@pytest.mark.timeout(180)
def test_worker_killed_between_upload_and_ack_leaves_one_object(
    gsettings: Settings, gcs_env: dict[str, str], pubsub: PubSub, gcs: Storage, bucket: str, tmp_path: Path
) -> None:
    """The same to gs://: part 1's object is uploaded, then its worker is SIGKILLed before the ack.
    The redelivered part uploads it again (a new generation of the same object, not a second
    object); ``results`` streams every record once, in part order; ``_SUCCESS`` counts 12."""
    flag = tmp_path / "died"
    gcs.write(f"gs://{bucket}/in/kill.jsonl", die_once_at_part_1(flag))
    marks = tmp_path / "marks"
    with running_launcher(gsettings, pubsub, worker_env=fast_worker_env(marks)) as run:
        send(pubsub, [f"gs://{bucket}/in/kill.jsonl"], "gkill", f"gs://{bucket}/out",
             handler="tests.support.handlers:echo_then_die_once", storage=gcs)
        batch = wait_terminal(run.parts, "gkill", timeout=120)
    assert batch.state == "succeeded", batch.reason
    first = Path(f"{flag}.written")
    assert first.exists(), "the worker was not killed after uploading part 1's result"
    assert markers(marks, "started").count(1) == 2, "part 1 ran twice"
    again = gcs.stat(f"gs://{bucket}/out/part-000001.jsonl")
    assert again is not None and again.generation != int(first.read_text()), "part 1's object was not rewritten"
    got = results_of(gcs_env, "gkill", tmp_path)
    assert [(r["part"], r["record"]["i"]) for r in got] == [(i // 3, i) for i in range(12)]
    names = sorted(b.name for b in gcs.client.list_blobs(bucket, prefix="out/"))
    assert names == ["out/_SUCCESS"] + [f"out/part-{i:06d}.jsonl" for i in range(4)]
    assert json.loads(gcs.read(f"gs://{bucket}/out/_SUCCESS"))["records_out"] == 12


def test_failed_batch_writes_no_success_and_results_refuses(
    settings: Settings, env: dict[str, str], pubsub: PubSub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dead-lettered part fails the batch: no _SUCCESS; ``results`` exits 1 saying so; ``--partial``
    streams the parts that have results, in order."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(4)) + json.dumps({"fail": True}) + "\n")
    dest = tmp_path / "out"
    with running_launcher(settings, pubsub, worker_env=fast_worker_env(tmp_path / "marks")) as run:
        submit(pubsub, SubmitOptions([str(path)], batch_id="bad", limits=PartLimits(1), output=str(dest),
                                     handler="tests.support.handlers:scripted", topology=TOPOLOGY))
        batch = wait_terminal(run.parts, "bad", timeout=120)
    assert batch.state == "failed"
    assert not (dest / "_SUCCESS").exists()
    assert main(["results", "bad"], environ=env) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("batchctl: error")]
    assert len(err) == 1 and err[0].startswith("batchctl: error: batch bad is failed: 1 parts dead-lettered")
    assert len(results_of(env, "bad", tmp_path, "--partial")) == 0  # scripted returns None: empty results
    assert sorted(p.name for p in dest.iterdir()) == [f"part-{i:06d}.jsonl" for i in range(4)]
