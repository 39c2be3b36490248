"""Where batch state lives: one ConfigMap per batch in the cluster, or one file per batch locally.

Why ConfigMaps: namespaced (RBAC stays a Role), no CRD to install (which needs
cluster-wide rights), watchable, labelled per batch, and 1 MiB holds the part
bitmaps of millions of parts. Writes carry the resourceVersion that was read, so
a launcher that lost leadership cannot overwrite its successor's progress.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from batchctl.core.errors import BadInput
from batchctl.core.names import LABEL_BATCH, LABEL_COMPONENT, LABEL_NAME, Names
from batchctl.launcher.kube import Conflict, Kube, NotFound
from batchctl.launcher.state import CANCELLED, SUCCEEDED, TERMINAL, BatchState, decode

STATE_KEY = "state.json"
STATE_SELECTOR = f"{LABEL_NAME}=batchctl,{LABEL_COMPONENT}=state"
LABEL_SETTLED = "batchctl.dev/settled"
"""``"true"`` on the state of a settled batch: a taking-over launcher lists the others only."""
ANNOTATION_ENDED = "batchctl.dev/ended"
"""When a settled batch ended (Unix seconds): what retention reads without decoding the state."""


def settled(state: BatchState) -> bool:
    """Finished and cleaned up: nothing left for a launcher to do but forget it after retention.
    A corrupt record is never settled: it stays in view for a human."""
    if state.state not in TERMINAL or state.corrupt:
        return False
    return not (state.state in (SUCCEEDED, CANCELLED) and not state.cleaned)


def ended(state: BatchState) -> float:
    """When the batch ended (its creation time for a record that lacks it)."""
    return state.finished or state.created or state.request.created


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
    def load_unsettled(self) -> list[BatchState]:
        """Every batch not ``settled``: what a launcher taking over must hold (no settled one is decoded)."""
        ...
    def settled_ends(self) -> dict[str, float]:
        """Settled batch id -> when it ended, read without decoding the states (for retention)."""
        ...


def newest_first(states: list[BatchState]) -> list[BatchState]:
    return sorted(states, key=lambda s: (s.request.created, s.batch_id), reverse=True)


class FileStore:
    """``<state_dir>/batches/<id>.json``, written atomically (temp file, then rename); a settled
    batch's file lives in ``batches/settled/``, its modification time set to when it ended."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "batches"
        self.settled_dir = self.dir / "settled"
        self.settled_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, batch_id: str, *, settled: bool = False) -> Path:
        return (self.settled_dir if settled else self.dir) / f"{batch_id}.json"

    def load(self, batch_id: str) -> BatchState | None:
        found = [p for p in (self._path(batch_id), self._path(batch_id, settled=True)) if p.exists()]
        if not found:
            return None
        path = max(found, key=lambda p: p.stat().st_ctime_ns)  # both for a moment while moving: the newer
        try:
            text = path.read_text()
        except FileNotFoundError:
            return self.load(batch_id)  # moved between the two folders meanwhile
        state = decode(text, version=None, where=str(path), batch_id=batch_id)
        if state is None:
            raise BadInput(f"{path}: unreadable batch state")
        return state

    def load_all(self) -> list[BatchState]:
        return newest_first(self._decode_all(self.dir) + self._decode_all(self.settled_dir))

    def load_unsettled(self) -> list[BatchState]:
        return newest_first(self._decode_all(self.dir))

    def settled_ends(self) -> dict[str, float]:
        ends = {}
        for path in self.settled_dir.glob("*.json"):
            with contextlib.suppress(OSError):
                ends[path.stem] = path.stat().st_mtime
        return ends

    def _decode_all(self, folder: Path) -> list[BatchState]:
        states = []
        for path in folder.glob("*.json"):
            try:
                state = decode(path.read_text(), version=None, where=str(path), batch_id=path.stem)
            except OSError:
                continue
            if state is not None:
                states.append(state)
        return states

    def create(self, state: BatchState) -> bool:
        """Write the whole file aside, then link it into place: readers never see it half-written."""
        now_settled = settled(state)
        if self._path(state.batch_id, settled=not now_settled).exists():
            return False
        tmp = self._write_aside(state, now_settled=now_settled)
        try:
            os.link(tmp, self._path(state.batch_id, settled=now_settled))
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def save(self, state: BatchState) -> None:
        """Into ``settled/`` once settled (then the other copy goes), back out if a retry reopens it."""
        now_settled = settled(state)
        tmp = self._write_aside(state, now_settled=now_settled)
        os.replace(tmp, self._path(state.batch_id, settled=now_settled))
        self._path(state.batch_id, settled=not now_settled).unlink(missing_ok=True)

    def delete(self, batch_id: str) -> None:
        self._path(batch_id).unlink(missing_ok=True)
        self._path(batch_id, settled=True).unlink(missing_ok=True)

    def _write_aside(self, state: BatchState, *, now_settled: bool) -> str:
        """A temp file with the state; a settled one's modification time is when it ended."""
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        with os.fdopen(fd, "w") as out:
            out.write(state.to_json())
        if now_settled:
            os.utime(tmp, (ended(state), ended(state)))
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
        return self._load(STATE_SELECTOR)

    def load_unsettled(self) -> list[BatchState]:
        """``!=`` also selects states saved before the label existed."""
        return self._load(f"{STATE_SELECTOR},{LABEL_SETTLED}!=true")

    def settled_ends(self) -> dict[str, float]:
        ends = {}
        for cm in self.kube.list_configmaps(f"{STATE_SELECTOR},{LABEL_SETTLED}=true"):
            meta = cm.get("metadata") or {}
            batch_id = (meta.get("labels") or {}).get(LABEL_BATCH, "")
            with contextlib.suppress(TypeError, ValueError):
                if str(meta.get("name", "")) == self.names.state_object(batch_id):
                    ends[batch_id] = float((meta.get("annotations") or {})[ANNOTATION_ENDED])
        return ends

    def _load(self, selector: str) -> list[BatchState]:
        states = [self._decode(cm) for cm in self.kube.list_configmaps(selector)]
        return newest_first([s for s in states if s is not None])

    def create(self, state: BatchState) -> bool:
        meta = self._settled_meta(state)
        meta["labels"] = {LABEL_NAME: "batchctl", LABEL_COMPONENT: "state", LABEL_BATCH: state.batch_id,
                          **meta["labels"]}
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.names.state_object(state.batch_id), **meta},
            "data": {STATE_KEY: state.to_json()},
        }
        try:
            created = self.kube.create_configmap(body)
        except Conflict:
            return False
        state.version = created["metadata"].get("resourceVersion")
        return True

    def save(self, state: BatchState) -> None:
        meta: dict[str, Any] = self._settled_meta(state)
        if state.version:
            meta["resourceVersion"] = state.version
        body: dict[str, object] = {"data": {STATE_KEY: state.to_json()}, "metadata": meta}
        saved = self.kube.patch_configmap(self.names.state_object(state.batch_id), body)
        state.version = saved["metadata"].get("resourceVersion")

    def delete(self, batch_id: str) -> None:
        self.kube.delete_configmap(self.names.state_object(batch_id))

    @staticmethod
    def _settled_meta(state: BatchState) -> dict[str, Any]:
        """The settled label (and, once settled, the end time) that every write carries."""
        meta: dict[str, Any] = {"labels": {LABEL_SETTLED: str(settled(state)).lower()}}
        if settled(state):
            meta["annotations"] = {ANNOTATION_ENDED: repr(ended(state))}
        return meta

    def _decode(self, cm: dict[str, Any]) -> BatchState | None:
        meta = cm.get("metadata") or {}
        name = str(meta.get("name", ""))
        data = cm.get("data") or {}
        if not name.startswith(self.names.prefix + "-") or STATE_KEY not in data:
            return None
        batch_id = str((meta.get("labels") or {}).get(LABEL_BATCH, ""))
        known = batch_id if name == self.names.state_object(batch_id) else None
        return decode(str(data[STATE_KEY]), version=meta.get("resourceVersion"), where=f"ConfigMap {name}",
                      batch_id=known)

