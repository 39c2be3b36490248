"""Cut a record stream into parts that respect Pub/Sub's limits.

A part is the records joined by newlines; it holds at most ``records_per_part``
records and ``max_part_bytes`` bytes. Parts are spooled to a temporary file so the
total (an attribute of every part) is known before the first publish while memory
stays flat: only a small index per part is kept.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from batchctl.errors import BadInput
from splitter.readers import Record

PUBSUB_MAX_MESSAGE_BYTES = 10_000_000
MAX_PART_BYTES_CEILING = 9_500_000
"""Hard ceiling: under Pub/Sub's 10 MB message limit with room for attributes."""
DEFAULT_MAX_PART_BYTES = 1024 * 1024
DEFAULT_RECORDS_PER_PART = 100


@dataclass(frozen=True)
class PartLimits:
    records_per_part: int = DEFAULT_RECORDS_PER_PART
    max_part_bytes: int = DEFAULT_MAX_PART_BYTES

    def __post_init__(self) -> None:
        if self.records_per_part < 1:
            raise BadInput(f"--records-per-part {self.records_per_part}: must be at least 1")
        if not 1 <= self.max_part_bytes <= MAX_PART_BYTES_CEILING:
            raise BadInput(
                f"--max-part-bytes {self.max_part_bytes}: must be between 1 and {MAX_PART_BYTES_CEILING}"
            )


@dataclass(frozen=True)
class PartIndex:
    """Where one part lies in the spool, and what it holds."""

    offset: int
    size: int
    records: int
    sha256: str


@dataclass(frozen=True)
class Part:
    index: int
    data: bytes
    records: int
    sha256: str


def cut(records: Iterable[Record], limits: PartLimits) -> Iterator[tuple[bytes, int]]:
    """Group records into (data, record count) chunks within the limits."""
    chunk: list[bytes] = []
    size = 0
    for record in records:
        encoded = record.text.encode()
        extra = len(encoded) + (1 if chunk else 0)
        if chunk and (len(chunk) >= limits.records_per_part or size + extra > limits.max_part_bytes):
            yield b"\n".join(chunk), len(chunk)
            chunk, size, extra = [], 0, len(encoded)
        chunk.append(encoded)
        size += extra
    if chunk:
        yield b"\n".join(chunk), len(chunk)


class Spool:
    """Parts written once to a temporary file, then read back in order for publishing."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="batchctl-spool-")  # noqa: SIM115 - closed by __exit__
        self.index: list[PartIndex] = []
        self.records = 0
        self.bytes = 0

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def fill(self, records: Iterable[Record], limits: PartLimits) -> None:
        for data, count in cut(records, limits):
            self.index.append(PartIndex(self.bytes, len(data), count, hashlib.sha256(data).hexdigest()))
            self._file.write(data)
            self.records += count
            self.bytes += len(data)

    def __len__(self) -> int:
        return len(self.index)

    def parts(self, only: Iterable[int] | None = None) -> Iterator[Part]:
        """Read parts back in index order (or just those in ``only``)."""
        self._file.flush()
        wanted = range(len(self.index)) if only is None else only
        for i in wanted:
            entry = self.index[i]
            self._file.seek(entry.offset)
            yield Part(i, self._file.read(entry.size), entry.records, entry.sha256)
