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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError, TransportError
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout as RequestsTimeout

from batchctl.core.errors import BadInput, Unreachable

SCHEME = "gs://"
RETRY_S = 60.0
"""How long one call keeps retrying connection errors, 429 and 5xx before it is Unreachable."""
TIMEOUT_S = (10.0, 60.0)
"""(connect, read) timeout of one HTTP request."""
READ_CHUNK_BYTES = 8 << 20
"""Ranged-read size when streaming an object: memory per open object, and requests per MB."""
EMULATOR_VAR = "STORAGE_EMULATOR_HOST"


def is_url(text: str) -> bool:
    return text.startswith(SCHEME)


def split_url(url: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> (``bucket``, ``some/prefix``); BadInput without a bucket."""
    if not is_url(url):
        raise BadInput(f"{url}: not a gs://BUCKET/PATH address")
    bucket, _, path = url[len(SCHEME) :].partition("/")
    if not bucket:
        raise BadInput(f"{url}: no bucket named (expected gs://BUCKET/PATH)")
    return bucket, path


def join_url(base: str, name: str) -> str:
    """``name`` inside the folder ``base`` (a trailing ``/`` on ``base`` is optional)."""
    return base.rstrip("/") + "/" + name


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

    @property
    def client(self) -> Any:
        if self._client is None:
            with mapped("Cloud Storage"):
                self._client = _client(self._environ, self._project)
        return self._client

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
        """The stored bytes of ``obj`` (the listed generation), streamed in ranged reads.

        ``raw_download``: a gzip object is returned compressed even when its metadata asks
        for decompressive transcoding, so the reader's gzip detection sees what is stored.
        """
        blob = self.client.bucket(obj.bucket).blob(obj.name, generation=obj.generation)
        with mapped(obj.url):
            reader = blob.open("rb", chunk_size=READ_CHUNK_BYTES, retry=self._retry, raw_download=True,
                               timeout=TIMEOUT_S)
        return cast(BinaryIO, io.BufferedReader(MappedReader(reader, obj.url), READ_CHUNK_BYTES))

    def write(self, url: str, data: bytes | IO[bytes], *, content_type: str = "application/x-ndjson",
              metadata: Mapping[str, str] | None = None) -> None:
        """Create or overwrite the object ``url`` with ``data`` (bytes or a file positioned at 0)."""
        bucket, name = split_url(url)
        blob = self.client.bucket(bucket).blob(name)
        if metadata:
            blob.metadata = dict(metadata)
        with mapped(url):
            if isinstance(data, bytes):
                blob.upload_from_string(data, content_type=content_type, retry=self._retry, timeout=TIMEOUT_S)
            else:
                blob.upload_from_file(data, content_type=content_type, retry=self._retry, timeout=TIMEOUT_S,
                                      rewind=True)

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


class MappedReader(io.RawIOBase):
    """A raw binary stream over the SDK's reader whose errors leave as batchctl's own."""

    def __init__(self, inner: Any, url: str) -> None:
        super().__init__()
        self._inner = inner
        self._url = url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with mapped(self._url):
            data: bytes = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._inner.close()
        super().close()


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


def _stored(blob: Any) -> StoredObject:
    return StoredObject(blob.bucket.name, blob.name, int(blob.size or 0), blob.generation, blob.metadata)


def _is_data(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return bool(base) and not base.startswith((".", "_"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
