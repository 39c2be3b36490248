"""The test API server's store: resourceVersions, reads, list and watch, and the request log.

``VersionedStore`` subclasses ``kmock.KubernetesEmulator`` (0.8) and keeps its discovery, request
parsing, error rendering, DSL reactions and its ``objects`` store with history; it assigns one global
``resourceVersion`` counter on every write (``_record``), serves get and list with label and field
selectors, and watch from a ``resourceVersion`` (later events only; 410 Expired once compacted;
``timeoutSeconds``). ``close_watches()`` and ``compact()`` let a test force a client to re-list.
Writes and deletions are added by ``kube_deletion.CollectingStore`` and ``kube.ApiServer``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import kmock
from kmock._internal import rendering  # Response: imported, not in kmock.__all__

from tests.support.kube_objects import (
    DECLARED,
    ApiRequest,
    Key,
    Obj,
    Selector,
    WatchEvent,
    api_error,
    object_fields,
    parse_selector,
    qualified,
    rbac_verb,
)


@attrs.define(kw_only=True)
class VersionedStore(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with resourceVersions, selectors, watches from a version and a request log.

    Reads and writes are served on the event loop of the serving thread; the helpers for tests
    (``get``, ``items``, ``request_log``...) are safe to call from any thread.
    """

    history_limit: int = 10_000  # watch events kept for resuming watches; older ones answer 410
    _state: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _rv: int = attrs.field(default=1000, init=False)  # a real list never says "0", which means "any"
    _events: list[WatchEvent] = attrs.field(factory=list, init=False)
    _compacted_rv: int = attrs.field(default=1000, init=False)
    _wakeups: set[asyncio.Event] = attrs.field(factory=set, init=False)
    _watch_epoch: int = attrs.field(default=0, init=False)
    _log: list[ApiRequest] = attrs.field(factory=list, init=False)
    loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # registers list/watch/fetch/create/update/delete → our overrides
        for res, (kind, subresources) in DECLARED.items():
            self.resources[res] = kmock.ResourceInfo(
                kind=kind,
                namespaced=True,
                singular=kind.lower(),
                subresources=subresources,
                verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
            )

    # ---- thread-safe helpers for tests -------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The last resourceVersion assigned."""
        return self._rv

    def read_object(self, res: kmock.resource, namespace: str, name: str) -> Obj | None:
        """The stored object, or None when absent."""
        with self._state:
            current = self._current((res, namespace, name))
            return copy.deepcopy(current) if current is not None else None

    def list_objects(self, res: kmock.resource, namespace: str | None = None) -> list[Obj]:
        """Every stored object of a resource (in a namespace, or in all of them)."""
        with self._state:
            return [copy.deepcopy(obj) for _, obj in self._select(res, namespace, None, "", "")]

    def request_log(self) -> list[ApiRequest]:
        """Every request answered so far, oldest first."""
        return list(self._log)

    def clear_request_log(self) -> None:
        """Forget the requests logged so far."""
        self._log.clear()

    def close_watches(self) -> None:
        """End every open watch stream now, as a real API server does from time to time."""
        self._call_in_loop(self._end_watches)

    def compact(self) -> None:
        """Forget the event history: a client resuming a watch from an older resourceVersion gets 410."""
        with self._state:
            self._events.clear()
            self._compacted_rv = self._rv
        self.close_watches()

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(fn)
        else:
            fn()

    def _end_watches(self) -> None:
        self._watch_epoch += 1
        self._wake()

    def _wake(self) -> None:
        for event in self._wakeups:
            event.set()

    # ---- request log -----------------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> Any:
        """Log the request with its RBAC verb, then serve it (user reactions first, then emulation)."""
        res = request.resource
        entry = ApiRequest(
            method=request.method.value,
            path=request.url.path,
            query=dict(request.params),
            api_group=res.group if res is not None else None,
            resource=(f"{res.plural}/{request.subresource}" if request.subresource else res.plural)
            if res is not None
            else None,
            namespace=request.namespace,
            name=request.name,
            verb=rbac_verb(request.method.value, request.name, request.params) if res is not None else None,
            user_agent=request.headers.get("User-Agent", ""),
            body=copy.deepcopy(request.data) if request.method.value in ("POST", "PUT", "PATCH") else None,
        )
        self._log.append(entry)
        try:
            response = await kmock.RawHandler._handle(self, request)  # skip kmock's own state changes
        except kmock.KubernetesError as exc:
            entry.status = exc.status
            raise
        except Exception:
            entry.status = 500
            raise
        entry.status = response.status
        return response

    # ---- reads -----------------------------------------------------------------------------------

    def _declared(self, request: kmock.Request) -> kmock.resource:
        for res in DECLARED:
            if res == request.resource:
                return res
        raise kmock.KubernetesResourceNotFoundError()

    def _current(self, key: Key) -> Obj | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _select(
        self,
        res: kmock.resource,
        namespace: str | None,
        name: str | None,
        labels: str,
        fields: str,
    ) -> list[tuple[Key, Obj]]:
        by_labels, by_fields = parse_selector(labels), parse_selector(fields)
        found = []
        for key, stored in list(self._objects.items()):
            if key[0] != res or stored.deleted or (namespace is not None and key[1] != namespace):
                continue
            obj = stored.raw
            if name is not None and key[2] != name:
                continue
            if by_labels(obj.get("metadata", {}).get("labels") or {}) and by_fields(object_fields(obj)):
                found.append((key, obj))
        return found

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        res = self._declared(request)
        if request.subresource not in (None, "status") or request.name is None:
            raise kmock.KubernetesEndpointNotFoundError()
        with self._state:
            obj = self._current((res, request.namespace, request.name))
        if obj is None:
            raise self._not_found(res, request.name)
        return rendering.Response(status=200, payload=obj)

    async def _serve_list(self, request: kmock.Request) -> Any:
        res = self._declared(request)
        params = request.params
        with self._state:
            found = self._select(
                res, request.namespace, None, params.get("labelSelector", ""), params.get("fieldSelector", "")
            )
            rv = self._rv
        kind = DECLARED[res][0]
        return rendering.Response(
            status=200,
            payload={
                "apiVersion": f"{res.group}/{res.version}" if res.group else res.version,
                "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(rv)},
                "items": [obj for _, obj in found],
            },
        )

    def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        res = self._declared(request)
        params = request.params
        labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")
        selectors = (parse_selector(labels), parse_selector(fields))  # a bad one answers 400, not a stream
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        since = params.get("resourceVersion") or "0"
        with self._state:
            if since == "0":  # "start at most recent": the current objects as ADDED, then changes
                start = self._rv
                initial = [
                    {"type": "ADDED", "object": obj}
                    for _, obj in self._select(res, request.namespace, request.name, labels, fields)
                ]
            else:
                start, initial = int(since), []
        return self._stream(request, res, start=start, initial=initial, timeout=timeout, selectors=selectors)

    async def _stream(
        self,
        request: kmock.Request,
        res: kmock.resource,
        *,
        start: int,
        initial: list[Obj],
        timeout: float | None,
        selectors: tuple[Selector, Selector],
    ) -> AsyncIterator[Any]:
        """The watch stream: the initial events, then every later matching event, until the timeout."""
        yield b""  # send the headers now, even if nothing happens
        for added in initial:
            yield added
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        epoch, last, wakeup = self._watch_epoch, start, asyncio.Event()
        self._wakeups.add(wakeup)
        try:
            while epoch == self._watch_epoch:
                wakeup.clear()
                if last < self._compacted_rv:
                    yield self._expired(last)
                    return
                pending = self._events[bisect.bisect_right(self._events, last, key=lambda event: event.rv) :]
                for event in pending:
                    last = event.rv
                    if self._matches(event, res, request, selectors):
                        yield {"type": event.type, "object": event.object}
                if pending:
                    continue
                left = deadline - loop.time() if deadline is not None else 1.0
                transport = request._raw_request.transport if request._raw_request is not None else None
                if left <= 0 or transport is None or transport.is_closing():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=min(left, 1.0))
        finally:
            self._wakeups.discard(wakeup)

    def _matches(
        self,
        event: WatchEvent,
        res: kmock.resource,
        request: kmock.Request,
        selectors: tuple[Selector, Selector],
    ) -> bool:
        meta = event.object.get("metadata", {})
        return (
            event.resource == res
            and (request.namespace is None or meta.get("namespace") == request.namespace)
            and (request.name is None or meta.get("name") == request.name)
            and selectors[0](meta.get("labels") or {})
            and selectors[1](object_fields(event.object))
        )

    def _expired(self, since: int) -> Obj:
        return {
            "type": "ERROR",
            "object": {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": f"too old resource version: {since} ({self._compacted_rv})",
            },
        }

    # ---- errors and the write primitive -------------------------------------------------------------

    def _not_found(self, res: kmock.resource, name: str) -> kmock.KubernetesError:
        return api_error(404, "NotFound", f'{qualified(res)} "{name}" not found', name=name, kind=res.plural)

    def _conflict(self, res: kmock.resource, name: str) -> kmock.KubernetesError:
        return api_error(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {qualified(res)} "{name}": the object '
            "has been modified; please apply your changes to the latest version and try again",
            name=name,
            group=res.group,
            kind=res.plural,
        )

    def _record(self, res: kmock.resource, key: Key, obj: Obj, kind: str) -> Obj:
        """Store a new version of an object (or its removal) under the next resourceVersion."""
        self._rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if kind == "DELETED":
            self._objects[key].delete()
        elif key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        self._events.append(WatchEvent(self._rv, res, kind, obj))
        if len(self._events) > self.history_limit:
            dropped = self._events[: len(self._events) - self.history_limit]
            del self._events[: len(dropped)]
            self._compacted_rv = dropped[-1].rv
        self._wake()
        return obj
