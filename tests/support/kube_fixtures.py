"""Fixtures for tests against the emulated Kubernetes API: the served ``ApiServer`` and test kubelets.

Load them from the root conftest with ``pytest_plugins = ["tests.support.kube_fixtures"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.support.kube import ApiServer, running_api_server
from tests.support.kubelet import USER_AGENT, Kubelet


@dataclasses.dataclass(frozen=True)
class KubeApi:
    """The served API server of one test, the kubeconfig that reaches it, and a client for the test itself."""

    server: ApiServer
    kubeconfig: Path
    namespace: str
    api_client: client.ApiClient

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api_client)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def coordination(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(self.api_client)

    def launcher_env(self, env: Mapping[str, str], *, election: bool = False, **knobs: str) -> dict[str, str]:
        """``env`` for a launcher on this API server (Kubernetes backend, this kubeconfig and namespace),
        leader election on or off, plus ``BATCHCTL_<KNOB>`` variables (``empty_pulls="2"``)."""
        return {**env, "BATCHCTL_BACKEND": "kubernetes", "KUBECONFIG": str(self.kubeconfig),
                "BATCHCTL_NAMESPACE": self.namespace, "BATCHCTL_LEADER_ELECTION": "true" if election else "false",
                **{f"BATCHCTL_{k.upper()}": v for k, v in knobs.items()}}

    def job_creates(self) -> list[tuple[str, int | None]]:
        """(name, status) of every Job create not made by a test kubelet: the launcher's Jobs, 409s included."""
        return [(r.body["metadata"]["name"], r.status) for r in self.server.request_log()
                if r.rbac == ("batch", "jobs", "create") and r.user_agent != USER_AGENT]

    def jobs_created(self) -> list[str]:
        """Names of the Jobs the launcher created (answered 201): the Job count of a batch."""
        return [name for name, status in self.job_creates() if status == 201]


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[KubeApi]:
    """A fresh API server on 127.0.0.1:<free port> for this test, with a kubeconfig in ``tmp_path``."""
    with running_api_server(tmp_path, namespace="default") as (server, kubeconfig):
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            yield KubeApi(server, kubeconfig, "default", api_client)
        finally:
            api_client.close()


@pytest.fixture
def make_kubelet(kube_api: KubeApi, tmp_path: Path) -> Iterator[Callable[..., Kubelet]]:
    """Start test kubelets against ``kube_api`` (options as for ``Kubelet``); they stop before the server."""
    started: list[Kubelet] = []

    def make(**options: Any) -> Kubelet:
        options.setdefault("namespace", kube_api.namespace)
        options.setdefault("log_dir", tmp_path)
        kubelet = Kubelet(kube_api.kubeconfig, **options).start()
        started.append(kubelet)
        return kubelet

    try:
        yield make
    finally:
        for kubelet in reversed(started):
            kubelet.stop()
