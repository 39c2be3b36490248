"""The one seam to the Kubernetes API (besides the model classes ``jobspec`` builds).

Loads configuration once (in-cluster, else ``KUBECONFIG``), and turns every API error
into one of batchctl's, so no ``ApiException`` escapes this module:

    BatchctlError
    ├── Conflict        409: the name is taken, or a write carried a stale resourceVersion
    ├── NotFound        404
    ├── Refused         any other 4xx: the server will answer the same again (permanent)
    │   ├── Forbidden   401, 403: credentials, RBAC, a quota or an admission webhook said no
    │   └── Invalid     422: the object breaks validation or an admission policy
    └── Unreachable     0, 5xx, connection failures (retryable; exit 3)
        └── Throttled   429: API Priority and Fairness asks to come back after ``retry_after_s``

A 429's Retry-After holds for every later call of the same kind (the same client method; a Job
list and a Job watch are one kind): until it has passed, such a call raises ``Throttled`` at once,
for the time left, without sending anything. So every path that meets a 429 honours it, whichever
path retries first.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from batchctl.core.errors import BatchctlError, Unreachable

REQUEST_TIMEOUT_S = 10
CONNECT_RETRIES = urllib3.Retry(total=3, read=0, status=0, redirect=0, respect_retry_after_header=False)
"""Retry only where the request never reached the server. urllib3's default would also sleep out
a 429's Retry-After inside the call (blocking a Lease renew for up to minutes); here a 429 is
``Throttled`` at once and the caller decides how long to wait."""


class Conflict(BatchctlError):
    """Raised when a create finds the name taken, or a write carries a stale resourceVersion."""


class NotFound(BatchctlError):
    """Raised when the named object does not exist."""


class Refused(BatchctlError):
    """Raised when the API server refuses a request in a way that repeating it will not change
    (a 4xx other than 404, 409 and 429); ``status`` and the server's own message are kept."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class Forbidden(Refused):
    """Raised on 401 or 403: the credentials, the Role, a ResourceQuota or an admission webhook said no."""


class Invalid(Refused):
    """Raised on 422: the object breaks the schema or a ValidatingAdmissionPolicy."""


class Throttled(Unreachable):
    """Raised on 429 Too Many Requests; ``retry_after_s`` is the server's Retry-After (1 s if absent)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


MAX_RETRY_AFTER_S = 60.0
"""A Retry-After beyond this is capped: a leader must keep renewing its Lease."""


def retry_after(headers: Any) -> float:
    """Seconds from a Retry-After header (a number of seconds; absent or a date: 1 s)."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(str(value))))
    except (TypeError, ValueError):
        return 1.0


def server_message(exc: ApiException) -> str:
    """The ``message`` of the Status the server sent, else its HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or "")


STATUS_ERRORS: dict[int, type[Refused]] = {401: Forbidden, 403: Forbidden, 422: Invalid}


def api_error(exc: ApiException, what: str, host: str) -> BatchctlError:
    """The batchctl error for an API error status (see the module docstring)."""
    status = int(exc.status or 0)
    detail = f"{what}: {status} {server_message(exc)}".rstrip()
    if status == 409:
        return Conflict(f"{what}: conflict: {exc.reason}")
    if status == 404:
        return NotFound(f"{what}: not found")
    if status == 429:
        return Throttled(f"Kubernetes API at {host} is throttling ({detail})", retry_after_s=retry_after(exc.headers))
    if 400 <= status < 500:
        return STATUS_ERRORS.get(status, Refused)(detail, status=status)
    return Unreachable(f"Kubernetes API at {host} answered {status}")


class Kube:
    """Typed calls on Jobs, ConfigMaps and Leases of one namespace."""

    def __init__(self, namespace: str, *, kubeconfig: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.namespace = namespace
        env = os.environ if environ is None else environ
        try:
            cfg = client.Configuration()
            if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in env:
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(config_file=kubeconfig or env.get("KUBECONFIG"),
                                        client_configuration=cfg)
        except (config.ConfigException, OSError, TypeError) as exc:
            raise Unreachable(f"cannot load Kubernetes configuration: {exc}") from exc
        cfg.retries = CONNECT_RETRIES
        api_client = client.ApiClient(cfg)
        self.host = api_client.configuration.host
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self._not_before: dict[str, float] = {}
        """Client method name -> monotonic time its last 429's Retry-After ends."""
        self._throttle_lock = threading.Lock()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
        self._wait_out(fn.__name__)
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise self._throttled(fn.__name__, api_error(exc, fn.__name__, self.host)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(f"cannot reach the Kubernetes API at {self.host}: {type(exc).__name__}") from exc

    def _wait_out(self, kind: str) -> None:
        """Throttled, for the time left, while a 429's Retry-After on this kind of call runs."""
        with self._throttle_lock:
            left = self._not_before.get(kind, 0.0) - time.monotonic()
        if left > 0:
            raise Throttled(f"Kubernetes API at {self.host} asked to wait before {kind} ({left:.1f}s left)",
                            retry_after_s=left)

    def _throttled(self, kind: str, error: BatchctlError) -> BatchctlError:
        """Note a 429's Retry-After for later calls of ``kind``; the error, unchanged."""
        if isinstance(error, Throttled):
            with self._throttle_lock:
                self._not_before[kind] = time.monotonic() + error.retry_after_s
        return error

    # ---- Jobs ----------------------------------------------------------------------
    def create_job(self, body: dict[str, Any]) -> None:
        """Create a Job; Conflict if its name exists (the caller counts that as launched)."""
        self._call(self.batch.create_namespaced_job, self.namespace, body)

    def list_jobs(self, selector: str) -> list[dict[str, Any]]:
        result = self._call(self.batch.list_namespaced_job, self.namespace, label_selector=selector,
                            _preload_content=False)
        return list(json.loads(result.data).get("items", []))

    def patch_job(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a Job (e.g. ``{"spec": {"parallelism": n}}``); the Job as the server stored it."""
        result = self._call(self.batch.patch_namespaced_job, name, self.namespace, body, _preload_content=False)
        return dict(json.loads(result.data))

    def watch_jobs(self, selector: str, *, timeout_s: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, Job as a dict) until the server ends the watch or ``timeout_s`` passes."""
        kind = self.batch.list_namespaced_job.__name__  # a watch is a list with ?watch=true
        self._wait_out(kind)
        stream = watch.Watch().stream(
            self.batch.list_namespaced_job, self.namespace, label_selector=selector,
            timeout_seconds=timeout_s, _request_timeout=timeout_s + 5,
        )
        try:
            for event in stream:
                obj = event["object"]
                raw = obj if isinstance(obj, dict) else self.batch.api_client.sanitize_for_serialization(obj)
                yield str(event["type"]), raw
        except ApiException as exc:  # 410 Gone: the caller re-lists
            if exc.status == 429:
                raise self._throttled(kind, api_error(exc, "watch_namespaced_job", self.host)) from exc
            raise Unreachable(f"watch on the Kubernetes API at {self.host} ended: {exc.status}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(f"watch on the Kubernetes API at {self.host} broke: {exc}") from exc

    def delete_job(self, name: str) -> None:
        """Delete a Job and, with foreground propagation, its pods; a missing Job is fine."""
        with contextlib.suppress(NotFound):
            # A real server answers a foreground delete with the Job itself, which client 37's
            # response model rejects after the delete succeeded: don't decode the answer.
            self._call(self.batch.delete_namespaced_job, name, self.namespace,
                       body=client.V1DeleteOptions(propagation_policy="Foreground"), _preload_content=False)

    # ---- ConfigMaps (batch state) --------------------------------------------------
    def create_configmap(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._plain(self._call(self.core.create_namespaced_config_map, self.namespace, body))

    def get_configmap(self, name: str) -> dict[str, Any]:
        return self._plain(self._call(self.core.read_namespaced_config_map, name, self.namespace))

    def list_configmaps(self, selector: str) -> list[dict[str, Any]]:
        result = self._call(self.core.list_namespaced_config_map, self.namespace, label_selector=selector)
        return [self._plain(item) for item in result.items]

    def delete_configmap(self, name: str) -> None:
        """Delete a ConfigMap; a missing one is fine."""
        with contextlib.suppress(NotFound):
            self._call(self.core.delete_namespaced_config_map, name, self.namespace, _preload_content=False)

    def patch_configmap(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch; a ``metadata.resourceVersion`` in ``body`` makes it conditional."""
        return self._plain(self._call(self.core.patch_namespaced_config_map, name, self.namespace, body))

    # ---- Leases (leader election) ----------------------------------------------------
    def get_lease(self, name: str) -> dict[str, Any]:
        return self._plain(self._call(self.coordination.read_namespaced_lease, name, self.namespace))

    def create_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._plain(self._call(self.coordination.create_namespaced_lease, self.namespace, body))

    def patch_lease(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._plain(self._call(self.coordination.patch_namespaced_lease, name, self.namespace, body))

    def _plain(self, obj: Any) -> dict[str, Any]:
        return dict(self.batch.api_client.sanitize_for_serialization(obj))
