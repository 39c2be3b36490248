"""Handlers for worker tests, imported by worker subprocesses as ``tests.support.handlers:FUNC``.

Each one leaves marker files in ``part.results_dir`` so a test can see which parts
ran, how often, and when one is under way.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any


def noop(part: Any) -> None:
    """Do nothing: the bench's handler."""


def _mark(part: Any, what: str) -> None:
    folder = Path(part.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{what}-{part.index:06d}-{os.getpid()}-{uuid.uuid4().hex[:8]}").touch()


def scripted(part: Any) -> None:
    """Obey each record: ``{"sleep": s}`` sleeps, ``{"fail": true}`` raises, ``{"wait_for": path}`` waits
    (at most 60 s) until that file exists; marks start and finish."""
    _mark(part, "started")
    for record in part.records:
        if isinstance(record, dict) and record.get("fail"):
            raise RuntimeError(f"poison record in part {part.index}")
        if isinstance(record, dict) and record.get("sleep"):
            time.sleep(float(record["sleep"]))
        if isinstance(record, dict) and record.get("wait_for"):
            _wait_for_file(Path(record["wait_for"]), part.index)
    _mark(part, "done")


def _wait_for_file(path: Path, index: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"part {index}: {path} did not appear within {timeout}s")
        time.sleep(0.05)


def markers(folder: Path, what: str) -> list[int]:
    """Part indexes of every ``what`` marker in ``folder`` (one entry per handler call)."""
    if not folder.exists():
        return []
    return sorted(int(p.name.split("-")[1]) for p in folder.glob(f"{what}-*"))


def fail_while_file_exists(part: Any) -> None:
    """Raise while the file named by a record's ``fail_while`` exists; otherwise like ``scripted``."""
    for record in part.records:
        if isinstance(record, dict) and record.get("fail_while") and Path(record["fail_while"]).exists():
            raise RuntimeError(f"part {part.index} fails while {record['fail_while']} exists")
    scripted(part)


def echo(part: Any) -> Any:
    """A generator handler: one result record per input record, naming its part (``--output`` tests)."""
    _mark(part, "started")
    for record in part.records:
        yield {"part": part.index, "record": record}


async def echo_async(part: Any) -> list[dict[str, Any]]:
    """``echo`` as an ``async def`` handler returning a list."""
    return [{"part": part.index, "record": record} for record in part.records]


def echo_then_die_once(part: Any) -> Any:
    """``echo``; a record ``{"die_once": FILE}`` makes the worker SIGKILL itself the moment this part's
    result is written (its write returned) and before anything can ack it, on the first try only.
    FILE is created when the kill is armed; ``FILE.written`` just before the kill, holding the
    object's generation (``gs://``) or the file's inode (a folder): a rewrite changes either."""
    for record in part.records:
        if isinstance(record, dict) and record.get("die_once") and not Path(record["die_once"]).exists():
            Path(record["die_once"]).touch()
            _die_after_writing(part.index, Path(record["die_once"] + ".written"))
    return echo(part)


def _die_after_writing(index: int, written: Path) -> None:
    """Wrap the worker's ``Sink._write`` (looked up at every write, so the wrap holds for a worker
    already running): once part ``index``'s write has returned, note it in ``written`` and SIGKILL.
    No timing: the part's writer is the thread that dies, before it can report the part written."""
    import signal

    from batchctl.core.sink import Sink, part_name

    original = Sink._write

    def write_then_die(self: Sink, name: str, *args: Any, **kwargs: Any) -> None:
        original(self, name, *args, **kwargs)
        if name == part_name(index):
            stat = self.storage.stat(self.url(name)) if self.remote else None
            written.write_text(str(stat.generation if stat else os.stat(self.url(name)).st_ino))
            os.kill(os.getpid(), signal.SIGKILL)

    Sink._write = write_then_die  # type: ignore[method-assign]


def _wait_gates(part: Any) -> None:
    """Wait while the file named by a record's ``gate`` exists (at most 120 s in all)."""
    deadline = time.monotonic() + 120
    for record in part.records:
        gate = record.get("gate") if isinstance(record, dict) else None
        while gate and Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def gated(part: Any) -> None:
    """Wait while the file named by a record's ``gate`` exists (at most 120 s), then as ``scripted``."""
    _wait_gates(part)
    scripted(part)


def _summaries(part: Any) -> list[dict[str, Any]]:
    import hashlib
    import json as _json

    out = []
    for record in part.records:
        text = record if isinstance(record, str) else _json.dumps(record, sort_keys=True)
        out.append({"sha256": hashlib.sha256(text.encode()).hexdigest(), "words": len(text.split())})
    return out


def summaries(part: Any) -> list[dict[str, Any]]:
    """One summary per record (a digest and a word count), returned: the results bench's handler."""
    return _summaries(part)


def summaries_dropped(part: Any) -> None:
    """The same work as ``summaries``, returning nothing: the results bench's baseline."""
    _summaries(part)


def die_while_file_exists(part: Any) -> None:
    """SIGKILL this worker (exit 137, as an OOM kill) while the file named by a record's ``die_while``
    exists, marking ``killedN`` first (N: the delivery attempt); otherwise like ``scripted``."""
    import signal

    for record in part.records:
        if isinstance(record, dict) and record.get("die_while") and Path(record["die_while"]).exists():
            _mark(part, f"killed{part.attempt}")
            os.kill(os.getpid(), signal.SIGKILL)
    scripted(part)


def gated_echo(part: Any) -> Any:
    """``echo``, after waiting while the file named by a record's ``gate`` exists (at most 120 s)."""
    _wait_gates(part)
    return echo(part)
