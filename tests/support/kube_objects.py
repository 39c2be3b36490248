"""The Kubernetes object rules the test API server applies: resources, selectors, validation, defaults.

Pure functions and records shared by ``kube_store`` (reads, watches, the request log), ``kube_deletion``
(deletion and garbage collection) and ``kube`` (creates and updates): which resources are served and
their kinds, the RBAC verb of a request, label and field selectors, name and label validation (422
Invalid, as a real API server answers) and the defaults a real server gives a batch/v1 Job on create.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import kmock

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
Key = tuple[kmock.resource, str | None, str]  # (resource, namespace, name)
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
    body: Any = None  # what a create, replace or patch sent, as the client serialised it
    received: float = dataclasses.field(default_factory=time.monotonic)  # when it arrived (monotonic)

    @property
    def rbac(self) -> tuple[str, str, str] | None:
        """``(api_group, resource, verb)`` for a resource request, None for discovery and the like."""
        if self.api_group is None or self.resource is None or self.verb is None:
            return None
        return (self.api_group, self.resource, self.verb)


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    rv: int
    resource: kmock.resource
    type: str
    object: Obj


def timestamp(offset: float = 0.0) -> str:
    moment = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details or None)


def qualified(res: kmock.resource) -> str:
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
        raise api_error(400, "BadRequest", f"unable to parse requirement: {term!r}")
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


def object_fields(obj: Obj) -> dict[str, str]:
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    fields = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
    if "phase" in status:
        fields["status.phase"] = status["phase"]
    if "nodeName" in (obj.get("spec") or {}):
        fields["spec.nodeName"] = obj["spec"]["nodeName"]
    return fields


def validate_metadata(res: kmock.resource, obj: Obj) -> None:
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
        raise api_error(422, "Invalid", f'{kind} "{name}" is invalid: {"; ".join(problems)}', name=name)


def default_job(job: Obj) -> None:
    """Apply the defaults and generated labels a real API server gives a batch/v1 Job on create."""
    spec = job.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
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


JOB_IMMUTABLE = ("selector", "template", "completionMode", "podFailurePolicy", "podReplacementPolicy")


def validate_job_update(current: Obj, proposed: Obj) -> None:
    """422 for a change the batch/v1 validation forbids on an existing Job.

    ``parallelism`` and ``suspend`` stay mutable: "the requested parallelism (.spec.parallelism) can be
    set to any non-negative value ... If it is specified as 0, then the Job is effectively paused until
    it is increased" (kubernetes.io/docs/concepts/workloads/controllers/job/#controlling-parallelism),
    and a Job is suspended and resumed by updating ``.spec.suspend`` (#suspending-a-job). ``completions``
    is immutable outside Indexed Jobs. Not modelled: the template's scheduling directives, which may
    change on a suspended Job that never started (what Kueue does on admission).
    """
    old, new, name = current.get("spec") or {}, proposed.get("spec") or {}, current["metadata"]["name"]
    fields = [f for f in (*JOB_IMMUTABLE, "completions") if old.get(f) != new.get(f)]
    if new.get("completionMode") == "Indexed" and "completions" in fields:
        fields.remove("completions")
    parallelism = new.get("parallelism", 0)
    problems = [f"spec.{f}: Invalid value: field is immutable" for f in fields]
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 0:
        problems.append(f"spec.parallelism: Invalid value: {parallelism!r}: must be greater than or equal to 0")
    if problems:
        raise api_error(422, "Invalid", f'Job.batch "{name}" is invalid: {"; ".join(problems)}', name=name)
