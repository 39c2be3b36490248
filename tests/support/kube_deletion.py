"""Deletion and garbage collection as a real API server does them, for the test API server.

``CollectingStore`` adds DELETE (one object, and a collection) to ``kube_store.VersionedStore``:
the batch/v1 default propagation (Orphan), Background and Foreground garbage collection of a Job's
pods (and of a pod created for a Job already gone or going), graceful deletion of running pods (their
kubelet finishes it with grace 0), ``preconditions.resourceVersion`` (409 when stale); a deferred delete
answers with the object, an immediate one with a Status (pods always answer with the object).
"""

from __future__ import annotations

from typing import Any

import attrs
import kmock
from kmock._internal import rendering  # Response: imported, not in kmock.__all__

from tests.support.kube_objects import FOREGROUND_FINALIZER, JOBS, PODS, Key, Obj, timestamp
from tests.support.kube_store import VersionedStore


@attrs.define(kw_only=True)
class CollectingStore(VersionedStore):
    """The store with DELETE, propagation policies, graceful pod deletion and the Job garbage collector."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.DELETE] << self._serve_delete_collection

    async def _serve_delete(self, request: kmock.Request) -> Any:
        res = self._declared(request)
        if request.name is None or request.subresource is not None:
            raise kmock.KubernetesEndpointNotFoundError()
        options = {**(request.data if isinstance(request.data, dict) else {}), **request.params}
        with self._state:
            key = (res, request.namespace, request.name)
            current = self._current(key)
            if current is None:
                raise self._not_found(res, request.name)
            wanted = (options.get("preconditions") or {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise self._conflict(res, request.name)
            grace = options.get("gracePeriodSeconds")
            removed, obj = self._delete(
                res, key, options.get("propagationPolicy"), int(grace) if grace is not None else None
            )
        if removed and res != PODS:  # pods answer with the object (ReturnDeletedObject), others with a Status
            return rendering.Response(
                status=200,
                payload={
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": request.name,
                        "group": res.group,
                        "kind": res.plural,
                        "uid": current["metadata"]["uid"],
                    },
                },
            )
        return rendering.Response(status=200, payload=obj)  # a deferred deletion answers with the object

    async def _serve_delete_collection(self, request: kmock.Request) -> Any:
        res = self._declared(request)
        if request.name is not None:
            raise kmock.KubernetesEndpointNotFoundError()
        params = request.params
        options = {**(request.data if isinstance(request.data, dict) else {}), **params}
        with self._state:
            found = self._select(
                res, request.namespace, None, params.get("labelSelector", ""), params.get("fieldSelector", "")
            )
            for key, _ in found:
                self._delete(res, key, options.get("propagationPolicy"), None)
        return rendering.Response(
            status=200, payload={"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}
        )

    def _delete(
        self,
        res: kmock.resource,
        key: Key,
        policy: str | None,
        grace: int | None,
    ) -> tuple[bool, Obj]:
        """Delete one object as the real server would; True when it is gone now, with its last state."""
        current = self._current(key)
        assert current is not None
        if res == PODS:
            return self._delete_pod(key, current, grace)
        meta = current["metadata"]
        if meta.get("deletionTimestamp"):
            return False, current  # already being deleted: waits for its finalizers
        policy = policy or ("Orphan" if res == JOBS else "Background")  # batch/v1 orphans by default
        dependents = self._dependents(current) if res == JOBS else []
        if policy == "Orphan":
            for pod_key, pod in dependents:
                refs = [ref for ref in pod["metadata"].get("ownerReferences", []) if ref.get("uid") != meta["uid"]]
                self._record(
                    PODS,
                    pod_key,
                    {**pod, "metadata": {**pod["metadata"], "ownerReferences": refs}},
                    "MODIFIED",
                )
            dependents = []
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and dependents:
            finalizers.append(FOREGROUND_FINALIZER)
        if finalizers:
            marked = {
                **current,
                "metadata": {
                    **meta,
                    "deletionTimestamp": timestamp(),
                    "deletionGracePeriodSeconds": 0,
                    "finalizers": finalizers,
                },
            }
            obj = self._record(res, key, marked, "MODIFIED")
            for pod_key, _ in dependents:
                self._delete_dependent(pod_key)
            return self._current(key) is None, obj
        obj = self._remove(res, key)
        for pod_key, _ in dependents:
            self._delete_dependent(pod_key)
        return True, obj

    def _delete_pod(self, key: Key, pod: Obj, grace: int | None) -> tuple[bool, Obj]:
        """A running pod on a node is deleted gracefully: marked now, removed by its kubelet (grace 0)."""
        spec, meta = pod.get("spec") or {}, pod["metadata"]
        seconds = grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30)
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if seconds == 0 or not spec.get("nodeName") or (terminal and not meta.get("deletionTimestamp")):
            return True, self._remove(PODS, key)
        if meta.get("deletionTimestamp") and seconds >= meta.get("deletionGracePeriodSeconds", 30):
            return False, pod
        marked = {**meta, "deletionTimestamp": timestamp(seconds), "deletionGracePeriodSeconds": seconds}
        return False, self._record(PODS, key, {**pod, "metadata": marked}, "MODIFIED")

    def _delete_dependent(self, key: Key) -> None:
        if self._current(key) is not None:
            self._delete(PODS, key, "Background", None)

    def _dependents(self, job: Obj) -> list[tuple[Key, Obj]]:
        meta, found = job["metadata"], []
        for key, pod in self._select(PODS, meta.get("namespace"), None, "", ""):
            refs = pod["metadata"].get("ownerReferences") or []
            labels = pod["metadata"].get("labels") or {}
            owned = any(ref.get("uid") == meta["uid"] for ref in refs)
            labelled = not refs and meta["name"] in (
                labels.get("batch.kubernetes.io/job-name"),
                labels.get("job-name"),
            )
            if owned or labelled:
                found.append((key, pod))
        return found

    def _remove(self, res: kmock.resource, key: Key) -> Obj:
        current = self._current(key)
        assert current is not None
        obj = self._record(res, key, current, "DELETED")
        if res == PODS:
            self._finish_foreground_owners(obj)
        return obj

    def _finish_foreground_owners(self, pod: Obj) -> None:
        """When a Job waiting in foreground deletion has no pods left, remove it (the GC's last step)."""
        for key, job in self._select(JOBS, pod["metadata"].get("namespace"), None, "", ""):
            if FOREGROUND_FINALIZER not in (job["metadata"].get("finalizers") or []) or self._dependents(job):
                continue
            left = [f for f in job["metadata"]["finalizers"] if f != FOREGROUND_FINALIZER]
            self._record(JOBS, key, {**job, "metadata": {**job["metadata"], "finalizers": left}}, "MODIFIED")
            if not left:
                self._remove(JOBS, key)

    def _owner_gone(self, pod: Obj) -> bool:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                job = self._current((JOBS, pod["metadata"]["namespace"], ref.get("name", "")))
                if job is None or job["metadata"]["uid"] != ref.get("uid") or job["metadata"].get("deletionTimestamp"):
                    return True
        return False
