"""One small object up to Cloud Storage in one request, cheaply: a part's result, on the worker's hot path.

``MultipartUpload.upload`` sends what the storage client's ``Blob.upload_from_string`` sends for a
small body: one ``uploadType=multipart`` POST holding the object's resource (name, content type,
custom metadata, and the body's crc32c, so Cloud Storage refuses a body damaged on the way) and the
body. It goes to the client's endpoint over the client's own authorized session: its credentials
(``before_request``: the bearer token, refreshed when it expires) and its connection pool (the
session's adapter for that endpoint, with the session's TLS verification and client certificate).
Retries are the caller's ``retry`` (the client's predicate: connection errors, 408, 429, 5xx).

Why not ``upload_from_string``: per call it builds a resumable-media upload, trace spans, header
dicts and retry wrappers, then ``requests`` merges the session's settings into the request (runtime
protocol checks, cookie jars, hooks): 700-850 us of CPU per 9 KB object against 300 us for the same
request posted on the pool (bench/results_sink.py), on a worker whose handler may take 500 us per part.

The short path is taken only where it means the same as the session: no proxy for the endpoint
(else every request goes through ``session.request``), and a 401 answer is retried once through
``session.request``, which refreshes the credentials as it always does.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import google_crc32c
import requests
import urllib3
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from requests.utils import select_proxy

UNAUTHORIZED = 401


class MultipartUpload:
    """Create or overwrite small objects with one multipart request each (see the module)."""

    def __init__(self, session: Any, endpoint: str, retry: Retry, headers: Mapping[str, str],
                 timeout: tuple[float, float]) -> None:
        self._session = session
        self._endpoint = endpoint.rstrip("/")
        self._boundary = secrets.token_hex(16)
        self._headers = dict(headers)
        self._timeout = timeout
        self._pool_timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        self._prefix = urlsplit(self._endpoint).path  # the endpoint's own path, if any: the pool's requests need it
        self._pool = _pool(session, self._endpoint)
        self._post = retry(self._post_once)

    def upload(self, bucket: str, name: str, body: bytes, content_type: str,
               metadata: Mapping[str, str] | None) -> None:
        boundary = self._boundary
        if boundary.encode() in body:  # the delimiter must not occur in the body: one of this call's own
            boundary = secrets.token_hex(16)
        crc32c = base64.b64encode(google_crc32c.value(body).to_bytes(4, "big")).decode()
        resource: dict[str, Any] = {"name": name, "contentType": content_type, "crc32c": crc32c}
        if metadata:
            resource["metadata"] = dict(metadata)
        mark = b"--" + boundary.encode()
        data = b"".join((mark, b"\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n",
                         json.dumps(resource).encode(), b"\r\n", mark, b"\r\ncontent-type: ",
                         content_type.encode(), b"\r\n\r\n", body, b"\r\n", mark, b"--"))
        path = f"/upload/storage/v1/b/{quote(bucket, safe='')}/o?uploadType=multipart"
        headers = {**self._headers, "Content-Type": f'multipart/related; boundary="{boundary}"'}
        self._post(path, data, headers)

    def _post_once(self, path: str, data: bytes, headers: dict[str, str]) -> None:
        url = self._endpoint + path
        if self._pool is not None:
            sent = dict(headers)
            self._session.credentials.before_request(self._session._auth_request, "POST", url, sent)
            try:
                answer = self._pool.urlopen("POST", self._prefix + path, body=data, headers=sent, retries=False,
                                            timeout=self._pool_timeout, preload_content=True)
            except urllib3.exceptions.ClosedPoolError:  # the session's pool manager let it go: take its new one
                self._pool = _pool(self._session, self._endpoint)
                raise  # retryable (a PoolError), like any connection failure
            if answer.status == 200:
                return
            if answer.status != UNAUTHORIZED:
                raise gexc.from_http_status(answer.status, f"POST {url}: {_text(answer.data)}")
        response = self._session.request("POST", url, data=data, headers=headers, timeout=self._timeout)
        if response.status_code != 200:
            raise gexc.from_http_response(response)


def _pool(session: Any, endpoint: str) -> Any:
    """The session's own connection pool for ``endpoint`` (its TLS settings applied), or None where
    requests would send through a proxy (the short path would not)."""
    if select_proxy(endpoint, session.proxies) is not None:
        return None
    adapter = session.get_adapter(endpoint)
    if not hasattr(adapter, "get_connection_with_tls_context"):  # requests < 2.32.2
        return None
    request = requests.PreparedRequest()
    request.prepare(method="POST", url=endpoint + "/")
    return adapter.get_connection_with_tls_context(request, session.verify, cert=session.cert)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()[:300]
