"""Hostile inputs at every entry point: a clear one-line error, the contract's exit code, nothing half-done.

Checks:
- ``submit`` files: truncated and corrupt gzip (files and stdin), binary garbage, NUL bytes, deeply
  nested JSON, invalid UTF-8 in JSONL/CSV/text (header, row, far into the file), a CSV with only a
  header, blank-only input, an empty folder, a folder of hidden files, an unreadable file, unknown
  extensions, mixed formats, garbage on stdin (in-process and through a real process), and a 50 MB
  single line in every format, rejected as larger than ``--max-part-bytes`` with flat memory.
  Each: exit 2, one ``batchctl: error:`` line naming the file and line, no batch topic or
  subscription left, no request on the control subscription.
- ``submit`` flags: every numeric flag at 0, negative, non-integer and out of Pub/Sub's range
  (``--max-part-bytes`` above the 9.5 MB ceiling, ``--max-delivery-attempts`` 4/101,
  ``--ack-deadline`` 9/601), ``--format bogus``, malformed ``--handler`` and ``--batch-id``.
- Other commands: ``status``/``cancel``/``retry`` of an unknown or invalid id, ``launcher --port``,
  ``demo`` flags, ``BATCHCTL_BACKEND``/``BATCHCTL_PREFIX`` garbage, unknown or missing subcommand.
- ``worker``: each bad variable or flag is exit 2 naming it (all of them in one line), also as a real
  process; a missing work subscription is exit 2.
- Control messages published straight on the control topic while a launcher runs: not JSON, not an
  object, missing/unknown/forged fields, a request with bad parts or handler. Each is acked (the
  ledger of acks at the Pub/Sub seam shows it), stores no batch, launches nothing, and the launcher
  keeps taking valid requests.
- Events with missing or forged fields against a running batch: acked, the batch's counts unchanged,
  the loop alive, a valid event still counted; malformed part_done events raced against a real batch
  do not inflate ``parts_done``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from batchctl.core import topology
from batchctl.core.pubsub import PubSub, Received
from batchctl.core.settings import Settings
from batchctl.frontend.cli import main
from batchctl.launcher.app import Parts, open_profiles
from batchctl.launcher.leader import FileElector
from batchctl.launcher.state import RUNNING, BatchState
from batchctl.launcher.store import FileStore
from tests.support.faults import ActiveBackend
from tests.support.handlers import markers
from tests.support.launching import (
    Running,
    fast_worker_env,
    running_launcher,
    submit_records,
    wait_terminal,
    write_records,
)
from tests.support.pulling import drain, leftovers
from tests.support.waiting import wait_for

BATCHCTL = Path(sys.executable).with_name("batchctl")
ERROR_LINE = re.compile(r"^batchctl(?: [a-z]+)?: error: \S")
MB = 1024 * 1024


# ---- helpers ---------------------------------------------------------------------------------


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``batchctl[ <command>]: error: ...`` line on stderr; no traceback, not the bug fallback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if ERROR_LINE.match(line)]
    assert len(lines) == 1, err[-3000:]
    assert "unexpected failure" not in lines[0], err[-3000:]
    return lines[0]


def assert_nothing_left(pubsub: PubSub, prefix: str) -> None:
    """No batch topic or subscription of this prefix, and no request waiting for a launcher."""
    assert leftovers(pubsub, prefix) == ([], [])
    if pubsub.subscription_exists(pubsub.settings.names.requests_subscription):
        assert drain(pubsub, pubsub.settings.names.requests_subscription, empty_pulls=2) == []


def submit(env: Mapping[str, str], *args: str) -> int:
    return main(["submit", *args, "--batch-id", "hostile"], environ=env)


def big_line(path: Path, *, head: bytes = b"", size: int = 50 * MB) -> Path:
    """``head`` then one ``size``-byte line, written in 1 MiB chunks (never held whole)."""
    chunk = b"x" * MB
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        out.write(head)
        for _ in range(size // MB):
            out.write(chunk)
        out.write(b"\n")
    return path


@contextmanager
def stdin_from(path: Path) -> Iterator[None]:
    """Make ``sys.stdin`` read ``path`` (a real buffered file, as a pipe would be)."""
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(open(path, "rb"))  # noqa: SIM115 - closed below
    try:
        yield
    finally:
        sys.stdin.close()
        sys.stdin = saved


# ---- submit: hostile files ---------------------------------------------------------------------

JSONL_5000 = b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"p" * 40) for i in range(5000))
CSV_3000 = b"a,b\n" + b"".join(b"%d,x\n" % i for i in range(3000))


def corrupt_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 64]) + data[middle + 64 :]


FILE_CASES = [
    pytest.param("in.jsonl.gz", gzip.compress(JSONL_5000)[: len(gzip.compress(JSONL_5000)) // 2],
                 r"in\.jsonl\.gz:\d+: unreadable input", id="gzip-truncated-mid-stream"),
    pytest.param("in.csv.gz", gzip.compress(CSV_3000)[: len(gzip.compress(CSV_3000)) // 2],
                 r"in\.csv\.gz:\d+: unreadable input", id="gzip-csv-truncated-mid-stream"),
    pytest.param("in.jsonl.gz", corrupt_middle(gzip.compress(JSONL_5000)),
                 r"in\.jsonl\.gz:\d+: (unreadable input|not valid UTF-8|malformed JSON)", id="gzip-corrupt-body"),
    pytest.param("in.jsonl.gz", b"\x1f\x8b" + bytes(range(256)),
                 r"in\.jsonl\.gz:1: unreadable input", id="gzip-magic-then-garbage"),
    pytest.param("in.jsonl", bytes(range(256)) * 8, r"in\.jsonl:1: malformed JSON", id="binary-garbage-jsonl"),
    pytest.param("in.jsonl", b'{"ok":1}\n' + bytes(range(128, 256)) * 8 + b"\n",
                 r"in\.jsonl:2: not valid UTF-8", id="high-bytes-jsonl-line-2"),
    pytest.param("in.jsonl", b"\x00" * 4096, r"in\.jsonl:1: malformed JSON", id="nul-bytes-jsonl"),
    pytest.param("in.txt", b"fine\n" + bytes(range(256)) + b"\n", r"in\.txt:3: not valid UTF-8",
                 id="binary-garbage-lines"),
    pytest.param("in.jsonl", b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n",
                 r"in\.jsonl:1: malformed JSON", id="deep-objects"),
    pytest.param("in.jsonl", b'{"a":1}\n{"b":2}\n' + b"[" * 50_000 + b"]" * 50_000 + b"\n",
                 r"in\.jsonl:3: malformed JSON", id="deep-arrays-line-3"),
    pytest.param("in.jsonl.gz", gzip.compress(b"[" * 200_000 + b"]" * 200_000 + b"\n"),
                 r"in\.jsonl\.gz:1: malformed JSON", id="deep-arrays-gzip"),
    pytest.param("in.jsonl", b'{"a":"\xed\xa0\x80"}\n', r"in\.jsonl:1: not valid UTF-8", id="utf8-surrogate-jsonl"),
    pytest.param("in.jsonl", b'{"a":1}\n{"a":"\xc0\xaf"}\n', r"in\.jsonl:2: not valid UTF-8",
                 id="utf8-overlong-jsonl"),
    pytest.param("in.jsonl", JSONL_5000 + b'{"a":"\xff"}\n', r"in\.jsonl:5001: not valid UTF-8",
                 id="utf8-invalid-jsonl-line-5001"),
    pytest.param("in.csv", b"a,\xffb\n1,2\n", r"in\.csv:1: not valid UTF-8", id="utf8-invalid-csv-header"),
    pytest.param("in.csv", b"a,b\n1,\xff\n", r"in\.csv:2: not valid UTF-8", id="utf8-invalid-csv-row"),
    pytest.param("in.csv", CSV_3000 + b"\xff,3\n", r"in\.csv:3002: not valid UTF-8",
                 id="utf8-invalid-csv-line-3002"),
    pytest.param("in.csv", b"a,b,c\n", r"in\.csv: no records in the input", id="csv-header-only"),
    pytest.param("in.csv", b"\xef\xbb\xbfa,b\r\n\r\n", r"in\.csv: no records in the input", id="csv-bom-header-only"),
    pytest.param("in.jsonl", b"\n  \n\t\r\n", r"in\.jsonl: no records in the input", id="jsonl-blank-lines-only"),
    pytest.param("in.csv", b'a,b\n"1,2\n', r"in\.csv:2: expected 2 fields, got 1", id="csv-unterminated-quote"),
    pytest.param("data.bin", b'{"a":1}\n', r"data\.bin: cannot tell the format", id="unknown-extension"),
    pytest.param("data", b'{"a":1}\n', r"data: cannot tell the format", id="no-extension"),
    pytest.param("data.gz", gzip.compress(b'{"a":1}\n'), r"data\.gz: cannot tell the format",
                 id="gz-without-inner-extension"),
]


@pytest.mark.parametrize(("name", "content", "expected"), FILE_CASES)
def test_hostile_file_exits_2_naming_file_and_line(
    name: str, content: bytes, expected: str, env: dict[str, str], pubsub: PubSub, prefix: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Each hostile file: exit 2, one error line naming file (and line), nothing on the emulator."""
    path = tmp_path / name
    path.write_bytes(content)
    assert submit(env, str(path)) == 2
    assert re.search(expected, error_line(capsys))
    assert_nothing_left(pubsub, prefix)


BIG_LINE_CASES = [
    pytest.param("big.txt", b"", r"big\.txt:1: record larger than --max-part-bytes", id="lines"),
    pytest.param("big.jsonl", b'{"ok":1}\n"', r"big\.jsonl:2: record larger than --max-part-bytes", id="jsonl"),
    pytest.param("big.jsonl.gz", b"", r"big\.jsonl\.gz:1: record larger than --max-part-bytes", id="jsonl-gzip"),
    pytest.param("big.csv", b"a\n", r"big\.csv:2: record larger than --max-part-bytes", id="csv",
                 ),
]


@pytest.mark.parametrize(("name", "head", "expected"), BIG_LINE_CASES)
def test_50mb_single_line_is_rejected_with_flat_memory(
    name: str, head: bytes, expected: str, env: dict[str, str], pubsub: PubSub, prefix: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A 50 MB line: exit 2 'larger than --max-part-bytes' naming file:line, peak traced memory < 12 MB."""
    path = big_line(tmp_path / name, head=head)
    tracemalloc.start()
    try:
        rc = submit(env, str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        path.unlink()
    assert rc == 2
    assert re.search(expected, error_line(capsys))
    assert peak < 12 * MB, f"peak {peak / MB:.0f} MiB while rejecting a 50 MB line"
    assert_nothing_left(pubsub, prefix)


def test_50mb_single_line_on_stdin_is_rejected(
    env: dict[str, str], pubsub: PubSub, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A 50 MB line piped on stdin: exit 2 naming '-' line 1 and --max-part-bytes."""
    path = big_line(tmp_path / "big.bin")
    with stdin_from(path):
        assert submit(env, "-") == 2
    path.unlink()
    assert re.search(r"-:1: record larger than --max-part-bytes", error_line(capsys))
    assert_nothing_left(pubsub, prefix)


STDIN_CASES = [
    pytest.param(b"ok\n" + bytes(range(256)), [], r"-:3: not valid UTF-8", id="garbage-as-lines"),
    pytest.param(bytes(range(1, 256)) * 4, ["--format", "jsonl"], r"-:1: (malformed JSON|not valid UTF-8)",
                 id="garbage-as-jsonl"),
    pytest.param(gzip.compress(JSONL_5000)[:3000], ["--format", "jsonl"], r"-:\d+: unreadable input",
                 id="truncated-gzip"),
    pytest.param(b"a,b\n1,2,3\n", ["--format", "csv"], r"-:2: expected 2 fields, got 3", id="ragged-csv"),
    pytest.param(b"", [], r"-: no records in the input", id="empty"),
]


@pytest.mark.parametrize(("content", "flags", "expected"), STDIN_CASES)
def test_hostile_stdin_exits_2(
    content: bytes, flags: list[str], expected: str, env: dict[str, str], pubsub: PubSub, prefix: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Garbage on stdin (``-``): exit 2, the error names '-' and the line."""
    path = tmp_path / "stdin.bin"
    path.write_bytes(content)
    with stdin_from(path):
        assert submit(env, "-", *flags) == 2
    assert re.search(expected, error_line(capsys))
    assert_nothing_left(pubsub, prefix)


def test_garbage_piped_into_a_real_process_exits_2(env: dict[str, str], pubsub: PubSub, prefix: str) -> None:
    """`batchctl submit -` as a process with binary garbage piped in: exit 2, last stderr line the error."""
    proc = subprocess.run(
        [str(BATCHCTL), "submit", "-", "--format", "jsonl"], input=b"\x00\x01garbage\xff\n", env=env,
        capture_output=True, timeout=60, check=False,
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert re.match(r"batchctl: error: -:1: (malformed JSON|not valid UTF-8)", err.strip().splitlines()[-1])
    assert_nothing_left(pubsub, prefix)


# ---- submit: folders -----------------------------------------------------------------------------


def folder_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "input"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


FOLDER_CASES = [
    pytest.param({}, r"input: no records in the input", id="empty-folder"),
    pytest.param({".hidden.jsonl": b'{"a":1}\n', ".DS_Store": b"\x00"}, r"input: no records in the input",
                 id="only-hidden-files"),
    pytest.param({"a.jsonl": b'{"a":1}\n', "b.exe": b"MZ\x90\x00"}, r"input/b\.exe: cannot tell the format",
                 id="unknown-extension-inside"),
    pytest.param({"a.jsonl": b'{"a":1}\n', "b.txt": b"line\n"}, r"cannot mix plain-text lines",
                 id="mixed-lines-and-json"),
    pytest.param({"a.jsonl": b'{"a":1}\n' * 10, "b.jsonl": b'{"b":\n'}, r"input/b\.jsonl:1: malformed JSON",
                 id="bad-file-after-good-one"),
]


@pytest.mark.parametrize(("files", "expected"), FOLDER_CASES)
def test_hostile_folder_exits_2(
    files: dict[str, bytes], expected: str, env: dict[str, str], pubsub: PubSub, prefix: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A folder with nothing usable, or one bad file among good ones: exit 2 naming it."""
    assert submit(env, str(folder_with(tmp_path, files))) == 2
    assert re.search(expected, error_line(capsys))
    assert_nothing_left(pubsub, prefix)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway, so there is nothing to refuse")
def test_unreadable_file_in_folder_exits_2(
    env: dict[str, str], pubsub: PubSub, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A chmod 000 file inside a folder: exit 2 naming it ('cannot open')."""
    folder = folder_with(tmp_path, {"a.jsonl": b'{"a":1}\n', "b.jsonl": b'{"b":1}\n'})
    (folder / "b.jsonl").chmod(0)
    try:
        assert submit(env, str(folder)) == 2
    finally:
        (folder / "b.jsonl").chmod(0o600)
    assert re.search(r"input/b\.jsonl: cannot open", error_line(capsys))
    assert_nothing_left(pubsub, prefix)


# ---- submit: flags -------------------------------------------------------------------------------

FLAG_CASES = [
    *(pytest.param([flag, value], flag, id=f"{flag[2:]}={value or 'empty'}")
      for flag in ("--records-per-part", "--parts-per-worker", "--max-parallelism")
      for value in ("0", "-3", "1.5", "ten", "")),
    *(pytest.param(["--max-part-bytes", value], "--max-part-bytes", id=f"max-part-bytes={value}")
      for value in ("0", "-1", "9500001", "10000000", "1e6", "1MB")),
    *(pytest.param(["--max-delivery-attempts", value], "--max-delivery-attempts", id=f"max-delivery-attempts={value}")
      for value in ("4", "101", "0", "five")),
    *(pytest.param(["--ack-deadline", value], "--ack-deadline", id=f"ack-deadline={value}")
      for value in ("9", "601", "0", "60s")),
    pytest.param(["--format", "bogus"], "--format", id="format=bogus"),
    pytest.param(["--format", "JSONL"], "--format", id="format=JSONL"),
    *(pytest.param(["--handler", value], "--handler", id=f"handler={value or 'empty'}")
      for value in ("nocolon", ":func", "module:", "")),
]


@pytest.mark.parametrize(("flags", "named"), FLAG_CASES)
def test_bad_submit_flag_exits_2_naming_it(
    flags: list[str], named: str, env: dict[str, str], pubsub: PubSub, prefix: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each out-of-range or wrong-typed submit flag: exit 2, the error names the flag, nothing created."""
    path = write_records(tmp_path / "in.jsonl", [{"a": 1}])
    assert main(["submit", str(path), f"{flags[0]}={flags[1]}"], environ=env) == 2
    assert named in error_line(capsys)
    assert_nothing_left(pubsub, prefix)


BATCH_ID_CASES = [
    pytest.param("", id="empty"),
    pytest.param("abc\n", id="trailing-newline"),
    pytest.param("a b", id="space"),
    pytest.param("a/b", id="slash"),
    pytest.param("caf\u00e9", id="non-ascii"),
    pytest.param("a.b", id="dot"),
    pytest.param("x" * 1000, id="1000-chars"),
]


@pytest.mark.parametrize("batch_id", BATCH_ID_CASES)
def test_bad_batch_id_exits_2(
    batch_id: str, env: dict[str, str], pubsub: PubSub, prefix: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A --batch-id outside the contract's pattern: exit 2 'invalid batch id', nothing created."""
    path = write_records(tmp_path / "in.jsonl", [{"a": 1}])
    assert main(["submit", str(path), f"--batch-id={batch_id}"], environ=env) == 2
    assert "invalid batch id" in error_line(capsys)
    assert_nothing_left(pubsub, prefix)


# ---- other commands ------------------------------------------------------------------------------

COMMAND_CASES = [
    *(pytest.param([command, "nosuch"], "no batch 'nosuch' is known", id=f"{command}-unknown-id")
      for command in ("status", "cancel", "retry")),
    *(pytest.param([command, "Not_Valid"], "invalid batch id", id=f"{command}-invalid-id")
      for command in ("status", "cancel", "retry")),
    pytest.param(["status", "x" * 41], "invalid batch id", id="status-41-chars"),
    *(pytest.param(["launcher", f"--port={port}"], "--port", id=f"launcher-port={port or 'empty'}")
      for port in ("0", "70000", "abc", "-1", "", "80.5")),
    pytest.param(["demo", "--records=0"], "--records", id="demo-records=0"),
    pytest.param(["demo", "--workers=many"], "--workers", id="demo-workers=many"),
    pytest.param(["--backend=bogus", "list"], "--backend", id="backend-flag-bogus"),
    pytest.param(["frobnicate"], "invalid choice: 'frobnicate'", id="unknown-subcommand"),
    pytest.param([], "COMMAND", id="no-subcommand"),
]


@pytest.mark.parametrize(("argv", "named"), COMMAND_CASES)
def test_bad_command_line_exits_2(
    argv: list[str], named: str, env: dict[str, str], pubsub: PubSub, prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Unknown ids, bad ports and flags, unknown subcommands: exit 2 naming what is wrong, no request sent."""
    assert main(argv, environ=env) == 2
    assert named in error_line(capsys)
    assert_nothing_left(pubsub, prefix)


def test_status_of_an_empty_state_file_shows_it_unreadable(
    env: dict[str, str], capsys: pytest.CaptureFixture[str],
) -> None:
    """An empty state file (the store writes by rename, so only damage leaves one): ``status`` shows the
    batch failed with the file and the decode error as its reason, as the launcher will hold it, not a crash."""
    folder = Path(env["BATCHCTL_STATE_DIR"]) / "batches"
    folder.mkdir(parents=True)
    (folder / "racing.json").write_text("")
    assert main(["status", "racing"], environ=env) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "stored state unreadable" in out and "racing.json" in out


@pytest.mark.parametrize(
    ("variables", "argv", "named"),
    [
        pytest.param({"BATCHCTL_BACKEND": "bogus"}, ["list"], "BATCHCTL_BACKEND='bogus'", id="backend-list"),
        pytest.param({"BATCHCTL_BACKEND": "bogus"}, ["status", "x"], "BATCHCTL_BACKEND='bogus'", id="backend-status"),
        pytest.param({"BATCHCTL_BACKEND": "bogus"}, ["launcher"], "BATCHCTL_BACKEND='bogus'", id="backend-launcher"),
        pytest.param({"BATCHCTL_BACKEND": "bogus"}, ["worker"], "BATCHCTL_BACKEND='bogus'", id="backend-worker"),
        pytest.param({"BATCHCTL_BACKEND": "bogus"}, ["submit", "IN"], "BATCHCTL_BACKEND='bogus'", id="backend-submit"),
        pytest.param({"BATCHCTL_PREFIX": "Bad_Prefix"}, ["submit", "IN"], "BATCHCTL_PREFIX", id="prefix-submit"),
        pytest.param({"BATCHCTL_BACKEND": "bogus", "BATCHCTL_PREFIX": "-x"}, ["list"],
                     "must be one of kubernetes, local; BATCHCTL_PREFIX='-x'", id="both-reported-at-once"),
    ],
)
def test_bad_environment_exits_2_naming_the_variable(
    variables: dict[str, str], argv: list[str], named: str, env: dict[str, str], pubsub: PubSub, prefix: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad BATCHCTL_* variable: exit 2 before anything runs, the error names the variable."""
    path = write_records(tmp_path / "in.jsonl", [{"a": 1}])
    argv = [str(path) if arg == "IN" else arg for arg in argv]
    assert main(argv, environ={**env, **variables}) == 2
    assert named in error_line(capsys)
    assert_nothing_left(pubsub, prefix)


# ---- worker --------------------------------------------------------------------------------------

WORKER_VARIABLES = ("BATCHCTL_BATCH_ID", "BATCHCTL_SUBSCRIPTION", "BATCHCTL_HANDLER", "BATCHCTL_CONCURRENCY",
                    "BATCHCTL_EMPTY_PULLS", "BATCHCTL_PULL_TIMEOUT_S", "BATCHCTL_DRAIN_BUDGET_S",
                    "BATCHCTL_LEASE_S", "BATCHCTL_WORKER_ID", "BATCHCTL_RESULTS_DIR")


def worker_env(env: Mapping[str, str], **variables: str) -> dict[str, str]:
    clean = {k: v for k, v in env.items() if k not in WORKER_VARIABLES}
    return {**clean, "BATCHCTL_BATCH_ID": "wb", **variables}


def worker_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The worker's one error line (``batchctl worker: ...``); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(("batchctl worker: ", "batchctl: error: "))]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


WORKER_CASES = [
    pytest.param({"BATCHCTL_CONCURRENCY": "0"}, [], "BATCHCTL_CONCURRENCY='0'", id="concurrency=0"),
    pytest.param({"BATCHCTL_CONCURRENCY": "lots"}, [], "BATCHCTL_CONCURRENCY='lots'", id="concurrency=lots"),
    pytest.param({"BATCHCTL_HANDLER": "nomodule"}, [], "BATCHCTL_HANDLER='nomodule'", id="handler=nomodule"),
    pytest.param({"BATCHCTL_HANDLER": "no_such_module_xyz:handle"}, [], "no_such_module_xyz:handle",
                 id="handler-not-importable"),
    pytest.param({"BATCHCTL_HANDLER": "os:sep"}, [], "'os:sep' is not callable", id="handler-not-callable"),
    pytest.param({"BATCHCTL_BATCH_ID": "UPPER"}, [], "BATCHCTL_BATCH_ID='UPPER'", id="batch-id=UPPER"),
    pytest.param({"BATCHCTL_BATCH_ID": ""}, [], "BATCHCTL_BATCH_ID (or --batch-id) is not set", id="batch-id-unset"),
    pytest.param({"BATCHCTL_EMPTY_PULLS": "0"}, [], "BATCHCTL_EMPTY_PULLS='0'", id="empty-pulls=0"),
    pytest.param({"BATCHCTL_PULL_TIMEOUT_S": "nan"}, [], "BATCHCTL_PULL_TIMEOUT_S='nan'", id="pull-timeout=nan"),
    pytest.param({"BATCHCTL_DRAIN_BUDGET_S": "-1"}, [], "BATCHCTL_DRAIN_BUDGET_S='-1'", id="drain-budget=-1"),
    pytest.param({"BATCHCTL_LEASE_S": "601"}, [], "BATCHCTL_LEASE_S='601'", id="lease=601"),
    pytest.param({"BATCHCTL_WORKER_ID": "   "}, [], "BATCHCTL_WORKER_ID='   '", id="worker-id-blank"),
    pytest.param({}, ["--concurrency=0"], "--concurrency='0'", id="flag-concurrency=0"),
    pytest.param({}, ["--ack-deadline=inf"], "--lease='inf'", id="flag-ack-deadline=inf"),
    pytest.param({"BATCHCTL_BATCH_ID": "ok"}, ["--batch-id=Bad"], "--batch-id='Bad'", id="flag-wins-and-is-named"),
]


@pytest.mark.parametrize(("variables", "flags", "named"), WORKER_CASES)
def test_bad_worker_configuration_exits_2_naming_it(
    variables: dict[str, str], flags: list[str], named: str, env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each bad worker variable or flag: exit 2 before pulling, one line naming the variable or flag."""
    assert main(["worker", *flags], environ=worker_env(env, **variables)) == 2
    line = worker_error(capsys)
    assert named in line


def test_every_worker_problem_is_named_in_one_line(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """Three bad settings at once (two variables, one flag): exit 2, all three named on one line."""
    environ = worker_env(env, BATCHCTL_CONCURRENCY="0", BATCHCTL_LEASE_S="x")
    assert main(["worker", "--handler=bad"], environ=environ) == 2
    line = worker_error(capsys)
    assert all(name in line for name in ("BATCHCTL_CONCURRENCY='0'", "BATCHCTL_LEASE_S='x'", "--handler='bad'"))


def test_worker_configuration_error_uses_the_cli_error_prefix(
    env: dict[str, str], capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker config error reads like every other CLI error: 'batchctl[ worker]: error: ...'."""
    assert main(["worker"], environ=worker_env(env, BATCHCTL_CONCURRENCY="0")) == 2
    assert "BATCHCTL_CONCURRENCY" in error_line(capsys)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        pytest.param({"BATCHCTL_CONCURRENCY": "0"}, "BATCHCTL_CONCURRENCY", id="bad-variable"),
        pytest.param({"BATCHCTL_BATCH_ID": "nowork"}, "nowork-work", id="missing-subscription"),
    ],
)
def test_worker_process_exits_2(
    variables: dict[str, str], named: str, env: dict[str, str], pubsub: PubSub, prefix: str,
) -> None:
    """As a real process (what a Job sees): exit 2 for bad config or a work subscription that does not exist."""
    topology.ensure_shared(pubsub)
    proc = subprocess.run([str(BATCHCTL), "worker"], env=worker_env(env, **variables), capture_output=True,
                          timeout=60, check=False)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    assert named in err


# ---- control and event messages -----------------------------------------------------------------


class AckLedger(PubSub):
    """The launcher's Pub/Sub seam, remembering which message ids it acked (by pulled ack id)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}
        self.acked: set[str] = set()

    def pull(self, subscription: str, *, max_messages: int, timeout_s: float = 10.0) -> list[Received]:
        msgs = super().pull(subscription, max_messages=max_messages, timeout_s=timeout_s)
        with self._lock:
            self._ids.update((m.ack_id, m.message_id) for m in msgs)
        return msgs

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        super().ack(subscription, ack_ids)
        with self._lock:
            self.acked.update(self._ids.get(a, a) for a in ack_ids)


@contextmanager
def idle_launcher(settings: Settings, pubsub: PubSub) -> Iterator[tuple[Running, AckLedger, ActiveBackend]]:
    """A launcher on the local store whose Jobs do nothing, its acks recorded."""
    topology.ensure_shared(pubsub)
    ledger = AckLedger(settings)
    backend = ActiveBackend()
    parts = Parts(FileStore(settings.state_dir), backend, FileElector(settings.state_dir), None,
                  open_profiles(settings))
    try:
        with running_launcher(settings, ledger, parts=parts) as run:
            yield run, ledger, backend
    finally:
        ledger.close()


def publish(pubsub: PubSub, topic: str, data: bytes | dict[str, Any], attributes: dict[str, str]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return pubsub.publish(topic, raw, attributes).result(timeout=30)


def stalled(run: Running) -> bool:
    """The loop (0.1 s ticks) has not come round for 1.5 s: it died or hangs."""
    return time.monotonic() - run.launcher.last_loop > 1.5


def assert_acked_and_alive(run: Running, ledger: AckLedger, message_id: str) -> None:
    """The message is acked (so never redelivered) and the loop keeps ticking afterwards."""
    wait_for(lambda: message_id in ledger.acked or stalled(run), timeout=15, what=f"message {message_id} acked")
    seen = time.monotonic()
    wait_for(lambda: run.launcher.last_loop > seen + 0.3 or stalled(run), timeout=5, what="the loop to tick")
    if stalled(run):
        run.launcher.stop()  # release the pullers now rather than after their join timeouts
        pytest.fail("the launcher loop died (healthy() still says True: it only looks at the last 60 s)")
    assert message_id in ledger.acked


def stored(run: Running, batch_id: str) -> BatchState | None:
    """The batch as stored, read through ``load_all`` (``load`` can catch a state file being created)."""
    return next((b for b in run.parts.store.load_all() if b.batch_id == batch_id), None)


def launch_body(batch_id: str = "forged", **request: Any) -> dict[str, Any]:
    base = {"batch_id": batch_id, "parts": 4, "records": 4, "bytes": 40, "handler": "batchctl.worker.demo:handle"}
    return {"action": "launch", "batch_id": batch_id, "request": {**base, **request}}


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    request = {k: v for k, v in body["request"].items() if k != key}
    return {**body, "request": request}


CONTROL_CASES = [
    pytest.param(b"\x00garbage{", {}, id="not-json"),
    pytest.param(b"\xff\xfe", {"action": "launch", "batch_id": "forged"}, id="not-utf8"),
    pytest.param(b"[1, 2]", {}, id="json-array"),
    pytest.param(b'"launch"', {}, id="json-string"),
    pytest.param(b"null", {}, id="json-null"),
    pytest.param(b"", {"action": "launch", "batch_id": "forged"}, id="attributes-only"),
    pytest.param({"batch_id": "forged"}, {}, id="missing-action"),
    pytest.param({"action": "explode", "batch_id": "forged"}, {}, id="unknown-action"),
    pytest.param({"action": ["launch"], "batch_id": "forged"}, {}, id="action-not-a-string"),
    pytest.param({"action": "cancel"}, {}, id="missing-batch-id"),
    pytest.param({"action": "cancel", "batch_id": "Not_Valid"}, {}, id="invalid-batch-id"),
    pytest.param({"action": "cancel", "batch_id": 7}, {}, id="batch-id-not-a-string"),
    pytest.param({"action": "cancel", "batch_id": "forged"}, {"batch_id": "other"}, id="attribute-disagrees"),
    pytest.param({"action": "launch", "batch_id": "forged"}, {}, id="launch-without-request"),
    pytest.param({"action": "launch", "batch_id": "forged", "request": [4]}, {}, id="request-not-an-object"),
    pytest.param(launch_body(batch_id="forged") | {"batch_id": "other"}, {}, id="request-batch-id-disagrees"),
    pytest.param(launch_body(parts=0), {}, id="zero-parts"),
    pytest.param(launch_body(parts=-4), {}, id="negative-parts"),
    pytest.param(launch_body(parts="4"), {}, id="string-parts"),
    pytest.param(launch_body(parts=True), {}, id="bool-parts"),
    pytest.param(launch_body(parts=4.0), {}, id="float-parts"),
    pytest.param(launch_body(records=-1), {}, id="negative-records"),
    pytest.param(launch_body(max_parallelism=0), {}, id="zero-parallelism"),
    pytest.param(launch_body(parts_per_worker=None), {}, id="null-parts-per-worker"),
    pytest.param(without(launch_body(), "handler"), {}, id="missing-handler"),
    pytest.param(launch_body(handler="nocolon"), {}, id="handler-without-colon"),
    pytest.param(launch_body(handler=["m", "f"]), {}, id="handler-not-a-string"),
    pytest.param(launch_body(surprise=1), {}, id="unknown-request-field"),
    pytest.param(launch_body(created="yesterday"), {}, id="created-not-a-number"),
    pytest.param(launch_body(image={"name": "evil"}), {}, id="image-not-a-string"),
    pytest.param(launch_body(batch_id="forged\n"), {}, id="batch-id-trailing-newline"),
]


NAMING_NO_BATCH = {
    "not-json", "json-array", "json-string", "json-null", "missing-action", "unknown-action", "action-not-a-string",
    "missing-batch-id", "invalid-batch-id", "batch-id-not-a-string", "attribute-disagrees", "batch-id-trailing-newline",
}
"""Cases that do not say, consistently, that they launch one valid batch id: dropped, nothing stored.
Every other case is a launch naming its batch (``forged``, or ``other`` for the outer id): it ends rejected."""


@pytest.mark.parametrize(("data", "attributes"), CONTROL_CASES)
@pytest.mark.timeout(60)
def test_malformed_control_message_is_acked_and_ignored(
    data: bytes | dict[str, Any], attributes: dict[str, str], settings: Settings, pubsub: PubSub,
    request: pytest.FixtureRequest,
) -> None:
    """A malformed request on the control topic: acked, nothing launched, the batch it names (if any) stored
    rejected, valid requests still served."""
    case = request.node.callspec.id
    named = None if case in NAMING_NO_BATCH else "other" if case == "request-batch-id-disagrees" else "forged"
    with idle_launcher(settings, pubsub) as (run, ledger, backend):
        message_id = publish(pubsub, settings.names.requests_topic, data, attributes)
        assert_acked_and_alive(run, ledger, message_id)
        expected = [] if named is None else [(named, "rejected")]
        assert [(b.batch_id, b.state) for b in run.parts.store.load_all()] == expected
        assert backend.launched == {}
        publish(pubsub, settings.names.requests_topic, launch_body("after"), {})
        wait_for(lambda: backend.launched, timeout=10, what="a valid request to be launched")
        assert backend.launched == {"after": [settings.names.job("after", 1)]}
        assert [b.batch_id for b in run.parts.store.load_all() if b.state != "rejected"] == ["after"]


def event_body(**fields: Any) -> dict[str, Any]:
    return {"type": "part_done", "batch_id": "victim", "worker": "w-1", "part": 1, "attempt": 1, **fields}


EVENT_CASES = [
    pytest.param(b"\x00not json", {}, id="not-json"),
    pytest.param(b"[1]", {}, id="json-array"),
    pytest.param(b"", {"type": "part_done", "batch_id": "victim"}, id="attributes-only"),
    pytest.param({k: v for k, v in event_body().items() if k != "type"}, {}, id="missing-type"),
    pytest.param(event_body(type="part_exploded"), {}, id="unknown-type"),
    pytest.param(event_body(type=1), {}, id="type-not-a-string"),
    pytest.param({k: v for k, v in event_body().items() if k != "batch_id"}, {}, id="missing-batch-id"),
    pytest.param(event_body(batch_id="VICTIM"), {}, id="invalid-batch-id"),
    pytest.param(event_body(), {"batch_id": "other"}, id="batch-id-attribute-disagrees"),
    pytest.param(event_body(), {"type": "part_failed"}, id="type-attribute-disagrees"),
    pytest.param({k: v for k, v in event_body().items() if k != "part"}, {}, id="missing-part"),
    pytest.param(event_body(part=-1), {}, id="negative-part"),
    pytest.param(event_body(part=4), {}, id="part-equal-to-parts"),
    pytest.param(event_body(part=10**30), {}, id="part-far-beyond-parts"),
    pytest.param(event_body(part="1"), {}, id="string-part"),
    pytest.param(event_body(part=1.0), {}, id="float-part"),
    pytest.param(event_body(part=True), {}, id="bool-part"),
    pytest.param(event_body(part=None), {}, id="null-part"),
    pytest.param(event_body(type="part_failed", part=-2), {}, id="failed-negative-part"),
    pytest.param(event_body(type="part_failed", attempt=-1), {}, id="failed-negative-attempt"),
    pytest.param(event_body(attempt="1"), {}, id="string-attempt"),
    pytest.param(event_body(batch_id="ghost"), {}, id="unknown-batch"),
    pytest.param(event_body(time="soon"), {}, id="time-not-a-number"),
    pytest.param(event_body(time=None), {}, id="time-null"),
]


@pytest.mark.parametrize(("data", "attributes"), EVENT_CASES)
@pytest.mark.timeout(60)
def test_malformed_event_is_acked_and_changes_nothing(
    data: bytes | dict[str, Any], attributes: dict[str, str], settings: Settings, pubsub: PubSub,
) -> None:
    """A malformed or misdirected event: acked, the running batch's counts unchanged, valid events still counted."""
    with idle_launcher(settings, pubsub) as (run, ledger, _):
        publish(pubsub, settings.names.requests_topic, launch_body("victim"), {})
        wait_for(lambda: (b := stored(run, "victim")) and b.state == RUNNING, timeout=10, what="victim to run")
        message_id = publish(pubsub, settings.names.events_topic, data, attributes)
        assert_acked_and_alive(run, ledger, message_id)
        victim = stored(run, "victim")
        assert victim is not None
        assert (victim.state, victim.done, victim.dead, victim.failures) == (RUNNING, set(), set(), 0)
        assert stored(run, "ghost") is None
        publish(pubsub, settings.names.events_topic, event_body(part=2), {})
        wait_for(lambda: (b := stored(run, "victim")) and b.done == {2}, timeout=10,
                 what="a valid part_done to be counted")


FORGED_PART_DONE = [
    (event_body(batch_id="real", part=0), {"batch_id": "other"}),
    (event_body(batch_id="real", part=1), {"type": "worker_started"}),
    (event_body(batch_id="real", part="2"), {}),
    (event_body(batch_id="real", part=3.0), {}),
    (event_body(batch_id="real", part=True), {}),
    (event_body(batch_id="real", part=-5), {}),
    (event_body(batch_id="real", part=6), {}),
    (event_body(batch_id="Real", part=4), {}),
    (event_body(batch_id="real", part=5, attempt="x"), {}),
]


@pytest.mark.timeout(90)
def test_malformed_part_done_events_do_not_inflate_a_real_batch(
    settings: Settings, pubsub: PubSub, tmp_path: Path,
) -> None:
    """Malformed part_done events for a running batch's parts never count; it succeeds with parts_done exact.

    Only malformed events are tested: a well-formed part_done forged by anyone who may publish on the
    events topic is indistinguishable from a worker's, so publish rights on that topic are the trust boundary.
    """
    results, release = tmp_path / "results", tmp_path / "release"
    path = write_records(tmp_path / "in.jsonl", [{"wait_for": str(release)} for _ in range(6)])
    ledger = AckLedger(settings)
    try:
        with running_launcher(settings, ledger, worker_env=fast_worker_env(results)) as run:
            submit_records(pubsub, path, "real", parts_per_worker=6, max_parallelism=1)
            wait_for(lambda: markers(results, "started"), timeout=30, what="a part to be under way")
            ids = [publish(pubsub, settings.names.events_topic, data, attrs) for data, attrs in FORGED_PART_DONE]
            wait_for(lambda: set(ids) <= ledger.acked, timeout=15, what="forged events to be acked")
            batch = stored(run, "real")
            assert batch is not None
            assert markers(results, "done") == [], "no part can finish before the release"
            assert batch.done == set(), f"forged events counted parts {sorted(batch.done)}"
            release.touch()
            final = wait_terminal(run.parts, "real", timeout=60)
            assert run.launcher.healthy()
    finally:
        ledger.close()
    assert final.state == "succeeded"
    assert final.done == set(range(6)) and not final.dead
    assert sorted(set(markers(results, "done"))) == list(range(6))
