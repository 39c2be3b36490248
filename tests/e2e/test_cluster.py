"""The `cluster` ring: the whole pipeline against the cluster ``KUBECONFIG`` points to.

Skipped unless ``KUBECONFIG`` is set (``tests/conftest.py``). Nothing here is emulated on the
Kubernetes side: the launcher (in this process, Kubernetes backend) creates real Jobs, whose pods
run the worker image and drain real Pub/Sub (or an emulator both sides can reach). What it needs:

- ``KUBECONFIG``: a cluster where ``manifests/`` is applied (namespace, service accounts, Role);
- ``BATCHCTL_NAMESPACE`` (default ``batchctl``) and ``BATCHCTL_JOBS_NAMESPACE`` if workers run apart;
- ``BATCHCTL_WORKER_IMAGE``: an image with batchctl (``make image``), pullable by the nodes;
- ``GOOGLE_CLOUD_PROJECT`` with credentials for this process and Workload Identity for the
  workers, or ``PUBSUB_EMULATOR_HOST`` at an address reachable from here and from the pods (the
  ``emulator`` overlay: the launcher passes it into every worker Job).

Run: ``KUBECONFIG=~/.kube/config BATCHCTL_WORKER_IMAGE=... .venv/bin/pytest -m cluster tests/e2e/test_cluster.py``.
Checks: 40 one-record parts, the built-in handler: the batch succeeds with parts_done exact, at least
one Job ran, and the batch's Pub/Sub resources are deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from tests.support.launching import running_launcher, submit_records, wait_terminal, write_records
from tests.support.pulling import leftovers
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster_settings() -> Settings:
    """Settings from this process's environment, with a Pub/Sub prefix of this run's own."""
    environ = {"BATCHCTL_NAMESPACE": "batchctl", **os.environ, "BATCHCTL_BACKEND": "kubernetes",
               "BATCHCTL_PREFIX": "c" + secrets.token_hex(4)}
    return Settings.from_env(environ)


@pytest.fixture
def cluster_pubsub(cluster_settings: Settings) -> Iterator[PubSub]:
    client = PubSub(cluster_settings)
    try:
        yield client
    finally:
        client.close()


@pytest.mark.timeout(900)
def test_pipeline_on_a_real_cluster(cluster_settings: Settings, cluster_pubsub: PubSub, tmp_path: Path) -> None:
    """40 parts through real Jobs: succeeded, parts_done exact, the batch's topics gone."""
    path = write_records(tmp_path / "in.jsonl", [{"i": i} for i in range(40)])
    with running_launcher(cluster_settings, cluster_pubsub) as run:
        submit_records(cluster_pubsub, path, "cluster", handler="batchctl.worker.demo:handle",
                       parts_per_worker=10, max_parallelism=4)
        batch = wait_terminal(run.parts, "cluster", timeout=600)
        assert batch.state == "succeeded", batch.reason
        assert batch.done == set(range(40))
        assert batch.jobs, "no Job was recorded"
        wait_for(lambda: (run.parts.store.load("cluster") or batch).cleaned, timeout=120, what="cleanup")
    assert leftovers(cluster_pubsub, cluster_settings.prefix) == ([], [])
