"""A submit that does not finish rolls back completely, and only when that is safe.

Checks: a delete that fails during rollback does not stop the others, and what could
not be removed is reported by name; a launch request whose publish failed after
Pub/Sub may have stored it keeps the batch (its parts are what the launcher will run);
an input edited between the plan pass and the publish pass is refused, nothing left;
SIGTERM during a real ``batchctl submit`` process rolls back and exits 143.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from pytest_mock import MockerFixture
from structlog.testing import capture_logs

from batchctl.core.errors import EXIT_TERMINATED, BadInput, Unreachable
from batchctl.core.pubsub import PublishFailed, PubSub
from batchctl.splitter import readers
from batchctl.splitter import submit as submit_module
from batchctl.splitter.partitioner import PartLimits
from batchctl.splitter.rollback import FateUnknown
from batchctl.splitter.submit import SubmitOptions, submit
from tests.support.parts import ROOT
from tests.support.pulling import drain, leftovers
from tests.support.waiting import wait_for


def write_jsonl(path: Path, count: int) -> Path:
    path.write_text("".join(f'{{"n": {i}}}\n' for i in range(count)))
    return path


def requests_sent(pubsub: PubSub) -> list[str]:
    names = pubsub.settings.names
    if not pubsub.subscription_exists(names.requests_subscription):
        return []
    return [m.attributes.get("batch_id", "") for m in drain(pubsub, names.requests_subscription, empty_pulls=2)]


def test_rollback_tries_every_delete_and_names_what_it_could_not(
    pubsub: PubSub, prefix: str, tmp_path: Path, mocker: MockerFixture
) -> None:
    """Publishing is refused and deleting the work subscription fails: the other three are deleted, it is named."""
    path = write_jsonl(tmp_path / "in.jsonl", 5)
    refused = PublishFailed("publishing parts 0-4 failed: PermissionDenied")
    refused.__cause__ = gexc.PermissionDenied("injected")
    mocker.patch.object(submit_module, "publish_parts", side_effect=refused)
    real_delete = pubsub.delete_subscription
    work = pubsub.settings.names.work("undo")

    def delete_subscription(name: str) -> None:
        if name == work:
            raise Unreachable("injected: delete failed")
        real_delete(name)

    mocker.patch.object(pubsub, "delete_subscription", side_effect=delete_subscription)
    with capture_logs() as logs, pytest.raises(PublishFailed):
        submit(pubsub, SubmitOptions([str(path)], batch_id="undo"))
    assert leftovers(pubsub, prefix) == ([], [work])
    [incomplete] = [e for e in logs if e["event"] == "submit_rollback_incomplete"]
    assert incomplete["left"] == [f"subscription:{work}"]


def test_a_request_that_may_be_stored_keeps_the_batch(
    pubsub: PubSub, prefix: str, tmp_path: Path, mocker: MockerFixture
) -> None:
    """Pub/Sub stores the launch request but the answer is lost: the batch is kept, not deleted under it."""
    path = write_jsonl(tmp_path / "in.jsonl", 5)
    real_publish_many = pubsub.publish_many
    requests = pubsub.settings.names.requests_topic

    def answer_lost(topic: str, messages: Any, **kwargs: Any) -> int:
        sent = real_publish_many(topic, messages, **kwargs)
        if topic == requests:
            raise Unreachable("injected: the answer never came") from gexc.DeadlineExceeded("injected")
        return sent

    mocker.patch.object(pubsub, "publish_many", side_effect=answer_lost)
    with pytest.raises(FateUnknown, match="may have reached Pub/Sub"):
        submit(pubsub, SubmitOptions([str(path)], batch_id="kept", limits=PartLimits(1)))
    names = pubsub.settings.names
    topics, subscriptions = leftovers(pubsub, prefix)
    assert sorted(topics) == sorted([names.work("kept"), names.dead("kept")])
    assert sorted(subscriptions) == sorted([names.work("kept"), names.dead("kept")])
    assert len(drain(pubsub, names.work("kept"))) == 5
    assert requests_sent(pubsub) == ["kept"]


def test_an_input_edited_between_the_passes_is_refused(
    pubsub: PubSub, prefix: str, tmp_path: Path, mocker: MockerFixture
) -> None:
    """Line 2 becomes invalid JSON after the plan pass validated it: exit 2 naming the file, nothing left."""
    path = write_jsonl(tmp_path / "in.jsonl", 3)
    real_blocks = readers.record_blocks

    def edit_before_second_pass(sources: Any, **kwargs: Any) -> Any:
        if kwargs.get("validate") is False:
            path.write_text('{"n": 0}\nnot json\n{"n": 2}\n')
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        return real_blocks(sources, **kwargs)

    mocker.patch.object(readers, "record_blocks", side_effect=edit_before_second_pass)
    with pytest.raises(BadInput, match=r"in\.jsonl: changed while being submitted"):
        submit(pubsub, SubmitOptions([str(path)], batch_id="edited"))
    assert leftovers(pubsub, prefix) == ([], [])
    assert requests_sent(pubsub) == []


@pytest.mark.timeout(120)
def test_sigterm_during_submit_rolls_back(pubsub: PubSub, env: dict[str, str], prefix: str, tmp_path: Path) -> None:
    """A real ``batchctl submit`` of 1-record parts gets SIGTERM once its topics exist: exit 143, nothing left."""
    path = write_jsonl(tmp_path / "in.jsonl", 40_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchctl", "submit", str(path), "--batch-id", "sig", "--records-per-part", "1"],
        env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        work = pubsub.settings.names.work("sig")
        wait_for(lambda: pubsub.subscription_exists(work) or proc.poll() is not None, timeout=60,
                 interval=0.02, what="the batch to be created")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_TERMINATED, output.decode()[-2000:]
    assert b"rolled back" in output
    assert leftovers(pubsub, prefix) == ([], [])
    assert requests_sent(pubsub) == []
