"""Where a batch's results go (``submit --output DEST``): a ``gs://BUCKET/PREFIX/`` or a local folder.

Layout, as Hadoop and Spark writers leave it::

    DEST/part-000000.jsonl   the result of part 0 (one deterministic object per part)
    DEST/part-000001.jsonl   ...
    DEST/_SUCCESS            JSON manifest, written by the launcher once the batch succeeded

A redelivered part overwrites its own object, so duplicates vanish at the sink. A part's
object is written whole (a Cloud Storage upload, or a local temporary file renamed over
it), so a reader sees the old result or the new one, never a torn one. The worker writes
a part's record count with it (object metadata; for a folder, counted from the file), so
the launcher can total ``records_out`` without reading the results.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from batchctl.core.errors import BadInput
from batchctl.core.gsurl import is_url, join_url, split_url

if TYPE_CHECKING:
    from batchctl.core.storage import Storage

SUCCESS = "_SUCCESS"
RECORDS_KEY = "batchctl-records"
"""Object metadata key holding a part result's record count."""
COUNT_BYTES = 1 << 20


def part_name(index: int) -> str:
    return f"part-{index:06d}.jsonl"


def part_index(name: str) -> int | None:
    """``part-000042.jsonl`` -> 42; None for anything else."""
    base = name.rsplit("/", 1)[-1]
    digits = base.removeprefix("part-").removesuffix(".jsonl")
    if base.startswith("part-") and base.endswith(".jsonl") and digits.isdigit():
        return int(digits)
    return None


def check_dest(dest: str, *, backend: str) -> str:
    """The canonical DEST: ``gs://BUCKET/PREFIX/`` (any backend) or an absolute folder (local backend only)."""
    if is_url(dest):
        split_url(dest)
        return dest if dest.endswith("/") else dest + "/"
    if backend != "local":
        raise BadInput(f"--output {dest}: a folder works only with the local backend; use gs://BUCKET/PREFIX/")
    return str(Path(dest).expanduser().resolve())


class Sink:
    """Read and write one DEST; ``storage`` is built from ``environ`` on first use for gs://."""

    def __init__(self, dest: str, *, environ: Mapping[str, str] | None = None, project: str | None = None,
                 storage: Storage | None = None) -> None:
        self.dest = dest
        self.remote = is_url(dest)
        self._environ = dict(environ or {})
        self._project = project
        self._storage = storage

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            from batchctl.core.storage import Storage  # the client loads only where a bucket is used

            self._storage = Storage(self._environ, project=self._project)
        return self._storage

    def url(self, name: str) -> str:
        return join_url(self.dest, name) if self.remote else str(Path(self.dest) / name)

    def prepare(self) -> None:
        """At submit: DEST is usable (bucket readable, or folder created) and holds no finished batch."""
        if self.remote:
            self.storage.check_bucket(split_url(self.dest)[0])
            taken = self.storage.stat(self.url(SUCCESS)) is not None
        else:
            try:
                Path(self.dest).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BadInput(f"--output {self.dest}: cannot create the folder: {exc.strerror}") from exc
            taken = Path(self.url(SUCCESS)).exists()
        if taken:
            raise BadInput(f"--output {self.dest}: already holds a finished batch's results ({SUCCESS}); "
                           "choose another destination")

    def write_part(self, index: int, body: bytes | IO[bytes], records: int) -> None:
        """Create or overwrite ``DEST/part-NNNNNN.jsonl``."""
        self._write(part_name(index), body, {RECORDS_KEY: str(records)}, durable=False)

    def write_success(self, manifest: Mapping[str, Any]) -> None:
        body = json.dumps(manifest, sort_keys=True, indent=1).encode() + b"\n"
        self._write(SUCCESS, body, None, content_type="application/json")

    def read_success(self) -> dict[str, Any] | None:
        """The manifest, or None when the batch has not succeeded (yet)."""
        if self.remote:
            if self.storage.stat(self.url(SUCCESS)) is None:
                return None
            data = self.storage.read(self.url(SUCCESS))
        else:
            try:
                data = Path(self.url(SUCCESS)).read_bytes()
            except FileNotFoundError:
                return None
        manifest: dict[str, Any] = json.loads(data)
        return manifest

    def records_out(self, parts: int) -> tuple[int, list[int]]:
        """(records in the results of parts ``0..parts-1``, indexes of parts with no result)."""
        counts = self._remote_counts() if self.remote else self._local_counts(parts)
        missing = [i for i in range(parts) if i not in counts]
        return sum(counts.get(i, 0) for i in range(parts)), missing

    def open_part(self, index: int) -> BinaryIO | None:
        """A stream of part ``index``'s result, or None if there is none."""
        if not self.remote:
            try:
                return open(self.url(part_name(index)), "rb")  # closed by the caller
            except FileNotFoundError:
                return None
        stat = self.storage.stat(self.url(part_name(index)))
        return None if stat is None else self.storage.open(stat)

    def _write(self, name: str, body: bytes | IO[bytes], metadata: Mapping[str, str] | None, *,
               content_type: str = "application/x-ndjson", durable: bool = True) -> None:
        if self.remote:
            self.storage.write(self.url(name), body, content_type=content_type, metadata=metadata)
        elif isinstance(body, bytes) and not durable:
            write_bytes_atomically(self.dest, name, body)
        else:
            write_file_atomically(Path(self.url(name)), body, durable=durable)

    def _remote_counts(self) -> dict[int, int]:
        counts = {}
        for obj in self.storage.list(self.dest):
            index = part_index(obj.name)
            if index is not None and obj.name == split_url(self.url(part_name(index)))[1]:
                counts[index] = int((obj.metadata or {}).get(RECORDS_KEY, "0") or 0)
        return counts

    def _local_counts(self, parts: int) -> dict[int, int]:
        counts = {}
        for index in range(parts):
            path = Path(self.url(part_name(index)))
            if path.exists():
                counts[index] = _count_lines(path)
        return counts


def write_file_atomically(path: Path, body: bytes | IO[bytes], *, durable: bool = True) -> None:
    """Write ``path`` so a reader sees the old file or the new one, never a torn one.

    ``durable=False`` skips the fsync: the file survives its writer being killed (the rename is
    atomic), not a power loss. Part results use it: an fsync per part doubled a local worker's
    drain time (bench/results_sink.py), and a lost result is only lost with its machine.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"  # one writer per name
    try:
        with open(tmp, "wb") as out:
            if isinstance(body, bytes):
                out.write(body)
            else:
                body.seek(0)
                while chunk := body.read(COUNT_BYTES):
                    out.write(chunk)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomically(folder: str, name: str, body: bytes) -> None:
    """``write_file_atomically(folder/name, body, durable=False)`` in as few system calls as
    it takes: open, one write (more only if the kernel takes less), close, rename; the folder is
    made only when the open says it is missing. A part result's write, on the worker's hot path."""
    tmp = f"{folder}/.{name}.{os.getpid()}-{threading.get_ident()}.tmp"  # one writer per name
    try:
        fd = os.open(tmp, _CREATE_FLAGS, 0o666)
    except FileNotFoundError:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, _CREATE_FLAGS, 0o666)
    try:
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, f"{folder}/{name}")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(COUNT_BYTES):
            count += chunk.count(b"\n")
    return count
