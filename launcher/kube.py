"""The one seam to the Kubernetes API (besides the model classes ``jobspec`` builds).

Loads configuration once (in-cluster, else ``KUBECONFIG``), and turns API errors
into batchctl's: 409 → ``Conflict`` (already exists, or a stale resourceVersion),
404 → ``NotFound``, connection failures → ``Unreachable`` naming the server.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from batchctl.core.errors import BatchctlError, Unreachable

REQUEST_TIMEOUT_S = 10


class Conflict(BatchctlError):
    """Raised when a create finds the name taken, or a write carries a stale resourceVersion."""


class NotFound(BatchctlError):
    """Raised when the named object does not exist."""


class Kube:
    """Typed calls on Jobs, ConfigMaps and Leases of one namespace."""

    def __init__(self, namespace: str, *, kubeconfig: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.namespace = namespace
        env = os.environ if environ is None else environ
        try:
            if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in env:
                config.load_incluster_config()
                api_client = client.ApiClient()
            else:
                cfg = client.Configuration()
                config.load_kube_config(config_file=kubeconfig or env.get("KUBECONFIG"),
                                        client_configuration=cfg)
                api_client = client.ApiClient(cfg)
        except (config.ConfigException, OSError, TypeError) as exc:
            raise Unreachable(f"cannot load Kubernetes configuration: {exc}") from exc
        self.host = api_client.configuration.host
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"{fn.__name__}: conflict: {exc.reason}") from exc
            if exc.status == 404:
                raise NotFound(f"{fn.__name__}: not found") from exc
            if exc.status in (0, 500, 502, 503, 504):
                raise Unreachable(f"Kubernetes API at {self.host} answered {exc.status}") from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(f"cannot reach the Kubernetes API at {self.host}: {type(exc).__name__}") from exc

    # ---- Jobs ----------------------------------------------------------------------
    def create_job(self, body: dict[str, Any]) -> None:
        """Create a Job; Conflict if its name exists (the caller counts that as launched)."""
        self._call(self.batch.create_namespaced_job, self.namespace, body)

    def list_jobs(self, selector: str) -> list[dict[str, Any]]:
        result = self._call(self.batch.list_namespaced_job, self.namespace, label_selector=selector,
                            _preload_content=False)
        return list(json.loads(result.data).get("items", []))

    def watch_jobs(self, selector: str, *, timeout_s: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, Job as a dict) until the server ends the watch or ``timeout_s`` passes."""
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
