"""``gs://`` inputs of one submit: listed up front, downloaded once.

``submit`` reads its input twice (plan the cut, then build and publish the parts). A
Cloud Storage object is streamed once, during the plan pass, and its stored bytes are
copied as they pass to a spool file on local disk (compressed objects stay compressed);
the publish pass reads the spool. So an object is downloaded exactly once, memory stays
flat (one read chunk per open object), and the second pass cannot see a different
version of the object than the first. The cost is local disk equal to the objects'
stored size, and writing it: measured in ``bench/gcs_source.py`` against a plain
streaming read with the raw client.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from batchctl.core.errors import BadInput
from batchctl.core.gsurl import is_url
from batchctl.splitter import readers

if TYPE_CHECKING:
    from batchctl.core.storage import Storage, StoredObject

COPY_BYTES = 1 << 20


class RemoteInputs:
    """Lists ``gs://`` inputs, opens them for the plan pass, and hands over their spools."""

    def __init__(self, storage: Storage, spool_dir: Path) -> None:
        self._storage = storage
        self._spool_dir = spool_dir
        self._objects: dict[str, StoredObject] = {}
        self._spools: dict[str, tuple[Path, Tee]] = {}

    def expand(self, url: str, fmt: str | None) -> list[readers.Source]:
        """The objects ``url`` names, as sources in name order; BadInput if there are none."""
        objects = self._storage.list(url)
        if not objects:
            raise BadInput(f"{url}: no such object, and no objects under it")
        sources = []
        for obj in objects:
            self._objects[obj.url] = obj
            sources.append(readers.Source(obj.url, fmt or readers.format_of(PurePosixPath(obj.name), obj.url)))
        return sources

    def open(self, source: readers.Source) -> BinaryIO:
        """Plan pass: a local file as usual; an object streamed while its bytes are spooled."""
        if not is_url(source.path):
            return readers.open_file(source)
        spool = self._spool_dir / f"{len(self._spools):06d}"
        tee = Tee(self._storage.open(self._objects[source.path]), spool.open("wb"))
        self._spools[source.path] = (spool, tee)
        return cast(BinaryIO, io.BufferedReader(tee, COPY_BYTES))

    def spooled(self, sources: list[readers.Source]) -> list[readers.Source]:
        """Publish pass: every object's source now reads its complete spool (named by its URL)."""
        result = []
        for source in sources:
            if not is_url(source.path):
                result.append(source)
                continue
            spool, tee = self._spools[source.path]
            tee.finish()
            result.append(readers.Source(str(spool), source.format, label=source.path))
        return result

    def close(self) -> None:
        """Close every stream (spool files are removed with their folder by the caller)."""
        for _, tee in self._spools.values():
            tee.abandon()


class Tee(io.RawIOBase):
    """Reads ``inner`` and writes what it read to ``copy``; ``finish`` copies the rest and closes both."""

    def __init__(self, inner: BinaryIO, copy: Any) -> None:
        super().__init__()
        self._inner = inner
        self._copy = copy
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        self._eof = not data
        self._copy.write(data)
        buffer[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        """Copy what the plan pass left unread (bytes after a gzip stream's end), then close."""
        if not self._copy.closed:
            shutil.copyfileobj(self._inner, self._copy, COPY_BYTES)
            self._copy.close()
            self._inner.close()

    def abandon(self) -> None:
        self._copy.close()
        self._inner.close()

    def close(self) -> None:
        """The reader is done. Read to the end (the plan pass succeeded): the spool is complete, and
        closing now frees the object's buffers. Otherwise (a bad record stopped the read) nothing
        more is downloaded; ``finish`` or ``abandon`` decides."""
        if self._eof:
            self.finish()
        super().close()


def spool_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="batchctl-spool-")
