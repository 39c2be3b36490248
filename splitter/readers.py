"""Stream records out of files, folders and stdin: JSONL, CSV and plain lines, gzip or not.

Memory stays flat: files are read in blocks, CSV through ``csv.reader`` over those
blocks' lines. Every error names the file and line. Stdin is copied to a temporary
file first (``submit`` reads its input twice: once to plan the parts, once to publish).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO, cast

import orjson

from batchctl.core.errors import BadInput

FORMATS = ("jsonl", "csv", "lines")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".txt": "lines",
              ".log": "lines", ".lines": "lines", ".text": "lines"}
GZIP_MAGIC = b"\x1f\x8b"
READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


@dataclass(frozen=True)
class Source:
    """One input to read: a path (or ``-``) and its format."""

    path: str
    format: str
    label: str | None = None
    """What errors call it when ``path`` is a stand-in (stdin's copy is ``-``)."""

    @property
    def name(self) -> str:
        return self.label or self.path


Opener = Callable[[Source], BinaryIO]
"""Opens a source's stored bytes as a buffered stream (``peek`` is used to detect gzip)."""
RemoteLister = Callable[[str, str | None], list[Source]]
"""Lists a ``gs://`` input as sources (``splitter.remote``)."""


def expand(inputs: list[str], fmt: str | None, *, remote: RemoteLister | None = None) -> list[Source]:
    """Resolve inputs to files in order: folders give their files in name order, and
    ``gs://`` inputs (listed by ``remote``) their objects in name order."""
    if not inputs:
        raise BadInput("no input given: name files, folders or '-' for stdin")
    if fmt is not None and fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    sources: list[Source] = []
    for name in inputs:
        if name == "-":
            sources.append(Source("-", fmt or "lines"))
            continue
        if remote is not None and name.startswith("gs://"):
            sources.extend(remote(name, fmt))
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


def format_of(path: PurePath, label: str | None = None) -> str:
    """The format named by a file's extension (``.gz`` looked through); errors name ``label`` if given."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in EXTENSIONS:
        return EXTENSIONS[suffixes[-1]]
    raise BadInput(f"{label or path}: cannot tell the format from the extension; pass --format jsonl|csv|lines")


BLOCK_BYTES = 1 << 20
"""Read size: large enough that per-block work is noise, small enough to keep memory flat."""
BLOCK_RECORDS = 8192
"""CSV records per block (CSV is parsed row by row, so blocks are cut by count)."""


def record_blocks(sources: list[Source], *, max_record_bytes: int, validate: bool = True,
                  opener: Opener | None = None) -> Iterator[list[bytes]]:
    """Every record of every source, in order, as lists of encoded records (no newline).

    Reading is by blocks, not lines: lines are split, measured and (for JSONL) parsed by C
    code, so a record costs well under a microsecond of Python. ``validate`` checks UTF-8
    and JSON and names the file and line of the first bad record; a second pass over input
    already validated can skip it. A line longer than ``max_record_bytes`` is refused
    without ever being held whole. ``opener`` opens each source (default: a local file).
    """
    for source in sources:
        handle = (opener or open_file)(source)
        with handle, _decoded(handle, source.name) as raw:  # a GzipFile leaves its fileobj open
            if source.format == "csv":
                yield from _csv_blocks(raw, source.name, max_record_bytes)
            else:
                yield from _line_blocks(raw, source.name, max_record_bytes, jsonl=source.format == "jsonl",
                                        validate=validate)


@dataclass(frozen=True)
class Stamp:
    """What a local input file looked like when the first pass began."""

    name: str
    size: int
    mtime_ns: int


Stamps = dict[str, Stamp]


def stamp(sources: list[Source]) -> Stamps:
    """Size and modification time of every local input file (remote objects are read once and spooled)."""
    stamps: Stamps = {}
    for source in sources:
        try:
            info = os.stat(source.path)
        except OSError:  # a gs:// object, or a file the first pass will report missing
            continue
        stamps[source.path] = Stamp(source.name, info.st_size, info.st_mtime_ns)
    return stamps


def check_unchanged(stamps: Stamps) -> None:
    """BadInput naming the first input whose size or modification time moved since ``stamp``: the
    second pass would publish records the first pass never validated."""
    for path, before in stamps.items():
        try:
            info = os.stat(path)
        except OSError as exc:
            raise BadInput(f"{before.name}: removed while being submitted") from exc
        if (info.st_size, info.st_mtime_ns) != (before.size, before.mtime_ns):
            raise BadInput(f"{before.name}: changed while being submitted (size or modification time); "
                           "submit it again once it is complete")


def open_file(source: Source) -> BinaryIO:
    """The local file ``source.path``, buffered."""
    try:
        return open(source.path, "rb")  # closed by the caller's with-block
    except OSError as exc:
        raise BadInput(f"{source.name}: cannot open: {exc.strerror}") from exc


def _decoded(handle: BinaryIO, name: str) -> BinaryIO:
    """The source's records' bytes: gunzipped when the stored bytes start with gzip's magic."""
    try:
        magic = cast(io.BufferedReader, handle).peek(2)[:2]
    except READ_ERRORS as exc:
        raise BadInput(f"{name}: unreadable input ({_reason(exc)})") from exc
    if magic == GZIP_MAGIC:
        return cast(BinaryIO, gzip.GzipFile(fileobj=handle, mode="rb"))
    if name.endswith(".gz"):
        raise BadInput(f"{name}: not a gzip file")
    return handle


def _raw_line_blocks(raw: BinaryIO, path: str, max_record_bytes: int, *,
                     keep_cr: bool = False) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the block's first line, its complete lines without ``\n``, BOM dropped).

    A ``\r`` before the ``\n`` is dropped too, unless ``keep_cr`` (CSV keeps it: inside a
    quoted field it is data, and ``csv`` itself treats ``\r\n`` as a row end).
    """
    carry = b""
    first = 1
    while True:
        try:
            chunk = raw.read(BLOCK_BYTES)
        except READ_ERRORS as exc:
            raise BadInput(f"{path}:{first}: unreadable input ({_reason(exc)})") from exc
        if first == 1 and not carry:
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        data = carry + chunk
        lines = data.split(b"\n")
        carry = lines.pop() if chunk else b""
        if chunk and len(carry) > max_record_bytes + 1:
            line = first + len(lines)
            raise BadInput(f"{path}:{line}: record larger than --max-part-bytes ({max_record_bytes} bytes)")
        if not chunk and not data:
            return
        if b"\r" in data and not keep_cr:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if lines and max(map(len, lines)) > max_record_bytes:
            at = next(i for i, line in enumerate(lines) if len(line) > max_record_bytes)
            raise BadInput(f"{path}:{first + at}: record larger than --max-part-bytes ({max_record_bytes} bytes)")
        yield first, lines
        first += len(lines)
        if not chunk:
            return


def _line_blocks(raw: BinaryIO, path: str, max_record_bytes: int, *, jsonl: bool,
                 validate: bool) -> Iterator[list[bytes]]:
    for first, lines in _raw_line_blocks(raw, path, max_record_bytes):
        if not jsonl:
            bad = _first_bad_utf8(lines) if validate else None
            if bad is not None:
                raise BadInput(f"{path}:{first + bad[0]}: not valid UTF-8 (byte {bad[1]})")
            yield lines
            continue
        records = list(filter(None, map(bytes.strip, lines)))
        if validate:
            _check_jsonl(records, lines, path, first)
        yield records


def _first_bad_utf8(lines: list[bytes]) -> tuple[int, int] | None:
    """(index, byte offset) of the first line that is not UTF-8; one C call when all are."""
    try:
        b"\n".join(lines).decode("utf-8")
    except UnicodeDecodeError:
        for at, line in enumerate(lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return at, exc.start
    return None


def _check_jsonl(records: list[bytes], lines: list[bytes], path: str, first: int) -> None:
    """Parse every record in one C-level loop (orjson also rejects invalid UTF-8); only when one
    fails, walk the lines to name the first bad one and say how it is bad."""
    try:
        deque(map(orjson.loads, records), maxlen=0)
    except orjson.JSONDecodeError:
        for at, line in enumerate(lines):
            record = line.strip()
            if not record:
                continue
            try:
                record.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(f"{path}:{first + at}: not valid UTF-8 (byte {exc.start})") from exc
            try:
                orjson.loads(record)
            except orjson.JSONDecodeError as exc:
                raise BadInput(f"{path}:{first + at}: malformed JSON ({_reason(exc)})") from exc
        raise


def _csv_blocks(raw: BinaryIO, path: str, max_record_bytes: int) -> Iterator[list[bytes]]:
    block: list[bytes] = []
    for record in _csv_records(raw, path, max_record_bytes):
        block.append(record)
        if len(block) >= BLOCK_RECORDS:
            yield block
            block = []
    if block:
        yield block


def _lines(raw: BinaryIO, path: str, max_record_bytes: int) -> Iterator[str]:
    """Physical lines with their endings (``\r\n`` kept), decoded as UTF-8 (errors name their line)."""
    for first, lines in _raw_line_blocks(raw, path, max_record_bytes, keep_cr=True):
        for at, line in enumerate(lines):
            try:
                yield line.decode("utf-8") + "\n"
            except UnicodeDecodeError as exc:
                raise BadInput(f"{path}:{first + at}: not valid UTF-8 (byte {exc.start})") from exc


def _csv_records(raw: BinaryIO, path: str, max_record_bytes: int) -> Iterator[bytes]:
    csv.field_size_limit(max(max_record_bytes, csv.field_size_limit()))
    reader = csv.reader(_lines(raw, path, max_record_bytes))
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
            header = _header(row, path, line)
            continue
        if len(row) != len(header):
            raise BadInput(f"{path}:{line}: expected {len(header)} fields, got {len(row)}")
        record = json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False).encode()
        if len(record) > max_record_bytes:
            raise BadInput(f"{path}:{line}: record larger than --max-part-bytes ({max_record_bytes} bytes)")
        yield record


def _header(row: list[str], path: str, line: int) -> list[str]:
    """The header row; a name given twice would silently drop a column of every record."""
    seen: set[str] = set()
    for name in row:
        if name in seen:
            raise BadInput(f"{path}:{line}: column {name!r} appears twice in the header")
        seen.add(name)
    return row


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
