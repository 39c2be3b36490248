"""Worker profiles: what the operator lets a request run, and how its workers are shaped.

A request chooses data, never code: it names a profile, and the profile (written by the
operator in the ``BATCHCTL_PROFILES`` YAML file) decides the image, the handlers allowed,
the placement, resources and identity of the workers, and the bounds within which a
request may set its own knobs. ``load_profiles`` reads and checks the whole file and
raises one ``BadInput`` naming file, profile and key for every problem. A key a profile
leaves out takes the value of ``base`` (the launcher's ``BATCHCTL_*`` variables), except
``handlers``, which every profile in a file must list. Without a file there is one
profile, ``default``: ``base`` itself (see ``launcher.jobconfig.JobConfig.default_profile``).

File format::

    profiles:
      etl:
        image: ghcr.io/acme/etl@sha256:...      # what workers run
        images: [ghcr.io/acme/etl:1.4.2]        # alternatives a request may name
        handlers: ["acme.etl.*:handle"]          # fnmatch patterns over MODULE:FUNC
        max_parallelism: 20
        max_workers: 40                          # worker pods at once over all its batches
        resources:
          requests: {cpu: 500m, memory: 512Mi}
          limits: {cpu: "1", memory: 512Mi, nvidia.com/gpu: 1}
        node_selector: {batchctl.dev/pool: batch}
        tolerations: [{key: batchctl.dev/pool, value: batch, effect: NoSchedule}]
        service_account: batchctl-worker
        concurrency: 4
        drain_budget_s: 20
        part_timeout_s: 3600                     # longest run of one part (worker default 7200)
        priority_class: batchctl-worker
        priority_classes: {high: batchctl-worker-high}   # per submit --priority; others above
        ack_deadline_s: {min: 10, max: 600}
        max_delivery_attempts: {min: 5, max: 100}
        outputs: ["gs://acme-results/etl/"]      # where --output may point (left out: nowhere)
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from batchctl.core import kubevalues
from batchctl.core.errors import BadInput
from batchctl.core.kubevalues import Toleration, parse_quantity

DEFAULT_PROFILE = "default"
PROFILES_VAR = "BATCHCTL_PROFILES"
MAX_FILE_BYTES = 1 << 20
"""A ConfigMap holds at most 1 MiB, and so does a profiles file mounted from one."""
_PROFILE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Bounds:
    """An inclusive range of integers a request may choose from."""

    min: int
    max: int

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.min <= value <= self.max

    def __str__(self) -> str:
        return f"{self.min}..{self.max}"


ACK_DEADLINE_RANGE = Bounds(10, 600)
"""Pub/Sub's own range for a subscription's ack deadline (seconds)."""
DELIVERY_ATTEMPTS_RANGE = Bounds(5, 100)
"""Pub/Sub's own range for a dead-letter policy's max delivery attempts."""


@dataclass(frozen=True)
class Profile:
    """One operator-defined kind of worker. Extend with new fields; keep every one documented."""

    name: str
    image: str
    """The image workers run (a digest, or a tag the operator accepts)."""
    handlers: tuple[str, ...]
    """``fnmatch`` patterns over ``MODULE:FUNC``; a request's handler must match one."""
    max_parallelism: int
    """Cap on a request's ``max_parallelism`` (worker pods of one Job)."""
    cpu_request: str
    memory_request: str
    cpu_limit: str | None
    memory_limit: str | None
    node_selector: Mapping[str, str]
    """Which node pool workers go to."""
    tolerations: tuple[Toleration, ...]
    service_account: str
    drain_budget_s: int
    priority_class: str | None
    concurrency: int | None = None
    """Parts one worker handles at once (None: the worker's default)."""
    images: tuple[str, ...] = ()
    """Alternatives to ``image`` a request may name with ``submit --image``."""
    extended_resources: Mapping[str, str] = field(default_factory=dict)
    """Extended resources per worker (``nvidia.com/gpu: "1"``): request and limit alike."""
    ack_deadline_s: Bounds = ACK_DEADLINE_RANGE
    max_delivery_attempts: Bounds = DELIVERY_ATTEMPTS_RANGE
    priority_classes: Mapping[str, str] = field(default_factory=dict)
    """PriorityClass of the workers per ``submit --priority`` (``{high: batch-high}``); others use
    ``priority_class``."""
    part_timeout_s: int | None = None
    """Longest a handler may run on one part before it is nacked as a failed attempt (seconds,
    1..604800, the worker's own range); None: the worker's default (2 h)."""
    max_workers: int | None = None
    """Worker pods at once over all of this profile's batches (its own budget, within any global
    ``BATCHCTL_MAX_WORKERS``); None: the global budget alone applies (uncapped when unset)."""

    outputs: tuple[str, ...] | None = None
    """Destinations a request's ``--output`` may point under (``gs://BUCKET/PREFIX/`` or an absolute
    folder, each normalised by ``dest_prefix``); None: anywhere (the file-less ``default`` profile);
    a profile in a file that leaves the key out allows none, since workers write with their identity."""

    @property
    def allowed_images(self) -> tuple[str, ...]:
        return (self.image, *self.images)

    def describe(self) -> dict[str, Any]:
        """The profile as plain JSON-able data (what ``batchctl profiles --json`` prints)."""
        body = asdict(self)
        body["node_selector"] = dict(self.node_selector)
        body["priority_classes"] = dict(self.priority_classes)
        body["extended_resources"] = dict(self.extended_resources)
        body["tolerations"] = [{"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}
                               for t in self.tolerations]
        body["handlers"], body["images"] = list(self.handlers), list(self.images)
        body["outputs"] = None if self.outputs is None else list(self.outputs)
        return body

    @classmethod
    def from_description(cls, body: Mapping[str, Any]) -> Profile:
        """The profile ``describe`` gave (as the launcher publishes it); TypeError/KeyError if it is not one."""
        tolerations = tuple(Toleration(t["key"], t["value"], t["effect"]) for t in body["tolerations"])
        return cls(**{
            **body, "handlers": tuple(body["handlers"]), "images": tuple(body["images"]), "tolerations": tolerations,
            "ack_deadline_s": Bounds(**body["ack_deadline_s"]),
            "max_delivery_attempts": Bounds(**body["max_delivery_attempts"]),
            "outputs": None if body.get("outputs") is None else tuple(body["outputs"]),
        })


def load_profiles(path: str | Path, *, base: Profile) -> dict[str, Profile]:
    """Read and check the profiles file at ``path``; BadInput naming file, profile and key."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"{PROFILES_VAR}={str(path)!r}: cannot read the profiles file: {exc.strerror}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise BadInput(f"{path}: the profiles file is larger than {MAX_FILE_BYTES} bytes")
    return parse_profiles(raw, source=str(path), base=base)


def parse_profiles(raw: bytes | str, *, source: str, base: Profile) -> dict[str, Profile]:
    """The profiles of a YAML document; every problem reported in one BadInput."""
    try:
        document = yaml.safe_load(raw)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise BadInput(f"{source}:{line} not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(document, dict) or set(document) != {"profiles"}:
        raise BadInput(f"{source}: the top level must be a mapping with the one key 'profiles'")
    entries = document["profiles"]
    if not isinstance(entries, dict) or not entries:
        raise BadInput(f"{source}: 'profiles' must map at least one profile name to its settings")
    problems: list[str] = []
    profiles: dict[str, Profile] = {}
    for name, body in entries.items():
        found: list[str] = []
        profile = _profile(name, body, base, found)
        problems += [f"{source}: profile {name!r}: {p}" for p in found]
        if profile is not None:
            profiles[name] = profile
    if problems:
        raise BadInput("; ".join(problems))
    return profiles


def _profile(name: object, body: object, base: Profile, problems: list[str]) -> Profile | None:
    if not isinstance(name, str) or not _PROFILE_NAME_RE.match(name):
        problems.append("the name must be lowercase letters, digits and '-' (at most 63)")
        return None
    if not isinstance(body, dict):
        problems.append("must be a mapping of settings")
        return None
    values: dict[str, Any] = {"name": name}
    for key, value in body.items():
        parse = KEYS.get(key) if isinstance(key, str) else None
        if parse is None:
            problems.append(f"key {key!r} is not known (known: {', '.join(sorted(KEYS))})")
            continue
        try:
            values.update(parse(value, base))
        except (ValueError, TypeError) as exc:
            problems.append(f"key {key!r}: {exc}")
    if "handlers" not in body:
        problems.append("key 'handlers' is required (the handlers this profile may run)")
    values.setdefault("outputs", ())  # not the base's "anywhere": an operator lists where workers may write
    if problems:
        return None
    profile = replace(base, **values)
    problems += _limit_problems(profile)
    return None if problems else profile


def _limit_problems(profile: Profile) -> list[str]:
    problems = []
    for kind in ("cpu", "memory"):
        limit, request = getattr(profile, f"{kind}_limit"), getattr(profile, f"{kind}_request")
        if limit is not None and parse_quantity(limit) < parse_quantity(request):
            problems.append(f"key 'resources': limits.{kind} {limit!r} is below requests.{kind} {request!r}")
    return problems


# --- one parser per key: (YAML value, base profile) -> fields of Profile ------------------


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a string, not {type(value).__name__}")
    return value


def _integer(value: object, bounds: Bounds) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"must be an integer, not {type(value).__name__}")
    if value not in bounds:
        raise ValueError(f"must be within {bounds}")
    return value


def _text_list(value: object) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise TypeError("must be a non-empty list of strings")
    return list(value)


def _mapping(value: object, keys: set[str] | None = None) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"must be a mapping, not {type(value).__name__}")
    unknown = sorted(str(k) for k in value if keys is not None and k not in keys)
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not known (known: {', '.join(sorted(keys or ()))})")
    return value


def _handlers(value: object, _: Profile) -> dict[str, Any]:
    patterns = _text_list(value)
    bad = [p for p in patterns if ":" not in p and p != "*"]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a MODULE:FUNC pattern")
    return {"handlers": tuple(patterns)}


def dest_prefix(value: str) -> str:
    """``gs://BUCKET/PREFIX`` or an absolute folder as a prefix ending in ``/`` (a folder's ``..`` resolved),
    so that ``a.startswith(b)`` means "a is b or inside it"; ValueError for anything else."""
    if value.startswith("gs://"):
        bucket = value[len("gs://"):].split("/", 1)[0]
        if not bucket:
            raise ValueError(f"{value!r} names no bucket")
        return value if value.endswith("/") else value + "/"
    if value.startswith("/") and "\0" not in value:
        folder = posixpath.normpath(value)
        return folder if folder.endswith("/") else folder + "/"
    raise ValueError(f"{value!r} is neither gs://BUCKET/PREFIX/ nor an absolute folder")


def _outputs(value: object, _: Profile) -> dict[str, Any]:
    if value == []:
        return {"outputs": ()}
    return {"outputs": tuple(dict.fromkeys(dest_prefix(v) for v in _text_list(value)))}


def _images(value: object, _: Profile) -> dict[str, Any]:
    return {"images": tuple(kubevalues.image(v) for v in _text_list(value))}


def _bounds(key: str, allowed: Bounds) -> Callable[[object, Profile], dict[str, Any]]:
    def parse(value: object, _: Profile) -> dict[str, Any]:
        body = _mapping(value, {"min", "max"})
        low = _integer(body.get("min", allowed.min), allowed)
        high = _integer(body.get("max", allowed.max), allowed)
        if low > high:
            raise ValueError(f"min {low} is above max {high}")
        return {key: Bounds(low, high)}

    return parse


def _resources(value: object, base: Profile) -> dict[str, Any]:
    body = _mapping(value, {"requests", "limits"})
    requests = _mapping(body.get("requests", {}))
    limits = _mapping(body.get("limits", {}))
    fields: dict[str, Any] = {}
    for kind in ("cpu", "memory"):
        if kind in requests:
            fields[f"{kind}_request"] = kubevalues.quantity(_quantity_text(requests[kind]))
        if kind in limits:
            limit = limits[kind]
            fields[f"{kind}_limit"] = None if limit is None else kubevalues.quantity(_quantity_text(limit))
    extended = {k: v for k, v in limits.items() if k not in ("cpu", "memory")}
    stray = sorted(str(k) for k in requests if k not in ("cpu", "memory") and k not in extended)
    if stray:
        raise ValueError(f"requests.{stray[0]}: an extended resource is set under limits (requests follow)")
    fields["extended_resources"] = {**base.extended_resources, **_extended(extended, requests)}
    return fields


def _quantity_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError("a quantity must be a string or a number")
    return str(value)


def _extended(limits: dict[Any, Any], requests: dict[Any, Any]) -> dict[str, str]:
    """Extended resources: ``domain/name`` keys, whole numbers, requests equal to limits."""
    result = {}
    for key, raw in limits.items():
        if not isinstance(key, str) or "/" not in key or key.startswith("kubernetes.io/"):
            raise ValueError(f"limits.{key}: an extended resource is named like nvidia.com/gpu")
        kubevalues.label_key(key)
        amount = kubevalues.quantity(_quantity_text(raw))
        if parse_quantity(amount) != int(parse_quantity(amount)):
            raise ValueError(f"limits.{key}: an extended resource is a whole number")
        if key in requests and parse_quantity(_quantity_text(requests[key])) != parse_quantity(amount):
            raise ValueError(f"requests.{key}: must equal limits.{key} (extended resources do not overcommit)")
        result[key] = amount
    return result


def _node_selector(value: object, _: Profile) -> dict[str, Any]:
    body = _mapping(value)
    selector = {kubevalues.label_key(_text(k)): kubevalues.label_value(_text(v)) for k, v in body.items()}
    return {"node_selector": selector}


def _tolerations(value: object, _: Profile) -> dict[str, Any]:
    if not isinstance(value, list):
        raise TypeError("must be a list of {key, value, effect}")
    result = []
    for item in value:
        body = _mapping(item, {"key", "value", "effect", "operator"})
        operator = body.get("operator", "Equal" if "value" in body else "Exists")
        if operator not in ("Equal", "Exists") or (operator == "Exists") == ("value" in body):
            raise ValueError("operator Exists takes no value, Equal needs one")
        raw = body.get("value")
        value_text = None if operator == "Exists" else _text(raw)
        result.append(kubevalues.toleration(_text(body.get("key")), value_text, _text(body.get("effect"))))
    return {"tolerations": tuple(result)}


def _priority_classes(value: object, _: Profile) -> dict[str, Any]:
    body = _mapping(value, {"low", "normal", "high"})
    return {"priority_classes": {_text(k): kubevalues.object_name(_text(v)) for k, v in body.items()}}


def _optional_name(key: str) -> Callable[[object, Profile], dict[str, Any]]:
    return lambda value, _: {key: None if value is None else kubevalues.object_name(_text(value))}


KEYS: dict[str, Callable[[object, Profile], dict[str, Any]]] = {
    "image": lambda value, _: {"image": kubevalues.image(_text(value))},
    "images": _images,
    "handlers": _handlers,
    "max_parallelism": lambda value, _: {"max_parallelism": _integer(value, Bounds(1, 10_000))},
    "max_workers": lambda value, _: {"max_workers": None if value is None else _integer(value, Bounds(1, 100_000))},
    "resources": _resources,
    "node_selector": _node_selector,
    "tolerations": _tolerations,
    "service_account": lambda value, _: {"service_account": kubevalues.object_name(_text(value))},
    "concurrency": lambda value, _: {"concurrency": None if value is None else _integer(value, Bounds(1, 256))},
    "drain_budget_s": lambda value, _: {"drain_budget_s": _integer(value, Bounds(0, 3600))},
    "part_timeout_s": lambda value, _: {
        "part_timeout_s": None if value is None else _integer(value, Bounds(1, 7 * 86400))},
    "priority_class": _optional_name("priority_class"),
    "priority_classes": _priority_classes,
    "ack_deadline_s": _bounds("ack_deadline_s", ACK_DEADLINE_RANGE),
    "max_delivery_attempts": _bounds("max_delivery_attempts", DELIVERY_ATTEMPTS_RANGE),
    "outputs": _outputs,
}
"""Every key a profile may set -> its parser (ValueError/TypeError name what is wrong)."""
