"""Where batch state lives: one ConfigMap per batch in the cluster, or one file per batch locally.

Why ConfigMaps: namespaced (RBAC stays a Role), no CRD to install (which needs
cluster-wide rights), watchable, labelled per batch, and 1 MiB holds the part
bitmaps of millions of parts. Writes carry the resourceVersion that was read, so
a launcher that lost leadership cannot overwrite its successor's progress.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from batchctl.core.errors import BadInput
from batchctl.core.names import LABEL_BATCH, LABEL_COMPONENT, LABEL_NAME, Names
from batchctl.launcher.kube import Conflict, Kube, NotFound
from batchctl.launcher.state import BatchState, decode

STATE_KEY = "state.json"
STATE_SELECTOR = f"{LABEL_NAME}=batchctl,{LABEL_COMPONENT}=state"


class StateStore(Protocol):
    def load(self, batch_id: str) -> BatchState | None: ...
    def load_all(self) -> list[BatchState]: ...
    def create(self, state: BatchState) -> bool:
        """Store a new batch; False if one with this id exists already."""
        ...
    def save(self, state: BatchState) -> None:
        """Store ``state`` over what was loaded; Conflict if someone wrote in between."""
        ...
    def delete(self, batch_id: str) -> None:
        """Forget a batch; a missing one is fine."""
        ...


def newest_first(states: list[BatchState]) -> list[BatchState]:
    return sorted(states, key=lambda s: (s.request.created, s.batch_id), reverse=True)


class FileStore:
    """``<state_dir>/batches/<id>.json``, written atomically (temp file, then rename)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "batches"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, batch_id: str) -> Path:
        return self.dir / f"{batch_id}.json"

    def load(self, batch_id: str) -> BatchState | None:
        path = self._path(batch_id)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        state = decode(text, version=None, where=str(path))
        if state is None:
            raise BadInput(f"{path}: unreadable batch state")
        return state

    def load_all(self) -> list[BatchState]:
        states = []
        for path in self.dir.glob("*.json"):
            try:
                state = decode(path.read_text(), version=None, where=str(path))
            except OSError:
                continue
            if state is not None:
                states.append(state)
        return newest_first(states)

    def create(self, state: BatchState) -> bool:
        """Write the whole file aside, then link it into place: readers never see it half-written."""
        tmp = self._write_aside(state)
        try:
            os.link(tmp, self._path(state.batch_id))
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def save(self, state: BatchState) -> None:
        os.replace(self._write_aside(state), self._path(state.batch_id))

    def delete(self, batch_id: str) -> None:
        self._path(batch_id).unlink(missing_ok=True)

    def _write_aside(self, state: BatchState) -> str:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        with os.fdopen(fd, "w") as out:
            out.write(state.to_json())
        return tmp


class ConfigMapStore:
    """``<prefix>-<id>-state`` ConfigMaps, conditional on resourceVersion."""

    def __init__(self, kube: Kube, names: Names) -> None:
        self.kube = kube
        self.names = names

    def load(self, batch_id: str) -> BatchState | None:
        try:
            return self._decode(self.kube.get_configmap(self.names.state_object(batch_id)))
        except NotFound:
            return None

    def load_all(self) -> list[BatchState]:
        states = [self._decode(cm) for cm in self.kube.list_configmaps(STATE_SELECTOR)]
        prefixed = [s for s in states if s is not None]
        return newest_first(prefixed)

    def create(self, state: BatchState) -> bool:
        labels = {LABEL_NAME: "batchctl", LABEL_COMPONENT: "state", LABEL_BATCH: state.batch_id}
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.names.state_object(state.batch_id), "labels": labels},
            "data": {STATE_KEY: state.to_json()},
        }
        try:
            created = self.kube.create_configmap(body)
        except Conflict:
            return False
        state.version = created["metadata"].get("resourceVersion")
        return True

    def save(self, state: BatchState) -> None:
        body: dict[str, object] = {"data": {STATE_KEY: state.to_json()}}
        if state.version:
            body["metadata"] = {"resourceVersion": state.version}
        saved = self.kube.patch_configmap(self.names.state_object(state.batch_id), body)
        state.version = saved["metadata"].get("resourceVersion")

    def delete(self, batch_id: str) -> None:
        self.kube.delete_configmap(self.names.state_object(batch_id))

    def _decode(self, cm: dict[str, Any]) -> BatchState | None:
        meta = cm.get("metadata") or {}
        name = str(meta.get("name", ""))
        data = cm.get("data") or {}
        if not name.startswith(self.names.prefix + "-") or STATE_KEY not in data:
            return None
        return decode(str(data[STATE_KEY]), version=meta.get("resourceVersion"), where=f"ConfigMap {name}")

