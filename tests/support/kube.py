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
- Job defaulting (parallelism, backoffLimit, podReplacementPolicy, selector, job-name labels), name and
  label validation (422 Invalid), and a request log naming each request's RBAC verb.

Patches are JSON merge patches (strategic-merge bodies are merged the same way: lists are replaced,
not merged by key) or JSON patches. ``running_api_server()`` serves it over HTTP from a thread.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import dataclasses
import datetime
import json
import re
import secrets
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import kmock
from kmock._internal import dicts, rendering  # Response: imported, not in kmock.__all__

JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
LEASES = kmock.resource("coordination.k8s.io", "v1", "leases")

# kind, subresources: what the launcher, its state and its leader election use.
DECLARED: dict[kmock.resource, tuple[str, set[str]]] = {
    JOBS: ("Job", {"status"}),
    PODS: ("Pod", {"status"}),
    CONFIGMAPS: ("ConfigMap", set()),
    LEASES: ("Lease", set()),
}

FOREGROUND_FINALIZER = "foregroundDeletion"
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
SELECTOR_TERM = re.compile(r"^\s*(!?)([^\s!=()]+)\s*(?:(==|=|!=|\s+in\s+|\s+notin\s+)\s*(.*?))?\s*$")
Obj = dict[str, Any]
Selector = Callable[[Mapping[str, str]], bool]


@dataclasses.dataclass
class ApiRequest:
    """One request the server answered, named as RBAC names it: ``(api_group, resource, verb)``."""

    method: str
    path: str
    query: Mapping[str, str]
    api_group: str | None
    resource: str | None  # with the subresource, as in a Role: "jobs/status"
    namespace: str | None
    name: str | None
    verb: str | None  # get, list, watch, create, update, patch, delete, deletecollection
    user_agent: str
    status: int | None = None  # filled when the response is ready (a watch: when it ends)

    @property
    def rbac(self) -> tuple[str, str, str] | None:
        """``(api_group, resource, verb)`` for a resource request, None for discovery and the like."""
        if self.api_group is None or self.resource is None or self.verb is None:
            return None
        return (self.api_group, self.resource, self.verb)


@dataclasses.dataclass(frozen=True)
class _Event:
    rv: int
    resource: kmock.resource
    type: str
    object: Obj


def _now(offset: float = 0.0) -> str:
    moment = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details or None)


def _qualified(res: kmock.resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else str(res.plural)


def rbac_verb(method: str, name: str | None, query: Mapping[str, str]) -> str | None:
    """The verb RBAC checks for a request to a resource URL."""
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    named = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    if name:
        return "create" if method == "POST" else named.get(method)
    return {"POST": "create", "DELETE": "deletecollection"}.get(method)


def _split_selector(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [term for term in [*terms, current] if term.strip()]


def _selector_term(term: str) -> Selector:
    match = SELECTOR_TERM.match(term)
    if match is None:
        raise _error(400, "BadRequest", f"unable to parse requirement: {term!r}")
    negate, key, op, raw = match.group(1), match.group(2), (match.group(3) or "").strip(), match.group(4)
    values = {value.strip() for value in (raw or "").strip("() ").split(",")}
    if not op:
        return (lambda labels: key not in labels) if negate else (lambda labels: key in labels)
    if op in ("=", "=="):
        return lambda labels: labels.get(key) in values
    if op == "!=":
        return lambda labels: labels.get(key) not in values
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values  # notin


def parse_selector(text: str | None) -> Selector:
    """A label (or field) selector as a predicate over a flat mapping; empty selects everything."""
    terms = [_selector_term(term) for term in _split_selector(text or "")]
    return lambda labels: all(term(labels) for term in terms)


def _fields(obj: Obj) -> dict[str, str]:
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    fields = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
    if "phase" in status:
        fields["status.phase"] = status["phase"]
    if "nodeName" in (obj.get("spec") or {}):
        fields["spec.nodeName"] = obj["spec"]["nodeName"]
    return fields


def _validate_metadata(res: kmock.resource, obj: Obj) -> None:
    meta = obj["metadata"]
    name, problems = meta["name"], []
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: Invalid value: {name!r}: must be a lowercase RFC 1123 subdomain")
    if res == JOBS and len(name) > 63:
        problems.append(f"metadata.name: Invalid value: {name!r}: must be no more than 63 characters")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, short = key.rpartition("/")
        if (prefix and not DNS1123_SUBDOMAIN.match(prefix)) or len(short) > 63 or not LABEL_NAME.match(short):
            problems.append(f"metadata.labels: Invalid value: {key!r}: invalid label key")
        if not isinstance(value, str) or len(value) > 63 or (value and not LABEL_NAME.match(value)):
            problems.append(f"metadata.labels: Invalid value: {value!r}: invalid label value")
    if problems:
        kind = DECLARED.get(res, ("",))[0]
        raise _error(422, "Invalid", f'{kind} "{name}" is invalid: {"; ".join(problems)}', name=name)


def default_job(job: Obj) -> None:
    """Apply the defaults and generated labels a real API server gives a batch/v1 Job on create."""
    spec = job.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    meta, template = job["metadata"], spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    if not meta.get("labels"):
        meta["labels"] = dict(tmeta.get("labels") or {})
    generated = {
        "batch.kubernetes.io/controller-uid": meta["uid"],
        "batch.kubernetes.io/job-name": meta["name"],
        "controller-uid": meta["uid"],
        "job-name": meta["name"],
    }
    tmeta["labels"] = {**(tmeta.get("labels") or {}), **generated}
    spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}})


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with resourceVersions, conflicts, PUT, selectors, GC and a request log.

    Reads and writes are served on the event loop of the serving thread; the helpers for tests
    (``get``, ``items``, ``request_log``...) are safe to call from any thread.
    """

    history_limit: int = 10_000  # watch events kept for resuming watches; older ones answer 410
    _state: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _rv: int = attrs.field(default=1000, init=False)  # a real list never says "0", which means "any"
    _events: list[_Event] = attrs.field(factory=list, init=False)
    _compacted_rv: int = attrs.field(default=1000, init=False)
    _wakeups: set[asyncio.Event] = attrs.field(factory=set, init=False)
    _watch_epoch: int = attrs.field(default=0, init=False)
    _log: list[ApiRequest] = attrs.field(factory=list, init=False)
    loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # registers list/watch/fetch/create/update/delete → our overrides
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback[kmock.method.DELETE] << self._serve_delete_collection
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

    def _current(self, key: tuple[kmock.resource, str | None, str]) -> Obj | None:
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
    ) -> list[tuple[tuple[kmock.resource, str | None, str], Obj]]:
        by_labels, by_fields = parse_selector(labels), parse_selector(fields)
        found = []
        for key, stored in list(self._objects.items()):
            if key[0] != res or stored.deleted or (namespace is not None and key[1] != namespace):
                continue
            obj = stored.raw
            if name is not None and key[2] != name:
                continue
            if by_labels(obj.get("metadata", {}).get("labels") or {}) and by_fields(_fields(obj)):
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
        event: _Event,
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
            and selectors[1](_fields(event.object))
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

    # ---- writes ------------------------------------------------------------------------------------

    def _not_found(self, res: kmock.resource, name: str) -> kmock.KubernetesError:
        return _error(404, "NotFound", f'{_qualified(res)} "{name}" not found', name=name, kind=res.plural)

    def _conflict(self, res: kmock.resource, name: str) -> kmock.KubernetesError:
        return _error(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {_qualified(res)} "{name}": the object '
            "has been modified; please apply your changes to the latest version and try again",
            name=name,
            group=res.group,
            kind=res.plural,
        )

    def _record(
        self, res: kmock.resource, key: tuple[kmock.resource, str | None, str], obj: Obj, kind: str
    ) -> Obj:
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
        self._events.append(_Event(self._rv, res, kind, obj))
        if len(self._events) > self.history_limit:
            dropped = self._events[: len(self._events) - self.history_limit]
            del self._events[: len(dropped)]
            self._compacted_rv = dropped[-1].rv
        self._wake()
        return obj

    async def _serve_create(self, request: kmock.Request) -> Any:
        res = self._declared(request)
        if request.name is not None or not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "a create takes an object in the body of a collection URL")
        with self._state:
            obj = self._create(res, request.namespace, copy.deepcopy(request.data))
        return rendering.Response(status=201, payload=obj)

    def _create(self, res: kmock.resource, namespace: str | None, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace") not in (None, namespace):
            raise _error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        if not meta.get("name"):
            raise _error(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        key = (res, namespace, meta["name"])
        if self._current(key) is not None:
            raise _error(
                409,
                "AlreadyExists",
                f'{_qualified(res)} "{meta["name"]}" already exists',
                name=meta["name"],
                group=res.group,
                kind=res.plural,
            )
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(transient, None)
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        obj["apiVersion"] = f"{res.group}/{res.version}" if res.group else res.version
        obj["kind"] = DECLARED[res][0]
        _validate_metadata(res, obj)
        if res == JOBS:
            default_job(obj)
            obj["status"] = {}
        elif res == PODS:
            obj["status"] = {"phase": "Pending"}
        created = self._record(res, key, obj, "ADDED")
        if res == PODS and self._owner_gone(created):  # the GC deletes a dependent of a deleted owner
            self._delete_pod(key, created, None)
        return created

    def _owner_gone(self, pod: Obj) -> bool:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                job = self._current((JOBS, pod["metadata"]["namespace"], ref.get("name", "")))
                if (
                    job is None
                    or job["metadata"]["uid"] != ref.get("uid")
                    or job["metadata"].get("deletionTimestamp")
                ):
                    return True
        return False

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
                raise _error(422, "Invalid", f"the patch cannot be applied: {exc}") from exc
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
                raise _error(400, "BadRequest", "the name of the object does not match the name on the URL")
            proposed.setdefault("metadata", {}).setdefault("resourceVersion", "")
            if not proposed["metadata"]["resourceVersion"]:
                proposed["metadata"]["resourceVersion"] = current["metadata"][
                    "resourceVersion"
                ]  # unconditional
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
            _validate_metadata(res, result)
        result = {key: value for key, value in result.items() if value is not None}
        if result == current:
            return current  # a no-op write: no new resourceVersion, no watch event
        key = (res, request.namespace, request.name)
        meta = result["metadata"]
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and meta.get("deletionGracePeriodSeconds") == 0
        ):
            self._record(res, key, result, "MODIFIED")  # the last finalizer is gone: the deletion completes
            return self._remove(res, key)
        return self._record(res, key, result, "MODIFIED")

    # ---- deletion and garbage collection -------------------------------------------------------------

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
        key: tuple[kmock.resource, str | None, str],
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
                refs = [
                    ref for ref in pod["metadata"].get("ownerReferences", []) if ref.get("uid") != meta["uid"]
                ]
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
                    "deletionTimestamp": _now(),
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

    def _delete_pod(
        self, key: tuple[kmock.resource, str | None, str], pod: Obj, grace: int | None
    ) -> tuple[bool, Obj]:
        """A running pod on a node is deleted gracefully: marked now, removed by its kubelet (grace 0)."""
        spec, meta = pod.get("spec") or {}, pod["metadata"]
        seconds = grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30)
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if seconds == 0 or not spec.get("nodeName") or (terminal and not meta.get("deletionTimestamp")):
            return True, self._remove(PODS, key)
        if meta.get("deletionTimestamp") and seconds >= meta.get("deletionGracePeriodSeconds", 30):
            return False, pod
        marked = {**meta, "deletionTimestamp": _now(seconds), "deletionGracePeriodSeconds": seconds}
        return False, self._record(PODS, key, {**pod, "metadata": marked}, "MODIFIED")

    def _delete_dependent(self, key: tuple[kmock.resource, str | None, str]) -> None:
        if self._current(key) is not None:
            self._delete(PODS, key, "Background", None)

    def _dependents(self, job: Obj) -> list[tuple[tuple[kmock.resource, str | None, str], Obj]]:
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

    def _remove(self, res: kmock.resource, key: tuple[kmock.resource, str | None, str]) -> Obj:
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


def write_kubeconfig(path: Path, url: str, *, namespace: str = "default") -> Path:
    """A kubeconfig for plain HTTP without credentials (JSON, which is YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kmock",
        "preferences": {},
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "kmock", "user": {}}],
        "contexts": [
            {"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": namespace}}
        ],
    }
    path.write_text(json.dumps(config, indent=2))
    return path


class _ServingThread(threading.Thread):
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
        thread = _ServingThread(server)
        thread.start()
        if not thread.ready.wait(timeout) or thread.failure is not None:
            thread.stop(timeout)
            raise RuntimeError(f"the API server did not start within {timeout}s") from thread.failure
        stack.callback(thread.stop, timeout)
        yield server, write_kubeconfig(directory / "kubeconfig", thread.url, namespace=namespace)
