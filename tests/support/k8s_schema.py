"""Checks on Kubernetes objects without a cluster: schema, Pod Security, RBAC, kustomize.

- ``validate(obj)``: the object against the Kubernetes OpenAPI schema of
  ``KUBERNETES_VERSION`` (kubernetes-validate, strict: unknown fields are errors).
  1.31 is the oldest minor batchctl supports: the first with ``podFailurePolicy``
  GA (it was beta, and switchable off, before), and older than any GKE release
  channel still offers. ``LATEST_VERSION`` is the newest schema bundled, checked too.
- ``pss_restricted_violations(pod_spec)``: the Pod Security Standards "restricted"
  profile (which includes "baseline"), field by field, as the admission plugin
  evaluates it; an empty list means the pod would be admitted.
- ``load_role_rules`` / ``granted`` / ``allows``: the launcher Role from rendered
  manifests, as (verb, apiGroup, resource) triples.
- ``render_kustomize(path)``: ``kubectl kustomize`` output as a list of dicts.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes import client as k8s

KUBERNETES_VERSION = "1.31"
LATEST_VERSION = ".".join(kubernetes_validate.latest_version().split(".")[:2])
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
LAUNCHER_ROLE = "batchctl-launcher"


class SchemaError(AssertionError):
    """Raised when an object does not validate; says which object, version and field."""


def as_dict(obj: Any) -> dict[str, Any]:
    """A client model (V1Job, ...) or a dict, as the API server would receive it."""
    if isinstance(obj, dict):
        return obj
    result: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(obj)
    return result


def validate(obj: Any, version: str = KUBERNETES_VERSION) -> str:
    """Validate strictly against ``version``'s schema; returns the version used."""
    data = as_dict(obj)
    try:
        return str(kubernetes_validate.validate(data, version, strict=True))
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise SchemaError(
            f"{describe(data)} invalid for Kubernetes {version} at {path}: {exc.message}"
        ) from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise SchemaError(f"{describe(data)}: {exc.message}") from None


def describe(data: Mapping[str, Any]) -> str:
    """``Kind/name`` of a rendered object, for messages and test ids."""
    return f"{data.get('kind')}/{data.get('metadata', {}).get('name')}"


def render_kustomize(path: Path | str) -> list[dict[str, Any]]:
    """Render a kustomization with ``kubectl kustomize``; FileNotFoundError if kubectl is missing."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_template_specs(objects: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template among rendered objects (Deployments, Jobs, ...), by ``Kind/name``."""
    found = {}
    for obj in objects:
        template = obj.get("spec", {}).get("template")
        if isinstance(template, dict) and "spec" in template:
            found[describe(obj)] = template
    return found


# --- Pod Security Standards: restricted (and the baseline it includes) ---------------

RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)  # fmt: skip
ALLOWED_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)


def _containers(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every container, init container and ephemeral container, with a label for messages."""
    return [
        (f"{field}[{c.get('name')}]", c)
        for field in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(field) or []
    ]


def _contexts(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The pod security context and every container's, labelled."""
    pod = [("securityContext", spec.get("securityContext") or {})]
    return pod + [
        (f"{label}.securityContext", c.get("securityContext") or {}) for label, c in _containers(spec)
    ]


def _host_namespaces_and_ports(spec: Mapping[str, Any]) -> list[str]:
    found = [f"{field} is true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    for label, container in _containers(spec):
        found += [
            f"{label} uses hostPort {p['hostPort']}"
            for p in container.get("ports") or []
            if p.get("hostPort")
        ]
    return found


def _privileged_and_host_process(spec: Mapping[str, Any]) -> list[str]:
    found = []
    for label, ctx in _contexts(spec):
        if ctx.get("privileged"):
            found.append(f"{label}.privileged is true")
        if (ctx.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{label}.windowsOptions.hostProcess is true")
        if ctx.get("procMount") not in (None, "Default"):
            found.append(f"{label}.procMount is {ctx['procMount']}")
    return found


def _volumes(spec: Mapping[str, Any]) -> list[str]:
    found = []
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume.get('name')} has type {', '.join(sorted(kinds))}")
    return found


def _selinux_apparmor_sysctls(spec: Mapping[str, Any], annotations: Mapping[str, str]) -> list[str]:
    found = []
    for label, ctx in _contexts(spec):
        selinux = ctx.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in ALLOWED_SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{label}.seLinuxOptions {selinux} is not allowed")
        apparmor = (ctx.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"{label}.appArmorProfile.type is {apparmor}")
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            found.append(f"annotation {key}={value}")
    sysctls = (spec.get("securityContext") or {}).get("sysctls") or []
    found += [f"sysctl {s.get('name')} is not safe" for s in sysctls if s.get("name") not in SAFE_SYSCTLS]
    return found


def _privilege_escalation_and_capabilities(spec: Mapping[str, Any]) -> list[str]:
    found = []
    for label, container in _containers(spec):
        ctx = container.get("securityContext") or {}
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{label}.securityContext.allowPrivilegeEscalation is not false")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{label}.securityContext.capabilities.drop lacks ALL")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            found.append(f"{label}.securityContext.capabilities.add has {', '.join(sorted(extra))}")
    return found


def _non_root(spec: Mapping[str, Any]) -> list[str]:
    pod = spec.get("securityContext") or {}
    found = [f"{label}.runAsUser is 0" for label, ctx in _contexts(spec) if ctx.get("runAsUser") == 0]
    found += [
        f"{label}.runAsNonRoot is false" for label, ctx in _contexts(spec) if ctx.get("runAsNonRoot") is False
    ]
    if pod.get("runAsNonRoot") is not True:
        found += [
            f"{label}.securityContext.runAsNonRoot is not true (nor is the pod's)"
            for label, c in _containers(spec)
            if (c.get("securityContext") or {}).get("runAsNonRoot") is not True
        ]
    return found


def _seccomp(spec: Mapping[str, Any]) -> list[str]:
    allowed = ("RuntimeDefault", "Localhost")
    found = []
    for label, ctx in _contexts(spec):
        kind = (ctx.get("seccompProfile") or {}).get("type")
        if kind is not None and kind not in allowed:
            found.append(f"{label}.seccompProfile.type is {kind}")
    if ((spec.get("securityContext") or {}).get("seccompProfile") or {}).get("type") not in allowed:
        found += [
            f"{label}.securityContext.seccompProfile is unset (nor is the pod's)"
            for label, c in _containers(spec)
            if ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type") not in allowed
        ]
    return found


def pss_restricted_violations(
    pod_spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None
) -> list[str]:
    """Every way ``pod_spec`` (camelCase, as rendered) breaks PSS restricted; empty if none."""
    return [
        *_host_namespaces_and_ports(pod_spec),
        *_privileged_and_host_process(pod_spec),
        *_volumes(pod_spec),
        *_selinux_apparmor_sysctls(pod_spec, annotations or {}),
        *_privilege_escalation_and_capabilities(pod_spec),
        *_non_root(pod_spec),
        *_seccomp(pod_spec),
    ]


# --- RBAC ----------------------------------------------------------------------------


def load_role_rules(objects: Iterable[Mapping[str, Any]], name: str = LAUNCHER_ROLE) -> list[dict[str, Any]]:
    """The rules of the Role ``name`` among rendered objects; LookupError if absent."""
    for obj in objects:
        if obj.get("kind") == "Role" and obj.get("metadata", {}).get("name") == name:
            return list(obj.get("rules") or [])
    raise LookupError(f"no Role {name} in the rendered objects")


def granted(rules: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (verb, apiGroup, resource) the rules grant, ignoring resourceNames."""
    return {
        (verb, group, resource)
        for rule in rules
        for verb in rule.get("verbs") or []
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
    }


def allows(
    rules: Iterable[Mapping[str, Any]], verb: str, group: str, resource: str, name: str | None = None
) -> bool:
    """Whether one rule grants ``verb`` on ``group/resource`` (and, if given, the object ``name``)."""
    for rule in rules:
        if (
            verb in (rule.get("verbs") or [])
            and group in (rule.get("apiGroups") or [])
            and resource in (rule.get("resources") or [])
            and (not rule.get("resourceNames") or (name is not None and name in rule["resourceNames"]))
        ):
            return True
    return False
