"""Admission: may this batch request run? Pure checks, written once.

``submit`` applies what it can know before publishing (so a typo fails fast); the launcher
applies every check again to every request, since anything that can publish on the
requests topic can send one. A refused request ends its batch ``rejected`` with
``Rejection.reason``, one line naming the rule; ``Rejection.rule`` labels the launcher's
``batchctl_requests_rejected_total`` counter.

Rules, in the order they are checked:
    size         the message is larger than a request ever is (``MAX_REQUEST_BYTES``)
    malformed    it does not decode as a request (``messages.decode_control`` says why)
    profile      it names a profile the launcher does not offer
    handler      its handler matches none of the profile's patterns
    image        it names an image the profile does not list
    parallelism  its max_parallelism is above the profile's cap
    attempts     its max_delivery_attempts is outside the profile's bounds
    ack_deadline its ack_deadline_s is outside the profile's bounds
    output       its output is not under one of the profile's ``outputs``
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from batchctl.core.errors import BadInput
from batchctl.core.messages import BatchRequest
from batchctl.core.names import BATCH_ID_RE
from batchctl.core.profiles import Profile, dest_prefix

RULES = ("size", "malformed", "profile", "handler", "image", "parallelism", "attempts", "ack_deadline", "output")
MAX_REQUEST_BYTES = 64 * 1024
"""A real request is a few hundred bytes; anything near Pub/Sub's 10 MB is not one."""


@dataclass(frozen=True)
class Rejection:
    """Why a request may not run: ``rule`` (one of RULES) and a one-line ``reason``."""

    rule: str
    reason: str


def check_size(size: int) -> Rejection | None:
    if size > MAX_REQUEST_BYTES:
        return Rejection("size", f"request of {size} bytes is larger than {MAX_REQUEST_BYTES} bytes")
    return None


def malformed(error: BadInput) -> Rejection:
    return Rejection("malformed", f"malformed request: {error}")


def check_request(request: BatchRequest, profiles: Mapping[str, Profile]) -> Rejection | None:
    """The first rule ``request`` breaks under ``profiles``, or None when it may run."""
    profile = profiles.get(request.profile)
    if profile is None:
        offered = ", ".join(sorted(profiles)) or "none"
        return Rejection("profile", f"profile {request.profile!r} is not offered (offered: {offered})")
    return check_against(request, profile)


def check_against(request: BatchRequest, profile: Profile) -> Rejection | None:
    """The first rule ``request`` breaks under ``profile`` (the profile is known)."""
    name = profile.name
    if not any(fnmatchcase(request.handler, pattern) for pattern in profile.handlers):
        return Rejection("handler", f"handler {request.handler!r} is not allowed by profile {name!r}")
    if request.image is not None and request.image not in profile.allowed_images:
        return Rejection("image", f"image {request.image!r} is not allowed by profile {name!r}")
    if request.max_parallelism > profile.max_parallelism:
        return Rejection("parallelism", f"max_parallelism {request.max_parallelism} is above profile {name!r}'s "
                                        f"cap of {profile.max_parallelism}")
    if request.max_delivery_attempts not in profile.max_delivery_attempts:
        return Rejection("attempts", f"max_delivery_attempts {request.max_delivery_attempts} is outside profile "
                                     f"{name!r}'s bounds {profile.max_delivery_attempts}")
    if request.ack_deadline_s not in profile.ack_deadline_s:
        return Rejection("ack_deadline", f"ack_deadline_s {request.ack_deadline_s} is outside profile {name!r}'s "
                                         f"bounds {profile.ack_deadline_s}")
    return _check_output(request.output, profile)


def _check_output(output: str | None, profile: Profile) -> Rejection | None:
    """Workers write results with their own identity: only under a destination the operator listed."""
    if output is None or profile.outputs is None:
        return None
    if not profile.outputs:
        return Rejection("output", f"output {output!r} is not allowed: profile {profile.name!r} lists no outputs")
    try:
        dest = dest_prefix(output)
    except ValueError as exc:
        return Rejection("output", f"output {output!r} is not allowed: {exc}")
    allowed = [dest_prefix(prefix) for prefix in profile.outputs]
    if any(dest.startswith(prefix) for prefix in allowed):
        return None
    return Rejection("output", f"output {output!r} is not under profile {profile.name!r}'s outputs "
                               f"({', '.join(allowed)})")


def batch_named(data: bytes, attributes: Mapping[str, str] | Any) -> str | None:
    """The batch an undecodable launch request names, so it can end ``rejected``; None if it names none.

    Only a message that says it is a launch (``action`` attribute or field) names a batch, by its
    ``batch_id`` attribute or field; when both are there they must agree. The data is read only
    when it is small enough to be a request.
    """
    body = _small_json(data)
    actions = [v for v in (attributes.get("action"), body.get("action")) if v is not None]
    ids = [v for v in (attributes.get("batch_id"), body.get("batch_id")) if v is not None]
    if not actions or any(a != "launch" for a in actions) or not ids or any(i != ids[0] for i in ids):
        return None
    batch_id = ids[0]
    return batch_id if isinstance(batch_id, str) and BATCH_ID_RE.fullmatch(batch_id) else None


def _small_json(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_REQUEST_BYTES:
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}
