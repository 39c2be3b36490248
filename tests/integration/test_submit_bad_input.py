"""Bad input to submit: the contract's exit code, a one-line message naming file and line
or field, and nothing left behind on the emulator (no batch topics, no request)."""

from __future__ import annotations

import gzip
import socket
import time
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from batchctl.core.pubsub import PubSub
from batchctl.frontend.cli import main
from tests.support.pulling import drain, leftovers


def run(env: dict[str, str], *args: str) -> int:
    return main(["submit", *args], environ=env)


def assert_nothing_left(pubsub: PubSub, prefix: str) -> None:
    assert leftovers(pubsub, prefix) == ([], [])
    if pubsub.subscription_exists(pubsub.settings.names.requests_subscription):
        assert drain(pubsub, pubsub.settings.names.requests_subscription, empty_pulls=2) == []


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("batchctl: error")]
    assert len(err) == 1
    return err[0]


CASES = {
    "malformed-json": ("in.jsonl", b'{"a":1}\n{"a":\n', "in.jsonl:2: malformed JSON"),
    "csv-fields": ("in.csv", b"a,b\n1,2\n3\n", "in.csv:3: expected 2 fields, got 1"),
    "csv-duplicate-header": ("in.csv", b"id,a,a\n0,1,2\n", "in.csv:1: column 'a' appears twice in the header"),
    "empty": ("in.jsonl", b"", "no records"),
    "bad-gzip": ("in.jsonl.gz", b"not gzip at all", "in.jsonl.gz: not a gzip file"),
    "truncated-gzip": ("in.jsonl.gz", gzip.compress(b'{"a":1}\n' * 5000)[:-40], "in.jsonl.gz:"),
    "invalid-utf8": ("in.txt", b"ok\n\xff\xfe bad\n", "in.txt:2: not valid UTF-8"),
    "deep-json": ("in.jsonl", b"[" * 100000 + b"]" * 100000 + b"\n", "in.jsonl:1: malformed JSON"),
    "big-record": ("in.txt", b"x" * 2000 + b"\n", "in.txt:1: record larger than --max-part-bytes"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_exits_2_and_leaves_nothing(
    case: str, env: dict[str, str], pubsub: PubSub, prefix: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each malformed input: exit 2, message names file (and line), nothing on the emulator."""
    name, content, expected = CASES[case]
    path = tmp_path / name
    path.write_bytes(content)
    limit = "1000" if case == "big-record" else str(1024 * 1024)
    assert run(env, str(path), "--batch-id", "bad", "--max-part-bytes", limit) == 2
    assert expected in one_line_error(capsys)
    assert_nothing_left(pubsub, prefix)


def test_missing_path(env: dict[str, str], pubsub: PubSub, prefix: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """A path that does not exist is named."""
    assert run(env, "/nonexistent/file.jsonl") == 2
    assert "/nonexistent/file.jsonl: no such file" in one_line_error(capsys)
    assert_nothing_left(pubsub, prefix)


@pytest.mark.parametrize("batch_id", ["UPPER", "-lead", "a" * 41, "under_score", "trail-"])
def test_invalid_batch_id(batch_id: str, env: dict[str, str], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """A batch id outside the contract's pattern is exit 2, named."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"a":1}\n')
    assert run(env, str(path), f"--batch-id={batch_id}") == 2
    assert "invalid batch id" in one_line_error(capsys)


def test_existing_batch_id(env: dict[str, str], pubsub: PubSub, prefix: str, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """A second submit with the same id is refused, and the first batch is untouched."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"a":1}\n')
    assert run(env, str(path), "--batch-id", "dup") == 0
    assert run(env, str(path), "--batch-id", "dup") == 2
    assert "already exists" in one_line_error(capsys)
    assert len(drain(pubsub, f"{prefix}-dup-work")) == 1


def test_unreachable_pubsub_exits_3_quickly(env: dict[str, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """No emulator listening: exit 3 naming the endpoint, well within 30 s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "in.jsonl"
    path.write_text('{"a":1}\n')
    start = time.monotonic()
    rc = run({**env, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{port}"}, str(path))
    assert rc == 3
    assert time.monotonic() - start < 30
    assert f"127.0.0.1:{port}" in one_line_error(capsys)


def test_failure_halfway_through_publishing_rolls_back(
    env: dict[str, str], pubsub: PubSub, prefix: str, tmp_path: Path, mocker: MockerFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The 2nd of 3 publish requests fails: every topic and subscription created is deleted, no request."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"a":1}\n' * 300)
    real = PubSub._send_request
    calls = {"n": 0}

    def flaky(self: PubSub, request: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected publish failure")
        return real(self, request)

    mocker.patch.object(PubSub, "_send_request", flaky)
    assert run(env, str(path), "--batch-id", "half", "--records-per-part", "1") == 1
    assert calls["n"] >= 2
    err = one_line_error(capsys)
    assert "publishing parts 100-199" in err and "injected publish failure" in err
    assert_nothing_left(pubsub, prefix)
