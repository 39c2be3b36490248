"""How the launcher shapes every worker Job: image, placement, resources, lifetimes.

``JobConfig.from_env`` reads it once from the launcher's environment (in a cluster,
the ``batchctl-settings`` ConfigMap) and reports every bad variable in one
``BadInput``. A variable that is unset takes the default; a variable set to an empty
string means "none" where a field is optional (no nodeSelector, no tolerations, no
CPU limit, ...) and is an error where it is not (an empty image is a mistake, not a
request for the default).

The worker knobs (``BATCHCTL_DRAIN_BUDGET_S``, ``BATCHCTL_CONCURRENCY``,
``BATCHCTL_EMPTY_PULLS``, the names ``worker.config`` reads) are passed through to
the worker under the same names (see ``JobConfig.worker_env``), so the drain budget
the worker honours and the grace period the pod gets come from one number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from batchctl.core.errors import BadInput

DEFAULT_IMAGE = "ghcr.io/batchctl/batchctl:0.1.0"
POOL_LABEL = "batchctl.dev/pool"
POOL_VALUE = "batch"
GRACE_MARGIN_S = 10
"""Seconds between the worker's drain budget and the pod's SIGKILL: room for the exit event and nacks."""

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

DRAIN_VAR = "BATCHCTL_DRAIN_BUDGET_S"
CONCURRENCY_VAR = "BATCHCTL_CONCURRENCY"
EMPTY_PULLS_VAR = "BATCHCTL_EMPTY_PULLS"

_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_KEY_RE = re.compile(rf"^({_DNS_SUBDOMAIN}/)?{_NAME_PART}$")
_LABEL_VALUE_RE = re.compile(rf"^({_NAME_PART})?$")
_OBJECT_NAME_RE = re.compile(rf"^{_DNS_SUBDOMAIN}$")
_QUANTITY_RE = re.compile(r"^(?P<number>\d+(\.\d+)?|\.\d+)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIXES = {
    "": Decimal(1), "m": Decimal("0.001"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}  # fmt: skip


@dataclass(frozen=True)
class Toleration:
    """One pod toleration; ``value`` is None for ``operator: Exists``."""

    key: str
    value: str | None
    effect: str

    @property
    def operator(self) -> str:
        """``Exists`` (any value of the key) or ``Equal`` (exactly ``value``)."""
        return "Exists" if self.value is None else "Equal"


def _default_node_selector() -> dict[str, str]:
    return {POOL_LABEL: POOL_VALUE}


def _default_tolerations() -> tuple[Toleration, ...]:
    return (Toleration(POOL_LABEL, POOL_VALUE, "NoSchedule"),)


@dataclass(frozen=True)
class JobConfig:
    """Everything about a worker Job that is not specific to one batch."""

    image: str = DEFAULT_IMAGE
    """BATCHCTL_WORKER_IMAGE: worker image (tag or digest required). The launcher's own
    image by default, since one image serves both; a request's ``--image`` overrides it."""
    image_pull_policy: str = "IfNotPresent"
    """BATCHCTL_WORKER_IMAGE_PULL_POLICY: tags are immutable releases, so a node pulls once."""
    service_account: str = "batchctl-worker"
    """BATCHCTL_WORKER_SERVICE_ACCOUNT: the workers' own account (Pub/Sub identity, no RBAC)."""
    node_selector: Mapping[str, str] = field(default_factory=_default_node_selector)
    """BATCHCTL_NODE_SELECTOR ``k=v,k2=v2``: the label of the scale-to-zero batch pool."""
    tolerations: tuple[Toleration, ...] = field(default_factory=_default_tolerations)
    """BATCHCTL_TOLERATIONS ``key=value:Effect,key:Effect``: tolerate the batch pool's taint."""
    priority_class: str | None = "batchctl-worker"
    """BATCHCTL_PRIORITY_CLASS: below ordinary pods, above the autoscaler's expendable cutoff."""
    cpu_request: str = "500m"
    """BATCHCTL_WORKER_CPU (cores): half a core fits about 7 workers on a 4-vCPU node."""
    memory_request: str = "512Mi"
    """BATCHCTL_WORKER_MEMORY (bytes): the Python runtime plus a few 10 MB parts in flight."""
    cpu_limit: str | None = "1"
    """BATCHCTL_WORKER_CPU_LIMIT (cores): a busy handler may burst to one core, not starve a node.
    Unset while BATCHCTL_WORKER_CPU is above it, it follows the request (so do memory limits)."""
    memory_limit: str | None = "512Mi"
    """BATCHCTL_WORKER_MEMORY_LIMIT (bytes): equal to the request, so an overgrown worker is
    OOM-killed alone (and its parts redelivered) instead of getting its node under pressure."""
    scratch_size: str | None = "1Gi"
    """BATCHCTL_WORKER_SCRATCH_SIZE (bytes): sizeLimit of the /tmp emptyDir; the kubelet evicts
    a worker that outgrows it rather than letting it fill the node's disk."""
    backoff_limit: int = 6
    """BATCHCTL_BACKOFF_LIMIT (pod failures): Kubernetes' own default; disruptions never count."""
    ttl_seconds_after_finished: int = 3600
    """BATCHCTL_JOB_TTL_SECONDS (s): long enough to read logs and for the launcher to see the
    final status; the TTL controller then deletes the Job, so no cleanup thread is needed."""
    active_deadline_seconds: int | None = None
    """BATCHCTL_ACTIVE_DEADLINE_SECONDS (s): none by default; a healthy batch may run for hours."""
    drain_budget_s: int = 20
    """BATCHCTL_DRAIN_BUDGET_S (s, 0..3600): how long a SIGTERMed worker lets in-flight parts finish."""
    worker_concurrency: int | None = None
    """BATCHCTL_CONCURRENCY (parts, 1..256): unset leaves the worker's default (1)."""
    worker_empty_pulls: int | None = None
    """BATCHCTL_EMPTY_PULLS (pulls, 1..100): unset leaves the worker's drain-detection default."""
    max_parallelism: int = 50
    """BATCHCTL_MAX_PARALLELISM (pods): cluster-side cap on one Job's parallelism, whatever a
    request asks; about the example batch pool (10 nodes x ~7 workers) with room to spare."""

    @property
    def termination_grace_period_s(self) -> int:
        """The pod's grace period: the drain budget plus a margin for the exit event."""
        return self.drain_budget_s + GRACE_MARGIN_S

    def worker_env(self) -> dict[str, str]:
        """The worker knobs passed through to every worker, under the names it reads."""
        env = {DRAIN_VAR: str(self.drain_budget_s)}
        if self.worker_concurrency is not None:
            env[CONCURRENCY_VAR] = str(self.worker_concurrency)
        if self.worker_empty_pulls is not None:
            env[EMPTY_PULLS_VAR] = str(self.worker_empty_pulls)
        return env

    def with_image(self, image: str | None) -> JobConfig:
        """This config with a request's ``--image`` (None keeps the configured one).

        The image arrives in a Pub/Sub message, so it is checked like the variable:
        BadInput when it is malformed or untagged.
        """
        if image is None:
            return self
        try:
            return replace(self, image=_image(image))
        except ValueError as exc:
            raise BadInput(f"request image {image!r}: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> JobConfig:
        """Build the config from ``environ``; every bad variable is named in one BadInput."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for var, (name, parse) in ENV_VARS.items():
            raw = environ.get(var)
            if raw is None:
                continue
            try:
                values[name] = parse(raw.strip())
            except ValueError as exc:
                problems.append(f"{var}={raw!r}: {exc}")
        if not problems:
            _lift_default_limits(values, environ)
            problems = _limit_problems(cls(**values))
        if problems:
            raise BadInput("; ".join(problems))
        return cls(**values)


_LIMITS = (
    ("cpu_limit", "BATCHCTL_WORKER_CPU_LIMIT", "cpu_request", "BATCHCTL_WORKER_CPU"),
    ("memory_limit", "BATCHCTL_WORKER_MEMORY_LIMIT", "memory_request", "BATCHCTL_WORKER_MEMORY"),
)


def _lift_default_limits(values: dict[str, Any], environ: Mapping[str, str]) -> None:
    """A limit left unset follows a request raised above its default (never below it)."""
    defaults = JobConfig()
    for limit, limit_var, request, _ in _LIMITS:
        default = getattr(defaults, limit)
        if limit_var in environ or request not in values or default is None:
            continue
        if parse_quantity(values[request]) > parse_quantity(default):
            values[limit] = values[request]


def _limit_problems(config: JobConfig) -> list[str]:
    """Limits below their requests (the API server would reject every Job)."""
    problems = []
    for limit_field, limit_var, request_field, request_var in _LIMITS:
        limit, request = getattr(config, limit_field), getattr(config, request_field)
        if limit is not None and parse_quantity(limit) < parse_quantity(request):
            problems.append(f"{limit_var}={limit!r} is below {request_var}={request!r}")
    return problems


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``1.5``, ``512Mi``, ``2G``) as a number."""
    match = _QUANTITY_RE.match(text)
    if not match:
        raise ValueError("not a Kubernetes quantity (like 500m, 2, 512Mi, 1G)")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError("not a number") from exc
    return number * _SUFFIXES[match["suffix"] or ""]


def _quantity(text: str) -> str:
    if parse_quantity(text) <= 0:
        raise ValueError("must be above zero")
    return text


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, except that an empty value means None ("none")."""
    return lambda text: None if text == "" else parse(text)


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(f"must be at least {minimum}" + (f" and at most {maximum}" if maximum else ""))
        return value

    return parse


def _image(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError("must be a non-empty image reference without spaces")
    last = text.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        raise ValueError(
            "needs a tag or digest (an untagged image means ':latest', which is not reproducible)"
        )
    return text


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _object_name(text: str) -> str:
    if len(text) > 253 or not _OBJECT_NAME_RE.match(text):
        raise ValueError("not a Kubernetes object name (lowercase letters, digits, '-', '.')")
    return text


def _label_key(key: str) -> str:
    prefix = key.rpartition("/")[0]
    if len(prefix) > 253 or not _LABEL_KEY_RE.match(key):
        raise ValueError(f"{key!r} is not a label key")
    return key


def _label_value(value: str) -> str:
    if not _LABEL_VALUE_RE.match(value):
        raise ValueError(f"{value!r} is not a label value")
    return value


def _node_selector(text: str) -> dict[str, str]:
    """``k=v,k2=v2``; empty means no nodeSelector."""
    selector: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not key=value")
        selector[_label_key(key.strip())] = _label_value(value.strip())
    return selector


def _tolerations(text: str) -> tuple[Toleration, ...]:
    """``key=value:Effect`` (Equal) or ``key:Effect`` (Exists), comma-separated; empty means none."""
    tolerations = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        head, sep, effect = item.rpartition(":")
        if not sep or effect not in TAINT_EFFECTS:
            raise ValueError(
                f"{item!r} is not key=value:Effect with Effect one of {', '.join(TAINT_EFFECTS)}"
            )
        key, eq, value = head.partition("=")
        tolerations.append(Toleration(_label_key(key), _label_value(value) if eq else None, effect))
    return tuple(tolerations)


ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "BATCHCTL_WORKER_IMAGE": ("image", _image),
    "BATCHCTL_WORKER_IMAGE_PULL_POLICY": ("image_pull_policy", _choice(PULL_POLICIES)),
    "BATCHCTL_WORKER_SERVICE_ACCOUNT": ("service_account", _object_name),
    "BATCHCTL_NODE_SELECTOR": ("node_selector", _node_selector),
    "BATCHCTL_TOLERATIONS": ("tolerations", _tolerations),
    "BATCHCTL_PRIORITY_CLASS": ("priority_class", _optional(_object_name)),
    "BATCHCTL_WORKER_CPU": ("cpu_request", _quantity),
    "BATCHCTL_WORKER_MEMORY": ("memory_request", _quantity),
    "BATCHCTL_WORKER_CPU_LIMIT": ("cpu_limit", _optional(_quantity)),
    "BATCHCTL_WORKER_MEMORY_LIMIT": ("memory_limit", _optional(_quantity)),
    "BATCHCTL_WORKER_SCRATCH_SIZE": ("scratch_size", _optional(_quantity)),
    "BATCHCTL_BACKOFF_LIMIT": ("backoff_limit", _integer(0)),
    "BATCHCTL_JOB_TTL_SECONDS": ("ttl_seconds_after_finished", _integer(0)),
    "BATCHCTL_ACTIVE_DEADLINE_SECONDS": ("active_deadline_seconds", _optional(_integer(1))),
    # The worker's own ranges (worker.config.OPTIONS), so a value it would refuse never reaches a Job.
    DRAIN_VAR: ("drain_budget_s", _integer(0, 3600)),
    CONCURRENCY_VAR: ("worker_concurrency", _optional(_integer(1, 256))),
    EMPTY_PULLS_VAR: ("worker_empty_pulls", _optional(_integer(1, 100))),
    "BATCHCTL_MAX_PARALLELISM": ("max_parallelism", _integer(1)),
}
"""Every variable JobConfig reads: name -> (field, parser). Parsers raise ValueError."""
