"""Control messages (to the launcher) and events (from workers): their wire format.

Both travel as JSON data plus routing attributes. ``decode_*`` validate every
field and raise ``BadInput`` naming the field, so a forged or truncated message is
rejected (and acked away by its consumer) instead of corrupting a batch's state.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from batchctl.core.errors import BadInput
from batchctl.core.names import validate_batch_id
from batchctl.core.settings import WORK_ACK_DEADLINE_S

ACTIONS = ("launch", "cancel", "retry")
PRIORITIES = ("low", "normal", "high")
"""``submit --priority``: the batch's weight in the worker budget's division (1, 2, 4)."""
EVENT_TYPES = ("worker_started", "part_started", "part_done", "part_failed", "worker_exited", "batch_finished")
MAX_PARTS_PER_EVENT = 10_000
"""Most part indices one aggregated ``part_done`` event may list (~70 KB of JSON)."""
EXIT_ERROR_PREFIX = "error: "
"""A ``worker_exited`` reason that starts with this carries the one-line error the worker exited on."""


@dataclass(frozen=True)
class BatchRequest:
    """Everything the launcher needs to run a batch, sent once by ``submit``."""

    batch_id: str
    parts: int
    records: int
    bytes: int
    handler: str
    parts_per_worker: int = 10
    max_parallelism: int = 10
    image: str | None = None
    max_delivery_attempts: int = 5
    ack_deadline_s: int = WORK_ACK_DEADLINE_S
    created: float = field(default_factory=time.time)
    output: str | None = None
    """``--output DEST`` (``gs://BUCKET/PREFIX/`` or an absolute folder): where part results go."""
    profile: str = "default"
    """The operator's worker profile the batch runs under (``core.profiles``)."""
    priority: str = "normal"
    """``submit --priority``: the batch's weight in the worker budget (``launcher.allocation``)."""


@dataclass(frozen=True)
class Control:
    """One control message: ``launch`` carries a request, ``cancel`` and ``retry`` a batch id."""

    action: str
    batch_id: str
    request: BatchRequest | None = None


@dataclass(frozen=True)
class Event:
    """One worker event; ``part`` is set for part events, ``reason`` for exits.

    A ``part_done`` event names one part (``part``) or many (``parts``: a worker aggregates
    the parts it finished within ~200 ms into one event); ``part_failed`` names one part, and so
    does ``part_started``, which a worker sends (and awaits) before it runs a redelivered part.
    """

    type: str
    batch_id: str
    worker: str
    part: int | None = None
    attempt: int = 0
    reason: str = ""
    time: float = field(default_factory=time.time)
    parts: tuple[int, ...] = ()

    @property
    def done_parts(self) -> tuple[int, ...]:
        """The parts a ``part_done`` event reports done (empty for any other event)."""
        if self.type != "part_done":
            return ()
        return self.parts or (() if self.part is None else (self.part,))


def encode_control(msg: Control) -> tuple[bytes, dict[str, str]]:
    body: dict[str, Any] = {"action": msg.action, "batch_id": msg.batch_id}
    if msg.request is not None:
        body["request"] = asdict(msg.request)
    return json.dumps(body).encode(), {"action": msg.action, "batch_id": msg.batch_id}


def decode_control(data: bytes, attributes: dict[str, str] | Any) -> Control:
    body = _json_object(data, "control message")
    action = _field(body, "action", str)
    if action not in ACTIONS:
        raise BadInput(f"control message: field 'action' is {action!r}, expected one of {ACTIONS}")
    batch_id = validate_batch_id(_field(body, "batch_id", str))
    if attributes.get("batch_id", batch_id) != batch_id:
        raise BadInput("control message: attribute 'batch_id' disagrees with the data")
    request = None
    if action == "launch":
        raw = _field(body, "request", dict)
        request = _request(raw)
        if request.batch_id != batch_id:
            raise BadInput("control message: field 'request.batch_id' disagrees with 'batch_id'")
    return Control(action=action, batch_id=batch_id, request=request)


def _construct(raw: dict[str, Any]) -> BatchRequest:
    unknown = sorted(set(raw) - {f.name for f in fields(BatchRequest)})
    if unknown:
        raise BadInput(f"control message: field 'request.{unknown[0]}' is not known (image, placement and "
                       "resources come from the profile)")
    try:
        return BatchRequest(**raw)
    except TypeError as exc:
        raise BadInput(f"control message: field 'request' is malformed: {exc}") from exc


def _request(raw: dict[str, Any]) -> BatchRequest:
    request = _construct(raw)
    for name in ("parts", "records", "bytes", "parts_per_worker", "max_parallelism", "max_delivery_attempts",
                 "ack_deadline_s"):
        value = getattr(request, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadInput(f"control message: field 'request.{name}' must be a non-negative integer")
    if request.parts < 1 or request.parts_per_worker < 1 or request.max_parallelism < 1:
        raise BadInput("control message: 'parts', 'parts_per_worker', 'max_parallelism' must be >= 1")
    if not isinstance(request.handler, str) or ":" not in request.handler:
        raise BadInput("control message: field 'request.handler' must be MODULE:FUNC")
    if not isinstance(request.profile, str):
        raise BadInput("control message: field 'request.profile' must be a profile name")
    if request.image is not None and (not isinstance(request.image, str) or not request.image.strip()):
        raise BadInput("control message: field 'request.image' must be an image reference")
    if request.priority not in PRIORITIES:
        raise BadInput(f"control message: field 'request.priority' must be one of {', '.join(PRIORITIES)}")
    if not isinstance(request.created, (int, float)) or isinstance(request.created, bool):
        raise BadInput("control message: field 'request.created' must be a timestamp")
    if request.output is not None and not _is_dest(request.output):
        raise BadInput("control message: field 'request.output' must be gs://BUCKET/PREFIX/ or an absolute folder")
    validate_batch_id(request.batch_id)
    return request


def _is_dest(value: object) -> bool:
    return isinstance(value, str) and (
        (value.startswith("gs://") and len(value) > len("gs://")) or value.startswith("/")
    )


def encode_event(event: Event) -> tuple[bytes, dict[str, str]]:
    body = asdict(event)
    if not event.parts:
        del body["parts"]
    return json.dumps(body, separators=(",", ":")).encode(), {"type": event.type, "batch_id": event.batch_id}


def decode_event(data: bytes, attributes: dict[str, str] | Any) -> Event:
    body = _json_object(data, "event")
    kind = _field(body, "type", str)
    if kind not in EVENT_TYPES:
        raise BadInput(f"event: field 'type' is {kind!r}, expected one of {EVENT_TYPES}")
    batch_id = validate_batch_id(_field(body, "batch_id", str))
    if attributes.get("batch_id", batch_id) != batch_id or attributes.get("type", kind) != kind:
        raise BadInput("event: attributes disagree with the data")
    part = body.get("part")
    parts = _parts(body.get("parts", []), kind)
    if (kind in ("part_failed", "part_started") or (kind == "part_done" and not parts)) and not _index(part):
        raise BadInput(f"event: field 'part' must be a non-negative integer for {kind}")
    attempt = body.get("attempt", 0)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
        raise BadInput("event: field 'attempt' must be a non-negative integer")
    stamp = body.get("time", 0.0)
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
        raise BadInput("event: field 'time' must be a number")
    return Event(
        type=kind,
        batch_id=batch_id,
        worker=str(body.get("worker", "")),
        part=part if isinstance(part, int) else None,
        attempt=attempt,
        reason=str(body.get("reason", "")),
        time=float(stamp),
        parts=parts,
    )


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parts(value: Any, kind: str) -> tuple[int, ...]:
    """The ``parts`` list of an aggregated ``part_done``: non-negative integers, at most MAX_PARTS_PER_EVENT."""
    if value == []:
        return ()
    if kind != "part_done" or not isinstance(value, list) or len(value) > MAX_PARTS_PER_EVENT:
        raise BadInput(f"event: field 'parts' must be a list of at most {MAX_PARTS_PER_EVENT} part indices "
                       "in a part_done event")
    if not all(map(_index, value)):
        raise BadInput("event: field 'parts' must hold non-negative integers")
    return tuple(value)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what}: data is not JSON") from exc
    if not isinstance(body, dict):
        raise BadInput(f"{what}: data is not a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise BadInput(f"field {name!r} is missing or not a {kind.__name__}")
    return value
