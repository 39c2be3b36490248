"""``batchctl.Client``: the Python API. The CLI is a thin layer over it.

    from batchctl import Client

    client = Client()                                   # settings as the CLI takes them
    batch = client.submit("gs://raw/2026-12-02/", handler="mypkg.jobs:handle",
                          output="gs://results/2026-12-02/")
    batch.wait(timeout=3600)                            # BatchFailed (with the reason) if it fails
    for record in batch.results():                      # in part order
        ...

``submit`` takes what ``batchctl submit`` takes (files, folders, ``gs://`` prefixes), or any
iterable of records (dicts, lists, numbers, strings: JSON values), which is written to a
temporary JSONL file first. ``Batch.status()`` reads the launcher's state and never blocks,
so a caller that must not hold a worker (an Airflow sensor, a web request) polls it.
Errors are batchctl's own (``batchctl.core.errors``): ``BadInput``, ``Unreachable``, and
here ``BatchFailed`` and ``WaitTimeout``.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from batchctl.core.errors import BadInput, BatchctlError
from batchctl.core.settings import WORK_ACK_DEADLINE_S, Settings

Source = str | os.PathLike[str]
POLL_S = 1.0
RECORDS_FILE_PREFIX = "batchctl-records-"


class BatchFailed(BatchctlError):
    """Raised by ``Batch.wait`` when the batch ends failed, cancelled or rejected; ``status`` says how."""

    def __init__(self, status: BatchStatus) -> None:
        reason = f": {status.reason}" if status.reason else ""
        super().__init__(f"batch {status.batch_id} {status.state}{reason}")
        self.status = status


class WaitTimeout(BatchctlError, TimeoutError):
    """Raised by ``Batch.wait`` when the batch has not ended within ``timeout`` seconds."""


@dataclass(frozen=True)
class BatchStatus:
    """One batch as ``batchctl status --json`` shows it (the contract's fields)."""

    batch_id: str
    state: str
    """``pending``, ``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled`` or ``rejected``."""
    reason: str
    parts_total: int
    parts_done: int
    parts_dead: int
    jobs: list[str]
    workers: int
    created: str | None
    finished: str | None
    queue_position: int | None = None
    """1-based place in line while ``queued`` for the worker budget (``BATCHCTL_MAX_WORKERS``), else None."""
    job_count: int = 0
    """Jobs launched for the batch so far (``len(jobs)``)."""
    pods: int = 0
    """Pods its Jobs ran: the most the launcher saw each Job have, summed."""

    @property
    def finished_ok(self) -> bool:
        return self.state == "succeeded"

    @property
    def ended(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled", "rejected")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> BatchStatus:
        values: dict[str, Any] = {f.name: raw.get(f.name, None if f.default is MISSING else f.default)
                                  for f in fields(cls)}
        return cls(**values)


@dataclass(frozen=True)
class Submitted:
    """What a submit published: ``batchctl submit --json``'s fields."""

    batch_id: str
    parts: int
    records: int
    bytes: int


class Client:
    """Talks to Pub/Sub, the launcher's state and the results' DEST with one set of settings.

    Settings come from ``environ`` (default ``os.environ``) as the CLI reads them; the
    keyword arguments are the CLI's global flags. Clients are built lazily and reused:
    close the client (or use it as a context manager) when done.
    """

    def __init__(self, *, project: str | None = None, backend: str | None = None, namespace: str | None = None,
                 environ: Mapping[str, str] | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env(environ, project=project, backend=backend,
                                                      namespace=namespace)
        self._pubsub: Any = None
        self._store: Any = None
        self._backend: Any = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None

    # ---- submitting ----------------------------------------------------------------
    def submit(self, source: Source | Iterable[Source] | Iterable[Any], *, handler: str | Callable[..., Any]
               = "batchctl.worker.demo:handle", batch_id: str | None = None, format: str | None = None,
               records_per_part: int = 100, max_part_bytes: int = 1024 * 1024, parts_per_worker: int = 10,
               max_parallelism: int = 10, output: str | os.PathLike[str] | None = None, image: str | None = None,
               max_delivery_attempts: int = 5, ack_deadline_s: int = WORK_ACK_DEADLINE_S, **more: Any) -> Batch:
        """Split ``source``, publish it as a batch, and ask the launcher for workers.

        ``source``: a path, ``gs://`` address or ``-``, a list of them, or an iterable of records.
        ``handler``: ``"module:function"``, or a module-level function (named the same way).
        ``output``: where handlers' results go (``gs://BUCKET/PREFIX/``, or a folder with the
        local backend). ``more``: further ``SubmitOptions`` fields the CLI offers (e.g. a profile).
        Raises BadInput (nothing created) or Unreachable.
        """
        from batchctl.core.topology import BatchTopology
        from batchctl.splitter.partitioner import PartLimits
        from batchctl.splitter.submit import SubmitOptions

        with _Inputs(source) as (inputs, records_format):
            options = SubmitOptions(
                inputs=inputs, batch_id=batch_id, format=format or records_format,
                limits=PartLimits(records_per_part, max_part_bytes), handler=handler_spec(handler),
                parts_per_worker=parts_per_worker, max_parallelism=max_parallelism, image=image,
                topology=BatchTopology(ack_deadline_s=ack_deadline_s, max_delivery_attempts=max_delivery_attempts),
                output=None if output is None else os.fspath(output), **more,
            )
            return self.batch(self.submit_options(options).batch_id)

    def submit_options(self, options: Any, *, stdin: BinaryIO | None = None) -> Submitted:
        """Submit with ``SubmitOptions`` as the CLI builds them; what was published.

        Where the launcher's profiles can be read from here, the request is checked against them first.
        """
        from dataclasses import replace

        from batchctl.splitter.submit import submit

        if options.profiles is None:
            options = replace(options, profiles=self.known_profiles())
        result = submit(self.pubsub, options, stdin=stdin)
        return Submitted(result.batch_id, result.parts, result.records, result.bytes)

    # ---- profiles ------------------------------------------------------------------
    def profiles(self) -> dict[str, dict[str, Any]]:
        """The worker profiles the launcher offers, by name (``batchctl profiles --json``)."""
        from batchctl.launcher.app import offered_profiles

        return offered_profiles(self.settings)

    def known_profiles(self) -> dict[str, Any] | None:
        """The offered profiles when this machine can read what the launcher offers (its published copy,
        or with the local backend the BATCHCTL_PROFILES file); None when it cannot, and then only the
        launcher checks a request. Without a file, the local default profile built from this machine's
        variables may not be the launcher's, so it is not used to refuse anything."""
        from batchctl.core.profiles import Profile

        if self.settings.backend == "local" and self.settings.profiles_file is None:
            return None
        try:
            return {name: Profile.from_description(body) for name, body in self.profiles().items()}
        except (BatchctlError, TypeError, KeyError):
            return None
        except Exception:  # e.g. 403 Forbidden from the API server: reading profiles is a convenience
            return None

    # ---- batches -------------------------------------------------------------------
    def batch(self, batch_id: str) -> Batch:
        """A handle on a batch by id (checked for form, not for existence: ``status()`` does that)."""
        from batchctl.core.names import validate_batch_id

        return Batch(self, validate_batch_id(batch_id))

    def list(self) -> list[BatchStatus]:
        """Every batch the launcher keeps, newest first."""
        from batchctl.frontend import batches

        return [BatchStatus.from_dict(batches.describe(b, batches.active_workers(self.backend, b)))
                for b in self.store.load_all()]

    # ---- lazily built parts ----------------------------------------------------------
    @property
    def pubsub(self) -> Any:
        if self._pubsub is None:
            from batchctl.core.pubsub import PubSub

            self._pubsub = PubSub(self.settings)
        return self._pubsub

    @property
    def store(self) -> Any:
        if self._store is None:
            from batchctl.launcher.app import open_store

            self._store = open_store(self.settings)
        return self._store

    @property
    def backend(self) -> Any:
        """The backend, to count active workers; None where it cannot be opened (counts show 0)."""
        if self._backend is None:
            from batchctl.launcher.app import open_backend

            try:
                self._backend = open_backend(self.settings)
            except BatchctlError:
                return None
        return self._backend


class Batch:
    """One batch: ``status()``, ``wait()``, ``results()``, ``cancel()``, ``retry()``."""

    def __init__(self, client: Client, batch_id: str) -> None:
        self.client = client
        self.id = batch_id

    def __repr__(self) -> str:
        return f"Batch({self.id!r})"

    def status(self, *, workers: bool = True) -> BatchStatus:
        """The batch as the launcher last saved it; BadInput if no batch has this id (yet)."""
        from batchctl.frontend import batches

        batch = batches.load(self.client.store, self.id)
        count = batches.active_workers(self.client.backend, batch) if workers else 0
        return BatchStatus.from_dict(batches.describe(batch, count))

    def wait(self, timeout: float | None = None, *, poll_s: float = POLL_S,
             on_poll: Callable[[BatchStatus], None] | None = None) -> BatchStatus:
        """Block until the batch ends. Returns its status if it succeeded; raises BatchFailed (with
        the reason) if it failed, was cancelled or rejected, WaitTimeout after ``timeout`` seconds.
        A batch not stored yet (the launcher has not taken the request) is waited for too."""
        from batchctl.frontend import batches
        from batchctl.launcher.state import TERMINAL

        def show(state: Any) -> None:
            if on_poll is not None:
                on_poll(BatchStatus.from_dict(batches.describe(state, batches.active_workers(None, state))))

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.client.store.load(self.id)
            if state is not None:
                show(state)
                if state.state in TERMINAL:
                    status = BatchStatus.from_dict(batches.describe(state, 0))
                    if not status.finished_ok:
                        raise BatchFailed(status)
                    return status
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"batch {self.id} has not ended after {timeout:g}s")
            time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))

    def results(self, *, partial: bool = False) -> Iterator[Any]:
        """The handlers' results (from ``output``) as JSON values, in part order, streamed.

        Raises ResultsNotReady unless the batch succeeded (``partial``: the parts done so far)."""
        from batchctl.frontend import batches, results

        batch = batches.load(self.client.store, self.id)
        sink = results.sink_of(batch, dict(self.client.settings.environ), self.client.settings.project)
        return results.records(batch, sink, partial=partial)

    def result_chunks(self, *, partial: bool = False) -> Iterator[bytes]:
        """The results' bytes (JSON lines) in part order, streamed: what ``batchctl results`` prints."""
        from batchctl.frontend import batches, results

        batch = batches.load(self.client.store, self.id)
        sink = results.sink_of(batch, dict(self.client.settings.environ), self.client.settings.project)
        return results.chunks(batch, sink, partial=partial)

    def cancel(self) -> BatchStatus:
        """Stop the batch (its Jobs and work subscription are deleted); waits until the launcher did it."""
        return self._control("cancel")

    def retry(self) -> BatchStatus:
        """Republish the dead-lettered parts and launch workers for them; waits until the launcher took it."""
        return self._control("retry")

    def _control(self, action: str) -> BatchStatus:
        from batchctl.frontend import batches

        state = batches.request(self.client.pubsub, self.client.store, self.id, action)
        return BatchStatus.from_dict(batches.describe(state, 0))


def handler_spec(handler: str | Callable[..., Any]) -> str:
    """``"module:function"`` for a handler given by name or as a module-level function."""
    if isinstance(handler, str):
        return handler
    module = getattr(handler, "__module__", None)
    name = getattr(handler, "__qualname__", "")
    if not inspect.isfunction(handler) or not module or module == "__main__" or not name.isidentifier():
        raise BadInput(f"handler {handler!r}: workers import it by name, so pass a module-level function of an "
                       "importable module, or 'module:function'")
    return f"{module}:{name}"


class _Inputs:
    """``source`` as submit inputs, and the format of records written here (None for paths)."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._file: Path | None = None

    def __enter__(self) -> tuple[list[str], str | None]:
        source = self._source
        if isinstance(source, (str, os.PathLike)):
            return [os.fspath(source)], None
        if isinstance(source, (bytes, Mapping)) or not isinstance(source, Iterable):
            raise BadInput(f"submit: source must be a path, a list of paths or an iterable of records, "
                           f"not {type(source).__name__}")
        items = source if isinstance(source, (list, tuple)) else None
        if items and all(isinstance(s, (str, os.PathLike)) for s in items):
            return [os.fspath(s) for s in items], None
        self._file = write_records(items if items is not None else source)
        return [str(self._file)], "jsonl"

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.unlink(missing_ok=True)


def write_records(records: Iterable[Any]) -> Path:
    """The records as a temporary JSONL file (one JSON value per line), streamed to disk."""
    handle, name = tempfile.mkstemp(prefix=RECORDS_FILE_PREFIX, suffix=".jsonl")
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            for at, record in enumerate(records):
                try:
                    out.write(orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS) + b"\n")
                except TypeError as exc:
                    raise BadInput(f"submit: record {at} is not JSON-serialisable: {exc}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
