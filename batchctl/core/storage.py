"""The Cloud Storage seam: the only module that imports ``google.cloud.storage``.

Everything batchctl does with buckets goes through ``Storage``: list the objects of a
``gs://BUCKET/PREFIX`` source, stream one object's stored bytes, write a part's result
or a ``_SUCCESS`` manifest, read one back. SDK errors leave as batchctl's own:

    no such bucket or object, no permission (404, 401, 403)  -> BadInput (exit 2), naming it
    connection refused, timeouts, 5xx after retries          -> Unreachable (exit 3)

``STORAGE_EMULATOR_HOST`` (from the settings' environment) points the client at an
emulator, with anonymous credentials, exactly as the client itself would.
Retries: every call, uploads included, uses the client's default retry predicate
(connection errors, 429, 5xx) bounded by ``retry_s``. Uploads are retried without
``ifGenerationMatch`` on purpose: batchctl only writes deterministic objects whose
content is the same on every try, so a repeated write is harmless.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

import requests.adapters
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError, TransportError
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout as RequestsTimeout
from requests.utils import get_environ_proxies

from batchctl.core.errors import BadInput, Unreachable
from batchctl.core.gsurl import SCHEME, split_url
from batchctl.core.upload import MultipartUpload

RETRY_S = 60.0
"""How long one call keeps retrying connection errors, 429 and 5xx before it is Unreachable."""
TIMEOUT_S = (10.0, 60.0)
"""(connect, read) timeout of one HTTP request."""
QUEUE_CHUNKS = 128
"""Chunks (the client writes about 8 KiB at a time) queued between a download and its reader."""
PEEK_BUFFER_BYTES = 1 << 16
"""Buffer of the stream ``open`` returns (for ``peek``); larger reads go straight to the ranged reader."""
EMULATOR_VAR = "STORAGE_EMULATOR_HOST"


@dataclass(frozen=True)
class StoredObject:
    """One object as listed: its address, size and generation (the version read)."""

    bucket: str
    name: str
    size: int
    generation: int | None
    metadata: Mapping[str, str] | None = None

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.name}"


class Storage:
    """A lazily built ``storage.Client`` with batchctl's error mapping and bounded retries."""

    def __init__(self, environ: Mapping[str, str], *, project: str | None = None, retry_s: float = RETRY_S) -> None:
        self._environ = environ
        self._project = project
        self._retry: Retry = DEFAULT_RETRY.with_timeout(retry_s)
        self._client: Any = None
        self._buckets: dict[str, Any] = {}
        self._upload: MultipartUpload | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock, mapped("Cloud Storage"):
                if self._client is None:
                    client = _client(self._environ, self._project)
                    environment_read_once(client._http, client._connection.API_BASE_URL)
                    keep_connections(client._http, client._connection.API_BASE_URL, CONNECTIONS)
                    self._client = client
        return self._client

    def _bucket(self, name: str) -> Any:
        """The client's ``Bucket`` for ``name``, built once (no request: a handle, not a lookup)."""
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = self.client.bucket(name)
        return bucket

    def list(self, url: str) -> list[StoredObject]:
        """An object, or every object under the folder ``url`` names, in name order.

        ``gs://b/data.csv`` is that object if it exists; otherwise, as ``gs://b/data/``,
        every object below it. Folder placeholders and names starting with ``.`` or ``_``
        (``_SUCCESS``, hidden files) are left out, as Hadoop and Spark readers do.
        """
        bucket, path = split_url(url)
        with mapped(url):
            blobs = list(self.client.list_blobs(bucket, prefix=path, retry=self._retry, timeout=TIMEOUT_S))
        exact = [b for b in blobs if b.name == path and path and not path.endswith("/")]
        if not exact:
            folder = path if not path or path.endswith("/") else path + "/"
            exact = [b for b in blobs if b.name.startswith(folder) and _is_data(b.name)]
        return sorted((_stored(b) for b in exact), key=lambda o: o.name)

    def open(self, obj: StoredObject) -> BinaryIO:
        """The stored bytes of ``obj`` (the listed generation), streamed by one download request.

        A thread runs the client's ``download_to_file`` into a bounded queue that the returned
        stream reads: one request per object (the client resumes it from the last byte on a
        retryable error), memory bounded by the queue. Measured against ranged reads
        (``Blob.open``) in ``bench/gcs_source.py``: one request is faster, since each ranged
        request costs a round trip and the server's work per request. ``raw_download``: a gzip
        object comes back as stored, even when its metadata asks for decompressive transcoding.
        """
        blob = self.client.bucket(obj.bucket).blob(obj.name, generation=obj.generation)
        stream = DownloadStream(obj.url)

        def download() -> None:
            with mapped(obj.url):
                blob.download_to_file(stream.sink, raw_download=True, retry=self._retry, timeout=TIMEOUT_S)

        stream.start(download)
        return cast(BinaryIO, io.BufferedReader(stream, PEEK_BUFFER_BYTES))

    def write(self, url: str, data: bytes | IO[bytes], *, content_type: str = "application/x-ndjson",
              metadata: Mapping[str, str] | None = None) -> None:
        """Create or overwrite the object ``url`` with ``data`` (bytes or a file positioned at 0).

        Bytes go up in one multipart request (``core.upload``: the client's credentials, endpoint
        and connection pool, the same retries); a file through the client's ``upload_from_file``.
        """
        bucket, name = split_url(url)
        if isinstance(data, bytes):
            with mapped(url):
                self._uploader().upload(bucket, name, data, content_type, metadata)
            return
        blob = self._bucket(bucket).blob(name)
        if metadata:
            blob.metadata = dict(metadata)
        with mapped(url):
            blob.upload_from_file(data, content_type=content_type, retry=self._retry, timeout=TIMEOUT_S, rewind=True)

    def _uploader(self) -> MultipartUpload:
        if self._upload is None:
            client = self.client
            headers = {"User-Agent": client._connection.user_agent, "X-Goog-API-Client": client._connection.user_agent,
                       **getattr(client, "_extra_headers", {})}
            self._upload = MultipartUpload(client._http, client._connection.API_BASE_URL, self._retry, headers,
                                           TIMEOUT_S)
        return self._upload

    def read(self, url: str) -> bytes:
        """The whole object (for small ones: a manifest)."""
        bucket, name = split_url(url)
        with mapped(url):
            data: bytes = self.client.bucket(bucket).blob(name).download_as_bytes(retry=self._retry,
                                                                                   timeout=TIMEOUT_S)
        return data

    def stat(self, url: str) -> StoredObject | None:
        """The object's listing entry, or None if it does not exist (a missing bucket is BadInput)."""
        bucket, name = split_url(url)
        with mapped(url):
            blob = self.client.bucket(bucket).get_blob(name, retry=self._retry, timeout=TIMEOUT_S)
            if blob is None:
                self.check_bucket(bucket)
        return None if blob is None else _stored(blob)

    def check_bucket(self, bucket: str) -> None:
        """BadInput if the bucket does not exist or cannot be read; Unreachable if nothing answers."""
        with mapped(f"{SCHEME}{bucket}"):
            list(self.client.list_blobs(bucket, max_results=1, retry=self._retry, timeout=TIMEOUT_S))

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()


class DownloadStream(io.RawIOBase):
    """A raw stream fed by a download running on its own thread through a bounded queue.

    The thread's error (already mapped to BadInput/Unreachable) is raised by the read that
    reaches it. Closing early cancels the download: its next write raises, and it ends.
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUE_CHUNKS)
        self._pending = b""
        self._done = False
        self._cancelled = threading.Event()
        self.sink = _QueueWriter(self._queue, self._cancelled)

    def start(self, download: Callable[[], None]) -> None:
        def run() -> None:
            try:
                download()
            except BaseException as exc:  # handed to the reader, which raises it
                self._put(exc)
                return
            self._put(None)

        threading.Thread(target=run, name=f"download {self.url}", daemon=True).start()

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._done:
            item = self._queue.get()
            if item is None:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._pending = item
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        self._cancelled.set()
        super().close()


class _QueueWriter:
    """The file-like object the client downloads into: each write is one queued chunk."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None], cancelled: threading.Event) -> None:
        self._chunks = chunks
        self._cancelled = cancelled

    def write(self, data: bytes) -> int:
        while True:
            if self._cancelled.is_set():
                raise DownloadCancelled("reader closed")
            try:
                self._chunks.put(bytes(data), timeout=0.1)
                return len(data)
            except queue.Full:
                continue

    def flush(self) -> None:
        return None


class DownloadCancelled(Exception):
    """Raised inside a download whose reader went away (never reaches a caller)."""


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Turn the storage client's errors into BadInput (exit 2) or Unreachable (exit 3), naming ``what``."""
    try:
        yield
    except gexc.NotFound as exc:
        raise BadInput(f"{what}: no such bucket or object") from exc
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise BadInput(f"{what}: permission denied ({_first_line(exc)})") from exc
    except DefaultCredentialsError as exc:
        raise BadInput(f"{what}: no Google credentials found ({_first_line(exc)})") from exc
    except (gexc.RetryError, gexc.ServerError, gexc.TooManyRequests, TransportError, RequestsConnectionError,
            RequestsTimeout, ConnectionError, TimeoutError) as exc:
        raise Unreachable(f"{what}: Cloud Storage unreachable ({_first_line(exc)})") from exc
    except gexc.GoogleAPICallError as exc:
        raise BadInput(f"{what}: refused by Cloud Storage ({_first_line(exc)})") from exc


def _client(environ: Mapping[str, str], project: str | None) -> Any:
    host = environ.get(EMULATOR_VAR)
    project = project or environ.get("GOOGLE_CLOUD_PROJECT") or None
    if not host:
        return storage.Client(project=project)
    endpoint = host if host.startswith(("http://", "https://")) else f"http://{host}"
    return storage.Client(project=project or "batchctl-local", credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": endpoint})


CONNECTIONS = 64
"""Connections kept open to the endpoint: as many as a worker's writers use at once (``BATCHCTL_WRITERS``,
at most 64). ``requests`` keeps 10: an eleventh upload at once would open a connection (a TLS
handshake, against Cloud Storage) and close it after its one request. Only connections in use are opened."""


def keep_connections(session: Any, endpoint: str, size: int) -> None:
    """Let the session keep ``size`` connections to ``endpoint``: a stock ``HTTPAdapter`` with a larger
    pool is mounted for it, its retries as they were. Another adapter (google-auth's for mutual TLS) is
    left as it is."""
    adapter = session.get_adapter(endpoint)
    if type(adapter) is not requests.adapters.HTTPAdapter or getattr(adapter, "_pool_maxsize", 0) >= size:
        return
    session.mount(endpoint, requests.adapters.HTTPAdapter(
        pool_connections=getattr(adapter, "_pool_connections", requests.adapters.DEFAULT_POOLSIZE),
        pool_maxsize=size, max_retries=adapter.max_retries))


def environment_read_once(session: Any, endpoint: str) -> None:
    """Take the proxy and CA-bundle settings of the environment once, for the client's one endpoint.

    ``requests`` otherwise reads them on every request (twice: ``get_environ_proxies`` and
    ``should_bypass_proxies`` scan ``os.environ``): a third of an upload's CPU in the worker
    (bench/results_sink.py). ``HTTPS_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE`` and
    ``CURL_CA_BUNDLE`` keep their meaning; ``.netrc`` is no longer read (its basic auth would
    replace the client's bearer token anyway).
    """
    session.proxies.update(get_environ_proxies(endpoint))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False


def _stored(blob: Any) -> StoredObject:
    return StoredObject(blob.bucket.name, blob.name, int(blob.size or 0), blob.generation, blob.metadata)


def _is_data(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return bool(base) and not base.startswith((".", "_"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
