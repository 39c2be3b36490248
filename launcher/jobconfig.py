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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from batchctl.core import kubevalues
from batchctl.core.errors import BadInput
from batchctl.core.kubevalues import Toleration, parse_quantity
from batchctl.core.profiles import DEFAULT_PROFILE, Profile

DEFAULT_IMAGE = "ghcr.io/batchctl/batchctl:0.1.0"
POOL_LABEL = "batchctl.dev/pool"
POOL_VALUE = "batch"
GRACE_MARGIN_S = 10
"""Seconds between the worker's drain budget and the pod's SIGKILL: room for the exit event and nacks."""

PULL_POLICIES = ("Always", "IfNotPresent", "Never")

DRAIN_VAR = "BATCHCTL_DRAIN_BUDGET_S"
CONCURRENCY_VAR = "BATCHCTL_CONCURRENCY"
EMPTY_PULLS_VAR = "BATCHCTL_EMPTY_PULLS"
PART_TIMEOUT_VAR = "BATCHCTL_PART_TIMEOUT_S"
PROFILE_ONLY_FIELDS = ("extended_resources", "part_timeout_s")
"""Fields set only by a worker profile (``core.profiles``), never by a variable."""


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
    extended_resources: Mapping[str, str] = field(default_factory=dict)
    """From a profile only (``nvidia.com/gpu: "1"``): set as both request and limit."""
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
    part_timeout_s: int | None = None
    """From the profile (``part_timeout_s``): BATCHCTL_PART_TIMEOUT_S of the workers; unset leaves
    the worker's default (2 h)."""
    worker_concurrency: int | None = None
    """BATCHCTL_CONCURRENCY (parts, 1..256): unset leaves the worker's default (1)."""
    worker_empty_pulls: int | None = None
    """BATCHCTL_EMPTY_PULLS (pulls, 1..100): unset leaves the worker's drain-detection default."""
    max_parallelism: int = 50
    """BATCHCTL_MAX_PARALLELISM (pods): cluster-side cap on one Job's parallelism, whatever a
    request asks; about the example batch pool (10 nodes x ~7 workers) with room to spare."""
    kueue_queue: str | None = None
    """BATCHCTL_KUEUE_QUEUE (a LocalQueue name): Jobs are created suspended with the label
    ``kueue.x-k8s.io/queue-name`` and Kueue admits them; unset, Jobs start at once."""

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
        if self.part_timeout_s is not None:
            env[PART_TIMEOUT_VAR] = str(self.part_timeout_s)
        return env

    def default_profile(self) -> Profile:
        """The one profile offered without a profiles file: these variables, any handler, any knob
        Pub/Sub allows. Existing deployments keep working unchanged."""
        return Profile(
            name=DEFAULT_PROFILE, image=self.image, handlers=("*",), max_parallelism=self.max_parallelism,
            cpu_request=self.cpu_request, memory_request=self.memory_request, cpu_limit=self.cpu_limit,
            memory_limit=self.memory_limit, node_selector=dict(self.node_selector),
            tolerations=self.tolerations, service_account=self.service_account,
            drain_budget_s=self.drain_budget_s, priority_class=self.priority_class,
            concurrency=self.worker_concurrency, extended_resources=dict(self.extended_resources),
            part_timeout_s=self.part_timeout_s,
        )

    def for_profile(self, profile: Profile) -> JobConfig:
        """This config shaped by ``profile``: image, placement, resources, identity, worker knobs."""
        return replace(
            self, image=profile.image, max_parallelism=profile.max_parallelism,
            cpu_request=profile.cpu_request, memory_request=profile.memory_request,
            cpu_limit=profile.cpu_limit, memory_limit=profile.memory_limit,
            extended_resources=dict(profile.extended_resources), node_selector=dict(profile.node_selector),
            tolerations=profile.tolerations, service_account=profile.service_account,
            drain_budget_s=profile.drain_budget_s, priority_class=profile.priority_class,
            worker_concurrency=profile.concurrency, part_timeout_s=profile.part_timeout_s,
        )

    def with_image(self, image: str | None) -> JobConfig:
        """This config with a request's ``--image`` (None keeps the configured one).

        The image arrives in a Pub/Sub message, so it is checked like the variable:
        BadInput when it is malformed or untagged.
        """
        if image is None:
            return self
        try:
            return replace(self, image=kubevalues.image(image))
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


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "BATCHCTL_WORKER_IMAGE": ("image", kubevalues.image),
    "BATCHCTL_WORKER_IMAGE_PULL_POLICY": ("image_pull_policy", _choice(PULL_POLICIES)),
    "BATCHCTL_WORKER_SERVICE_ACCOUNT": ("service_account", kubevalues.object_name),
    "BATCHCTL_NODE_SELECTOR": ("node_selector", kubevalues.node_selector),
    "BATCHCTL_TOLERATIONS": ("tolerations", kubevalues.tolerations),
    "BATCHCTL_PRIORITY_CLASS": ("priority_class", _optional(kubevalues.object_name)),
    "BATCHCTL_WORKER_CPU": ("cpu_request", kubevalues.quantity),
    "BATCHCTL_WORKER_MEMORY": ("memory_request", kubevalues.quantity),
    "BATCHCTL_WORKER_CPU_LIMIT": ("cpu_limit", _optional(kubevalues.quantity)),
    "BATCHCTL_WORKER_MEMORY_LIMIT": ("memory_limit", _optional(kubevalues.quantity)),
    "BATCHCTL_WORKER_SCRATCH_SIZE": ("scratch_size", _optional(kubevalues.quantity)),
    "BATCHCTL_BACKOFF_LIMIT": ("backoff_limit", _integer(0)),
    "BATCHCTL_JOB_TTL_SECONDS": ("ttl_seconds_after_finished", _integer(0)),
    "BATCHCTL_ACTIVE_DEADLINE_SECONDS": ("active_deadline_seconds", _optional(_integer(1))),
    # The worker's own ranges (worker.config.OPTIONS), so a value it would refuse never reaches a Job.
    DRAIN_VAR: ("drain_budget_s", _integer(0, 3600)),
    CONCURRENCY_VAR: ("worker_concurrency", _optional(_integer(1, 256))),
    EMPTY_PULLS_VAR: ("worker_empty_pulls", _optional(_integer(1, 100))),
    "BATCHCTL_MAX_PARALLELISM": ("max_parallelism", _integer(1)),
    "BATCHCTL_KUEUE_QUEUE": ("kueue_queue", _optional(kubevalues.object_name)),
}
"""Every variable JobConfig reads: name -> (field, parser). Parsers raise ValueError."""
