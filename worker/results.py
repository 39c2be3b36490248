"""What a handler returns, made concrete and written to the batch's results (``--output DEST``).

One place decides what a return value means (``outcome``, then ``encode``):

    None                               no output (an empty result object when DEST is set)
    bytes, bytearray, memoryview, str  the part's result as it stands (JSON lines; a final
                                       newline is added if missing)
    dict                               one record
    list, tuple, any other iterable,   its items are records: each a JSON value (written as
    a generator                        one JSON line) or bytes (one line as given)
    a coroutine (``async def``)        run to completion; its value is taken as above
    an async generator                 iterated to the end; its items are records
    anything else (int, float, bool,   refused: the part fails with a reason saying what to
    other objects)                     return (a bare number is more likely a bug than a result)

A generator or coroutine is always run, with or without DEST: the work is in it. With
DEST, ``wrap`` also encodes the result (on the handler's slot) into a ``PartResult``, which
the worker's writers (``worker.writer``) write to ``DEST/part-NNNNNN.jsonl`` before the
part's ``part_done`` event and its ack; a failed write fails the part (it is redelivered and
written again).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from batchctl.core.errors import BatchctlError
from batchctl.worker.handler import Handler

ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
RAW = (bytes, bytearray, memoryview, str)
_DUMPS = functools.partial(orjson.dumps, option=ORJSON_OPTIONS)
"""Slower than bare ``orjson.dumps`` (30 us against 9 us for 100 summaries: the options cost per
call), so ``encode`` tries the bare call first; any value it accepts comes out the same."""


class HandlerResultRejected(BatchctlError):
    """Raised when a handler returns something that is not a result (the part fails, naming the type)."""


def outcome(value: Any) -> Any:
    """``value`` with its lazy work done: a coroutine awaited, a generator or async generator
    drained into a list. Plain values come back as they are; others are refused."""
    if inspect.iscoroutine(value):
        value = asyncio.run(value)
    if inspect.isasyncgen(value):
        value = asyncio.run(_drain(value))
    if value is None or isinstance(value, (*RAW, dict, list, tuple)):
        return value
    if isinstance(value, Iterable):
        return list(value)
    raise HandlerResultRejected(
        f"handler returned {type(value).__name__}: return None, bytes, str, a dict or an iterable of records "
        "(a generator and an async def handler work too)"
    )


async def _drain(agen: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in agen]


def encode(value: Any) -> tuple[bytes, int]:
    """The concrete ``outcome`` as JSON lines, and how many records (lines) they hold."""
    if value is None:
        return b"", 0
    if isinstance(value, RAW):
        data = value.encode() if isinstance(value, str) else bytes(value)
        if data and not data.endswith(b"\n"):
            data += b"\n"
        return data, data.count(b"\n")
    records = [value] if isinstance(value, dict) else value
    try:  # one C-level pass when every record is a plain JSON value (str keys, no numpy)
        lines = list(map(orjson.dumps, records))
    except TypeError:  # non-str keys, numpy, bytes records, or one that cannot be serialised
        lines = _lines(records)
    return (b"\n".join(lines) + b"\n" if lines else b""), len(lines)


def _lines(records: list[Any] | tuple[Any, ...]) -> list[bytes]:
    """The records with the options on: the same bytes for plain values, and non-str keys and numpy too."""
    try:
        return list(map(_DUMPS, records))
    except TypeError:  # bytes records, or one that cannot be serialised: record by record, naming it
        return [_line(record, at) for at, record in enumerate(records)]


def _line(record: Any, at: int) -> bytes:
    if isinstance(record, (bytes, bytearray, memoryview)):
        line = bytes(record).rstrip(b"\n")
        if b"\n" in line:
            raise HandlerResultRejected(f"result record {at} is bytes holding several lines")
        return line
    try:
        return orjson.dumps(record, option=ORJSON_OPTIONS)
    except TypeError as exc:
        raise HandlerResultRejected(f"result record {at} is not JSON-serialisable: {exc}") from exc


@dataclass(frozen=True)
class PartResult:
    """A part's result as written: JSON lines, and how many records they hold."""

    body: bytes
    records: int


def result_of(value: Any) -> PartResult:
    """What a handler returned, as the part's result (a ``wrap``ped handler's is one already)."""
    return value if isinstance(value, PartResult) else PartResult(*encode(outcome(value)))


def wrap(handler: Handler, *, output: bool) -> Handler:
    """The handler as the worker calls it: its lazy work run, its value checked; with an output
    (DEST), its result encoded and returned as a ``PartResult`` for the worker's writers."""

    @functools.wraps(handler)
    def handle(part: Any) -> PartResult | None:
        value = outcome(handler(part))
        return PartResult(*encode(value)) if output else None

    return handle
