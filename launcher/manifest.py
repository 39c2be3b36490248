"""The ``_SUCCESS`` manifest a succeeded batch with ``--output DEST`` leaves in DEST.

Written by the launcher when the plan finishes a batch as succeeded, before that state is
saved: a crash in between writes the same manifest again on the next pass. A batch that
fails writes none, so ``_SUCCESS`` in DEST means every part's result is there.
Before writing, the results are counted (``records_out``): a part with no result object
(which a correct worker never leaves: it writes before it acks) fails the batch instead,
as does a DEST that refuses the write (deleted bucket, lost permission). An unreachable
Cloud Storage raises, and the next reconcile pass tries again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batchctl.core.errors import BadInput
from batchctl.core.settings import Settings
from batchctl.core.sink import SUCCESS, Sink, part_name
from batchctl.core.storage import Storage
from batchctl.launcher.planner import Finish
from batchctl.launcher.state import FAILED, BatchState

MANIFEST_VERSION = 1


def manifest(batch: BatchState, *, records_out: int, finished: float) -> dict[str, Any]:
    """The manifest's content: pure."""
    request = batch.request
    launched = batch.jobs[0].launched if batch.jobs else None
    return {
        "version": MANIFEST_VERSION,
        "batch_id": batch.batch_id,
        "output": request.output,
        "parts": request.parts,
        "records_in": request.records,
        "records_out": records_out,
        "bytes_in": request.bytes,
        "jobs": len(batch.jobs),
        "created": _iso(request.created),
        "first_launch": _iso(launched) if launched else None,
        "finished": _iso(finished),
        "seconds": round(finished - request.created, 3),
    }


def missing_reason(missing: list[int]) -> str:
    return f"results missing for {len(missing)} parts (first: {part_name(missing[0])})"


class Manifests:
    """Writes manifests with one lazily built Cloud Storage client."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._storage: Storage | None = None

    def write(self, batch: BatchState, finish: Finish, *, finished: float) -> Finish:
        """Write ``DEST/_SUCCESS`` for a succeeding batch; the Finish to apply (FAILED if it cannot be)."""
        dest = batch.request.output
        if dest is None:
            return finish
        sink = Sink(dest, storage=self._storage_for(dest))
        try:
            records_out, missing = sink.records_out(batch.parts)
            if missing:
                return Finish(FAILED, missing_reason(missing))
            sink.write_success(manifest(batch, records_out=records_out, finished=finished))
        except BadInput as exc:
            return Finish(FAILED, f"cannot write {SUCCESS}: {exc}")
        return finish

    def _storage_for(self, dest: str) -> Storage | None:
        if not dest.startswith("gs://"):
            return None
        if self._storage is None:
            self._storage = Storage(self._settings.environ, project=self._settings.project)
        return self._storage


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
