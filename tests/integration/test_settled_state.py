"""Settled batches are kept apart in both stores, so a launcher taking over reads only the others.

Checks, for the file store and for ConfigMaps on the test API server (through the real client):
a running batch is listed by ``load_unsettled``; once succeeded and cleaned up it is not, but
``load``, ``load_all`` and ``settled_ends`` (its end time, without decoding the state) still
see it; a retry that reopens it brings it back; a failed batch is settled at once, a
succeeded one only once cleaned; the file store refuses to create an id a settled batch holds
and ``delete`` removes either copy; a ConfigMap saved before the label existed counts as unsettled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.core.names import Names
from batchctl.launcher.kube import Kube
from batchctl.launcher.state import FAILED, RUNNING, SUCCEEDED, BatchState
from batchctl.launcher.store import ConfigMapStore, FileStore, StateStore
from tests.support.kube_fixtures import KubeApi
from tests.unit.test_state import request

ENDED = 1_700_000_100.0


@pytest.fixture(params=["files", "configmaps"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "files":
        yield FileStore(tmp_path / "state")
        return
    kube_api: KubeApi = request.getfixturevalue("kube_api")
    yield ConfigMapStore(Kube(kube_api.namespace, kubeconfig=str(kube_api.kubeconfig)), Names("p"))


def ids(states: list[BatchState]) -> list[str]:
    return sorted(s.batch_id for s in states)


def test_a_batch_leaves_the_unsettled_list_once_settled_and_returns_on_retry(store: StateStore) -> None:
    batch = BatchState(request(4, batch_id="one"), state=RUNNING)
    assert store.create(batch)
    store.create(BatchState(request(4, batch_id="two"), state=RUNNING))
    assert ids(store.load_unsettled()) == ["one", "two"] and store.settled_ends() == {}

    batch.state, batch.finished, batch.done = SUCCEEDED, ENDED, {0, 1, 2, 3}
    store.save(batch)
    assert ids(store.load_unsettled()) == ["one", "two"], "succeeded but not cleaned up: not settled yet"
    batch.cleaned = True
    store.save(batch)
    assert ids(store.load_unsettled()) == ["two"]
    assert store.settled_ends() == {"one": ENDED}
    assert ids(store.load_all()) == ["one", "two"]
    loaded = store.load("one")
    assert loaded is not None and loaded.state == SUCCEEDED and loaded.cleaned

    loaded.state, loaded.finished = RUNNING, None  # a retry reopens it
    store.save(loaded)
    assert ids(store.load_unsettled()) == ["one", "two"] and store.settled_ends() == {}


def test_a_failed_batch_is_settled_at_once_and_delete_forgets_it(store: StateStore) -> None:
    batch = BatchState(request(4, batch_id="bad"), state=RUNNING)
    assert store.create(batch)
    batch.state, batch.finished = FAILED, ENDED
    store.save(batch)
    assert store.load_unsettled() == [] and store.settled_ends() == {"bad": ENDED}
    if isinstance(store, FileStore):
        assert not store.create(BatchState(request(4, batch_id="bad"))), "a settled batch holds its id"
    store.delete("bad")
    assert store.load("bad") is None and store.load_all() == [] and store.settled_ends() == {}


def test_a_configmap_saved_before_the_label_existed_is_unsettled(kube_api: KubeApi) -> None:
    """``settled!=true`` also selects a state without the label (written by an older launcher)."""
    kube = Kube(kube_api.namespace, kubeconfig=str(kube_api.kubeconfig))
    old = BatchState(request(4, batch_id="old"), state=SUCCEEDED, finished=ENDED, cleaned=True)
    labels = {"app.kubernetes.io/name": "batchctl", "app.kubernetes.io/component": "state",
              "batchctl.dev/batch-id": "old"}
    kube.create_configmap({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p-old-state",
                           "labels": labels}, "data": {"state.json": old.to_json()}})
    assert ids(ConfigMapStore(kube, Names("p")).load_unsettled()) == ["old"]


def test_a_batch_created_settled_is_settled(store: StateStore) -> None:
    """A request refused at once is stored already finished: retention must still find it."""
    assert store.create(BatchState(request(4, batch_id="refused"), state=FAILED, finished=ENDED))
    assert store.load_unsettled() == [] and store.settled_ends() == {"refused": ENDED}
