"""Reading a batch's results back (``batchctl results``, ``Batch.results()``): part by part, in order.

The results of a succeeded batch are complete: its ``_SUCCESS`` manifest exists and every
part has its object (the launcher checked before writing the manifest). Anything else
is refused (exit 1) unless ``partial`` is asked for, which streams the parts that have a
result so far, in order, skipping the others.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import orjson

from batchctl.core.errors import BadInput, BatchctlError
from batchctl.core.sink import SUCCESS, Sink, part_name
from batchctl.launcher.state import SUCCEEDED, BatchState

CHUNK_BYTES = 1 << 20


class ResultsNotReady(BatchctlError):
    """Raised when a batch's results are asked for before it succeeded (exit 1)."""


def sink_of(batch: BatchState, environ: dict[str, str], project: str | None) -> Sink:
    """The batch's DEST; BadInput if it was submitted without ``--output``."""
    if batch.request.output is None:
        raise BadInput(f"batch {batch.batch_id} was submitted without --output: it has no results to read")
    return Sink(batch.request.output, environ=environ, project=project)


def check_ready(batch: BatchState, sink: Sink, *, partial: bool) -> None:
    """ResultsNotReady unless the batch succeeded and its manifest is there (or ``partial``)."""
    if partial:
        return
    if batch.state != SUCCEEDED:
        why = f": {batch.reason}" if batch.reason else ""
        raise ResultsNotReady(f"batch {batch.batch_id} is {batch.state}{why}; its results are incomplete "
                              "(pass --partial to read the parts done so far)")
    manifest = sink.read_success()
    if manifest is None or manifest.get("batch_id") != batch.batch_id:
        raise ResultsNotReady(f"batch {batch.batch_id} succeeded but {sink.url(SUCCESS)} is missing or names "
                              "another batch")


def chunks(batch: BatchState, sink: Sink, *, partial: bool) -> Iterator[bytes]:
    """The results' bytes in part order, streamed (never more than a chunk in memory).

    Readiness is checked at once (ResultsNotReady here, not at the first ``next``)."""
    check_ready(batch, sink, partial=partial)
    return _chunks(batch, sink, partial=partial)


def _chunks(batch: BatchState, sink: Sink, *, partial: bool) -> Iterator[bytes]:
    for index in range(batch.parts):
        stream = sink.open_part(index)
        if stream is None:
            if partial:
                continue
            raise ResultsNotReady(f"batch {batch.batch_id}: {sink.url(part_name(index))} is missing")
        with stream:
            while chunk := stream.read(CHUNK_BYTES):
                yield chunk


def records(batch: BatchState, sink: Sink, *, partial: bool) -> Iterator[Any]:
    """The results as decoded JSON values, in part order (readiness checked at once)."""
    return _records(chunks(batch, sink, partial=partial))


def _records(stream: Iterator[bytes]) -> Iterator[Any]:
    carry = b""
    for chunk in stream:
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        for line in lines:
            if line.strip():
                yield orjson.loads(line)
    if carry.strip():
        yield orjson.loads(carry)


@contextmanager
def spooled(stream: Iterable[bytes]) -> Iterator[IO[bytes]]:
    """``stream`` copied whole to a temporary file (so that a failure midway leaves no partial copy)."""
    with tempfile.TemporaryFile(prefix="batchctl-results-") as spool:
        for chunk in stream:
            spool.write(chunk)
        spool.seek(0)
        yield spool
