"""Stream records out of files, folders and stdin: JSONL, CSV and plain lines, gzip or not.

Memory stays flat: files are read line by line (a line is read with a length cap
so a 50 MB line is rejected without being held twice), CSV through ``csv.reader``.
Every error names the file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from batchctl.errors import BadInput

FORMATS = ("jsonl", "csv", "lines")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".txt": "lines",
              ".log": "lines", ".lines": "lines", ".text": "lines"}
GZIP_MAGIC = b"\x1f\x8b"
READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


@dataclass(frozen=True)
class Record:
    """One record as it will travel: a line of text, and where it came from."""

    text: str
    source: str
    line: int


@dataclass(frozen=True)
class Source:
    """One input to read: a path (or ``-``) and its format."""

    path: str
    format: str


def expand(inputs: list[str], fmt: str | None) -> list[Source]:
    """Resolve inputs to files in order: folders give their files in name order."""
    if not inputs:
        raise BadInput("no input given: name files, folders or '-' for stdin")
    if fmt is not None and fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    sources: list[Source] = []
    for name in inputs:
        if name == "-":
            sources.append(Source("-", fmt or "lines"))
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            sources.extend(Source(str(p), fmt or format_of(p)) for p in files)
        elif path.is_file():
            sources.append(Source(name, fmt or format_of(path)))
        else:
            raise BadInput(f"{name}: no such file or folder")
    return sources


def format_of(path: Path) -> str:
    """The format named by a file's extension (``.gz`` looked through)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in EXTENSIONS:
        return EXTENSIONS[suffixes[-1]]
    raise BadInput(f"{path}: cannot tell the format from the extension; pass --format jsonl|csv|lines")


def read(sources: list[Source], *, max_record_bytes: int, stdin: BinaryIO | None = None) -> Iterator[Record]:
    """Yield every record of every source, in order."""
    for source in sources:
        with _open(source.path, stdin) as raw:
            if source.format == "csv":
                yield from _csv_records(raw, source.path, max_record_bytes)
            else:
                yield from _line_records(raw, source.path, max_record_bytes, source.format == "jsonl")


def _open(path: str, stdin: BinaryIO | None) -> BinaryIO:
    if path == "-":
        import sys

        raw: Any = stdin if stdin is not None else sys.stdin.buffer
        buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
        inner = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == GZIP_MAGIC else buffered
        return cast(BinaryIO, _NoClose(inner))
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the caller's with-block
    except OSError as exc:
        raise BadInput(f"{path}: cannot open: {exc.strerror}") from exc
    magic = handle.peek(2)[:2]
    if magic == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    if path.endswith(".gz"):
        handle.close()
        raise BadInput(f"{path}: not a gzip file")
    return handle


class _NoClose(io.RawIOBase):
    """Wraps stdin so leaving the with-block does not close the process's stdin."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> bytes:
        return self._inner.readline(-1 if size is None else size)

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _lines(raw: BinaryIO, path: str, max_record_bytes: int, *, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text), decoded as UTF-8 line by line (errors name their line), first-line
    BOM dropped; without ``keep_ends`` the line ending is stripped. No line longer than
    ``max_record_bytes`` is ever read whole."""
    number = 0
    while True:
        try:
            chunk = raw.readline(max_record_bytes + 2)
        except READ_ERRORS as exc:
            raise BadInput(f"{path}:{number + 1}: unreadable input ({_reason(exc)})") from exc
        if not chunk:
            return
        number += 1
        line = chunk.rstrip(b"\n").removesuffix(b"\r")
        if len(line) > max_record_bytes:
            raise BadInput(f"{path}:{number}: record larger than --max-part-bytes ({max_record_bytes} bytes)")
        if number == 1:
            chunk, line = chunk.removeprefix(b"\xef\xbb\xbf"), line.removeprefix(b"\xef\xbb\xbf")
        try:
            text = (chunk if keep_ends else line).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"{path}:{number}: not valid UTF-8 (byte {exc.start})") from exc
        yield number, text


def _line_records(raw: BinaryIO, path: str, max_record_bytes: int, is_json: bool) -> Iterator[Record]:
    for number, text in _lines(raw, path, max_record_bytes):
        if is_json:
            if not text.strip():
                continue
            try:
                json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise BadInput(f"{path}:{number}: malformed JSON ({_reason(exc)})") from exc
            yield Record(text.strip(), path, number)
        else:
            yield Record(text, path, number)


def _csv_records(raw: BinaryIO, path: str, max_record_bytes: int) -> Iterator[Record]:
    csv.field_size_limit(max(max_record_bytes, csv.field_size_limit()))
    reader = csv.reader(text for _, text in _lines(raw, path, max_record_bytes, keep_ends=True))
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise BadInput(f"{path}:{start}: malformed CSV ({exc})") from exc
        line, start = start, reader.line_num + 1
        if not row:
            continue
        if header is None:
            header = row
            continue
        if len(row) != len(header):
            raise BadInput(f"{path}:{line}: expected {len(header)} fields, got {len(row)}")
        record = json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False)
        if len(record.encode()) > max_record_bytes:
            raise BadInput(f"{path}:{line}: record larger than --max-part-bytes ({max_record_bytes} bytes)")
        yield Record(record, path, line)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
