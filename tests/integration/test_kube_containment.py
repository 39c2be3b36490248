"""One batch's error is its own, on the Kubernetes backend (issue 18, findings 3 and 4).

Checks: a batch whose request names an untagged image, and one whose Job create the API server
refuses with 403 (a quota), each end ``failed`` with the reason after at most ``MAX_TRIES`` tries,
while a third batch next to them gets its Job; a state ConfigMap whose bitmap is not zlib loads
as a failed batch naming the ConfigMap, not an exception.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import kmock
import pytest

from batchctl.core.messages import BatchRequest
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.launcher.app import assemble
from batchctl.launcher.failures import MAX_TRIES
from batchctl.launcher.state import FAILED, BatchState
from tests.support.kube_fixtures import KubeApi
from tests.support.kube_objects import CONFIGMAPS, JOBS
from tests.support.launching import running_launcher
from tests.support.waiting import wait_for

QUOTA = "exceeded quota: compute-resources, requested: requests.cpu=1, limited: requests.cpu=0"


@pytest.fixture
def ksettings(env: dict[str, str], kube_api: KubeApi) -> Settings:
    return Settings.from_env(kube_api.launcher_env(env))


def refuse_job(server: kmock.KubernetesEmulator, name: str) -> list[str]:
    """Answer 403 (a quota) to every create of the Job ``name``; the list records each refusal.

    The reaction filters on the body: a callable that raised ReactionMismatchError for other
    Jobs would disable itself for good (kmock treats a mismatch as depletion)."""
    refused: list[str] = []

    def answer() -> dict[str, object]:
        refused.append(name)
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403, "reason": "Forbidden",
                "message": f'jobs "{name}" is forbidden: {QUOTA}'}

    server["post", JOBS, kmock.data({"metadata": {"name": name}})] << 403 << answer
    return refused


def pending(batch_id: str, image: str | None = None) -> BatchState:
    request = BatchRequest(batch_id=batch_id, parts=2, records=2, bytes=2, handler="m:f", image=image)
    return BatchState(request, created=request.created)


@pytest.fixture
def three_batches(ksettings: Settings) -> Iterator[None]:
    store = assemble(ksettings, elect=False).store
    for state in (pending("untagged", image="registry.example/img"), pending("quota"), pending("fine")):
        assert store.create(state)
    yield


@pytest.mark.usefixtures("three_batches")
def test_a_batch_that_cannot_launch_fails_alone(ksettings: Settings, pubsub: PubSub, kube_api: KubeApi) -> None:
    """Untagged image and 403 quota: both batches end failed with the reason, in bounded tries;
    the third batch gets its Job all the same."""
    refused = refuse_job(kube_api.server, ksettings.names.job("quota", 1))
    parts = assemble(ksettings)
    with running_launcher(ksettings, pubsub, parts=parts):
        def ended(batch_id: str) -> BatchState | None:
            batch = parts.store.load(batch_id)
            return batch if batch is not None and batch.state == FAILED else None

        untagged = wait_for(lambda: ended("untagged"), timeout=30, what="untagged to fail")
        quota = wait_for(lambda: ended("quota"), timeout=30, what="quota to fail")
        jobs = [j["metadata"]["name"] for j in kube_api.server.list_objects(JOBS, kube_api.namespace)]
    assert "registry.example/img" in untagged.reason
    assert QUOTA in quota.reason
    assert 1 <= len(refused) <= MAX_TRIES
    assert jobs == [f"{ksettings.prefix}-fine-1"]


def test_corrupt_state_configmap_loads_as_a_failed_batch(ksettings: Settings, kube_api: KubeApi) -> None:
    """A state ConfigMap whose part bitmap is not zlib: load_all gives that batch failed, naming the
    ConfigMap, next to the readable one (before: zlib.error escaped and the launcher crash-looped)."""
    store = assemble(ksettings, elect=False).store
    assert store.create(pending("ok")) and store.create(pending("broken"))
    name = ksettings.names.state_object("broken")
    cm = kube_api.server.read_object(CONFIGMAPS, kube_api.namespace, name)
    assert cm is not None
    body = json.loads(cm["data"]["state.json"])
    body["dead"] = base64.b64encode(b"not zlib").decode()
    kube_api.core.patch_namespaced_config_map(name, kube_api.namespace, {"data": {"state.json": json.dumps(body)}})
    loaded = {b.batch_id: b for b in store.load_all()}
    assert loaded["ok"].state == "pending"
    assert loaded["broken"].state == FAILED and loaded["broken"].corrupt
    assert f"ConfigMap {name}" in loaded["broken"].reason and "error" in loaded["broken"].reason


def test_state_configmap_cut_short_is_a_failed_batch_naming_it(ksettings: Settings, kube_api: KubeApi) -> None:
    """A state ConfigMap whose document is cut short (not JSON, so not even its request reads): load
    and load_all still give that batch, failed and corrupt, naming the ConfigMap (before: load said
    no such batch, load_all left it out, and a launcher that held it running dropped it, Jobs and all)."""
    store = assemble(ksettings, elect=False).store
    assert store.create(pending("ok")) and store.create(pending("cut"))
    name = ksettings.names.state_object("cut")
    cm = kube_api.server.read_object(CONFIGMAPS, kube_api.namespace, name)
    assert cm is not None
    text = cm["data"]["state.json"]
    kube_api.core.patch_namespaced_config_map(name, kube_api.namespace, {"data": {"state.json": text[:40]}})
    shown = store.load("cut")
    assert shown is not None and shown.batch_id == "cut"
    assert shown.state == FAILED and shown.corrupt
    assert "stored state unreadable" in shown.reason and f"ConfigMap {name}" in shown.reason
    loaded = {b.batch_id: b for b in store.load_unsettled()}
    assert loaded["ok"].state == "pending" and loaded["cut"].corrupt
    after = kube_api.server.read_object(CONFIGMAPS, kube_api.namespace, name)
    assert after is not None and after["data"]["state.json"] == text[:40]  # left for a human to look at
