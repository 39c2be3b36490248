"""``gs://BUCKET/PATH`` addresses: pure, without the Cloud Storage client (which only
``batchctl.core.storage`` imports, and only where a bucket is used: a worker without
``--output`` never loads it)."""

from __future__ import annotations

from batchctl.core.errors import BadInput

SCHEME = "gs://"


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
