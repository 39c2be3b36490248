"""A launcher that starts while the Kubernetes API and Pub/Sub are away (found by the Kubernetes chaos
run: a leader SIGKILLed during an API outage was restarted, exited 3 at once, and crash-looped).

Checks: ``assemble`` with the API unreachable does not raise (the profiles catalog is published
later), ``Launcher.run`` with Pub/Sub unreachable does not raise (the shared topics are made
later); once both are back the launcher publishes the catalog, creates the shared subscriptions,
leads and takes a batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher import catalog
from batchctl.launcher.app import assemble
from tests.support.kube import write_kubeconfig
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import CONFIGMAPS
from tests.support.launching import running_launcher
from tests.support.proxy import FaultProxy
from tests.support.waiting import wait_for


@pytest.mark.timeout(120)
def test_launcher_started_during_api_and_pubsub_outages_waits_for_them(
    env: dict[str, str], kube_api: KubeApi, tmp_path: Path, emulator_host: str,
) -> None:
    url = json.loads(kube_api.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    with FaultProxy(url.removeprefix("http://")) as api, FaultProxy(emulator_host) as pubsub_line:
        kubeconfig = write_kubeconfig(tmp_path / "proxied", f"http://{api.address}")
        settings = Settings.from_env({**env, "BATCHCTL_BACKEND": "kubernetes", "KUBECONFIG": str(kubeconfig),
                                      "BATCHCTL_NAMESPACE": kube_api.namespace, "BATCHCTL_LEADER_ELECTION": "false",
                                      "PUBSUB_EMULATOR_HOST": pubsub_line.address})
        api.down()
        pubsub_line.down()
        parts = assemble(settings)  # before: Unreachable (publishing the profiles catalog)
        pubsub = PubSub(settings)
        try:
            with running_launcher(settings, pubsub, parts=parts) as run:
                wait_for(lambda: run.launcher._chores_at > 0, timeout=30,
                         what="the start-up steps deferred with both services away")
                assert run.thread.is_alive() and len(run.launcher.chores) == 2  # shared topics, then catalog
                api.restore()
                pubsub_line.restore()
                name = catalog.object_name(settings.names)
                wait_for(lambda: kube_api.server.read_object(CONFIGMAPS, kube_api.namespace, name), timeout=30,
                         what="the profiles catalog published once the API is back")
                wait_for(lambda: pubsub.subscription_exists(settings.names.requests_subscription), timeout=30,
                         what="the shared subscriptions made once Pub/Sub is back")
                assert run.thread.is_alive()
        finally:
            pubsub.close()
