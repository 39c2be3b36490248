"""An in-memory Kubernetes API server for tests: kmock's emulator, made strict where batchctl relies on it.

``ApiServer`` subclasses ``kmock.KubernetesEmulator`` (0.8) and keeps its discovery, request parsing,
error rendering, DSL reactions (a test may still say
``server['post', kmock.resource('batch/v1/jobs')] << 500``;
such a reaction wins over the emulation and changes no state) and its ``objects`` store with history.
It replaces the emulation of reads and writes, because kmock 0.8 (see /work/shared/KMOCK.md) lacks:

- ``metadata.resourceVersion`` (one global counter, as a string), ``uid``, ``creationTimestamp``,
  ``generation`` (bumped when ``spec`` changes) on every write; ``generateName``;
- optimistic concurrency: 409 Conflict when a PATCH, PUT or delete precondition carries a stale
  ``resourceVersion``; 409 AlreadyExists on a duplicate create; a no-op write bumps nothing;
- PUT (replace), of objects and of their ``status`` subresource; writes to an object ignore its
  ``status``, writes to ``/status`` change only ``status`` (as for Jobs and Pods on a real server);
- label and field selectors on list and watch (kmock ignores them and returns everything);
- watch from a ``resourceVersion`` (replays later events only; 410 Expired once compacted),
  ``timeoutSeconds``; ``close_watches()`` and ``compact()`` let a test force a client to re-list;
- deletion as on a real server: the batch/v1 default propagation (Orphan), Background and Foreground
  garbage collection of a Job's pods (and of a pod created for a Job already gone or going), graceful
  deletion of running pods (their kubelet finishes it with grace 0); a deferred delete answers with
  the object, an immediate one with a Status (pods always answer with the object);
- Job defaulting (parallelism, backoffLimit, podReplacementPolicy, selector, job-name labels), update
  validation (``parallelism`` and ``suspend`` change on an existing Job, its template and selector do
  not), name and label validation (422 Invalid), and a request log naming each request's RBAC verb.

Patches are JSON merge patches (strategic-merge bodies are merged the same way: lists are replaced,
not merged by key) or JSON patches. ``running_api_server()`` serves it over HTTP from a thread.

The server is built in layers, one module each: ``kube_objects`` (resources, selectors, validation,
Job defaults: pure), ``kube_store`` (resourceVersions, reads, watches, the request log),
``kube_deletion`` (DELETE and garbage collection), and this module (create, patch, replace, serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import kmock
from kmock._internal import dicts, rendering  # Response: imported, not in kmock.__all__

from tests.support.kube_deletion import CollectingStore
from tests.support.kube_objects import (
    DECLARED,
    JOBS,
    PODS,
    Obj,
    api_error,
    default_job,
    qualified,
    timestamp,
    validate_job_update,
    validate_metadata,
)


@attrs.define(kw_only=True)
class ApiServer(CollectingStore):
    """kmock's Kubernetes emulator with resourceVersions, conflicts, PUT, selectors, GC and a request log.

    Reads and writes are served on the event loop of the serving thread; the helpers for tests
    (``read_object``, ``list_objects``, ``request_log``...) are safe to call from any thread.

    ``after_create`` holds callables a test adds to act the moment an object is stored, before the
    client has its answer (``(resource, object)``; e.g. SIGKILL the client between its create and
    whatever it does next). They run on the serving thread and must be quick.
    """

    after_create: list[Callable[[kmock.resource, Obj], None]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace

    async def _serve_create(self, request: kmock.Request) -> Any:
        res = self._declared(request)
        if request.name is not None or not isinstance(request.data, dict):
            raise api_error(400, "BadRequest", "a create takes an object in the body of a collection URL")
        with self._state:
            obj = self._create(res, request.namespace, copy.deepcopy(request.data))
        for hook in list(self.after_create):
            hook(res, copy.deepcopy(obj))
        return rendering.Response(status=201, payload=obj)

    def _create(self, res: kmock.resource, namespace: str | None, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace") not in (None, namespace):
            raise api_error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        if not meta.get("name"):
            raise api_error(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        key = (res, namespace, meta["name"])
        if self._current(key) is not None:
            raise api_error(
                409,
                "AlreadyExists",
                f'{qualified(res)} "{meta["name"]}" already exists',
                name=meta["name"],
                group=res.group,
                kind=res.plural,
            )
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(transient, None)
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=timestamp(), generation=1)
        obj["apiVersion"] = f"{res.group}/{res.version}" if res.group else res.version
        obj["kind"] = DECLARED[res][0]
        validate_metadata(res, obj)
        if res == JOBS:
            default_job(obj)
            obj["status"] = {}
        elif res == PODS:
            obj["status"] = {"phase": "Pending"}
        created = self._record(res, key, obj, "ADDED")
        if res == PODS and self._owner_gone(created):  # the GC deletes a dependent of a deleted owner
            self._delete_pod(key, created, None)
        return created

    async def _serve_update(self, request: kmock.Request) -> Any:
        """PATCH: a merge patch (strategic merge is merged alike) for a dict body, a JSON patch for a list."""
        res = self._declared(request)
        with self._state:
            current = self._writable(res, request)
            try:
                proposed = dicts.patch_dict(copy.deepcopy(current), request.data)
            except (
                jsonpatch.JsonPatchException,
                jsonpatch.JsonPointerException,
                ValueError,
                TypeError,
            ) as exc:
                raise api_error(422, "Invalid", f"the patch cannot be applied: {exc}") from exc
            obj = self._update(res, request, current, dict(proposed))
        return rendering.Response(status=200, payload=obj)

    async def _serve_replace(self, request: kmock.Request) -> Any:
        """PUT: replace the object (or its status); a resourceVersion in the body must be the current one."""
        res = self._declared(request)
        if request.name is None or not isinstance(request.data, dict):
            raise kmock.KubernetesEndpointNotFoundError()
        with self._state:
            current = self._writable(res, request)
            proposed = copy.deepcopy(request.data)
            if proposed.get("metadata", {}).get("name", request.name) != request.name:
                raise api_error(400, "BadRequest", "the name of the object does not match the name on the URL")
            proposed.setdefault("metadata", {}).setdefault("resourceVersion", "")
            if not proposed["metadata"]["resourceVersion"]:
                proposed["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]  # unconditional
            obj = self._update(res, request, current, proposed)
        return rendering.Response(status=200, payload=obj)

    def _writable(self, res: kmock.resource, request: kmock.Request) -> Obj:
        if request.name is None or request.subresource not in (None, "status"):
            raise kmock.KubernetesEndpointNotFoundError()
        if request.subresource == "status" and "status" not in DECLARED[res][1]:
            raise kmock.KubernetesEndpointNotFoundError()
        current = self._current((res, request.namespace, request.name))
        if current is None:
            raise self._not_found(res, request.name)
        return current

    def _update(self, res: kmock.resource, request: kmock.Request, current: Obj, proposed: Obj) -> Obj:
        assert request.name is not None
        sent = (proposed.get("metadata") or {}).get("resourceVersion")
        if sent and sent != current["metadata"]["resourceVersion"]:
            raise self._conflict(res, request.name)
        if request.subresource == "status":
            result = {**copy.deepcopy(current), "status": proposed.get("status")}
        else:
            result = {**proposed, "metadata": {**(proposed.get("metadata") or {})}}
            if "status" in DECLARED[res][1]:
                result["status"] = copy.deepcopy(current.get("status"))
            fixed = (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
            )
            result["metadata"].update({k: current["metadata"][k] for k in fixed if k in current["metadata"]})
            result["apiVersion"], result["kind"] = current["apiVersion"], current["kind"]
            if result.get("spec") != current.get("spec"):
                result["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            if res == JOBS:
                validate_job_update(current, result)
            validate_metadata(res, result)
        result = {key: value for key, value in result.items() if value is not None}
        if result == current:
            return current  # a no-op write: no new resourceVersion, no watch event
        key = (res, request.namespace, request.name)
        meta = result["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and meta.get("deletionGracePeriodSeconds") == 0:
            self._record(res, key, result, "MODIFIED")  # the last finalizer is gone: the deletion completes
            return self._remove(res, key)
        return self._record(res, key, result, "MODIFIED")


def write_kubeconfig(path: Path, url: str, *, namespace: str = "default") -> Path:
    """A kubeconfig for plain HTTP without credentials (JSON, which is YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kmock",
        "preferences": {},
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "kmock", "user": {}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": namespace}}],
    }
    path.write_text(json.dumps(config, indent=2))
    return path


class ServingThread(threading.Thread):
    """Runs the server's event loop and kmock's HTTP server; ``stop()`` ends watches, then the server."""

    def __init__(self, server: ApiServer) -> None:
        super().__init__(name="kmock-api-server", daemon=True)
        self.server = server
        self.url = ""
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            self.failure = exc
            self.ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        self.server.loop = self._loop
        async with self.server, kmock.Server(self.server, host="127.0.0.1") as http:
            self.url = f"http://127.0.0.1:{http.port}"
            self.ready.set()
            await self._stopping.wait()
            self.server._end_watches()
            await asyncio.sleep(0)  # let the streams see the end of their epoch

    def stop(self, timeout: float = 10.0) -> None:
        if self.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError(f"the API server thread did not stop within {timeout}s")


@contextlib.contextmanager
def running_api_server(
    directory: Path | None = None,
    *,
    namespace: str = "default",
    timeout: float = 10.0,
) -> Iterator[tuple[ApiServer, Path]]:
    """Serve a fresh ``ApiServer`` on 127.0.0.1:<free port>; yield it and the path of a kubeconfig for it."""
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kmock-")))
        server = ApiServer()
        thread = ServingThread(server)
        thread.start()
        if not thread.ready.wait(timeout) or thread.failure is not None:
            thread.stop(timeout)
            raise RuntimeError(f"the API server did not start within {timeout}s") from thread.failure
        stack.callback(thread.stop, timeout)
        yield server, write_kubeconfig(directory / "kubeconfig", thread.url, namespace=namespace)
