"""Admission: each rule refuses exactly what it should, with a one-line reason naming it.

Checks: a request within its profile is admitted (at each bound); an unknown profile, a
handler outside the patterns (fnmatch, case-sensitive, whole string), an image not listed,
parallelism above the cap, attempts and ack deadline outside the bounds are each refused by
their rule, in the documented order; size and malformed rejections; ``batch_named`` names a
batch only for a launch that names one consistently; every rule is in RULES.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from batchctl.core.admission import (
    MAX_REQUEST_BYTES,
    RULES,
    Rejection,
    batch_named,
    check_request,
    check_size,
    malformed,
)
from batchctl.core.errors import BadInput
from batchctl.core.messages import BatchRequest
from batchctl.core.profiles import Bounds
from batchctl.launcher.jobconfig import JobConfig

ETL = replace(JobConfig().default_profile(), name="etl", image="reg.example/etl:1", images=("reg.example/etl:2",),
              handlers=("acme.etl.*:handle", "acme.report:run"), max_parallelism=8,
              ack_deadline_s=Bounds(30, 120), max_delivery_attempts=Bounds(5, 10),
              outputs=("gs://acme-results/etl/", "/srv/results"))
PROFILES = {"etl": ETL, "default": JobConfig().default_profile()}


def request(**fields: Any) -> BatchRequest:
    base: dict[str, Any] = {"batch_id": "b1", "parts": 3, "records": 3, "bytes": 30, "handler": "acme.etl.jobs:handle",
                            "profile": "etl", "max_parallelism": 8, "max_delivery_attempts": 5, "ack_deadline_s": 60}
    return BatchRequest(**{**base, **fields})


@pytest.mark.parametrize("fields", [
    {}, {"max_parallelism": 1}, {"max_delivery_attempts": 10}, {"ack_deadline_s": 30}, {"ack_deadline_s": 120},
    {"image": "reg.example/etl:1"}, {"image": "reg.example/etl:2"}, {"handler": "acme.report:run"},
    {"handler": "acme.etl.a.b:handle"}, {"output": "gs://acme-results/etl/"},
    {"output": "gs://acme-results/etl/2026/run-1/"}, {"output": "gs://acme-results/etl"},
    {"output": "/srv/results"}, {"output": "/srv/results/b1/"}, {"output": "/srv/x/../results/b1"},
])
def test_a_request_within_its_profile_is_admitted(fields: dict[str, Any]) -> None:
    assert check_request(request(**fields), PROFILES) is None


def test_the_default_profile_admits_any_handler_within_pubsubs_ranges() -> None:
    assert check_request(request(profile="default", handler="any.thing:at_all", max_parallelism=50,
                                 max_delivery_attempts=100, ack_deadline_s=600), PROFILES) is None


REFUSED = [
    ({"profile": "gpu"}, "profile", "profile 'gpu' is not offered (offered: default, etl)"),
    ({"handler": "os:system"}, "handler", "handler 'os:system' is not allowed by profile 'etl'"),
    ({"handler": "acme.etl.jobs:handle_all"}, "handler", "handler 'acme.etl.jobs:handle_all' is not allowed"),
    ({"handler": "ACME.etl.x:handle"}, "handler", "is not allowed by profile 'etl'"),
    ({"handler": "acme.report:run "}, "handler", "is not allowed by profile 'etl'"),
    ({"image": "evil.example/miner:1"}, "image", "image 'evil.example/miner:1' is not allowed by profile 'etl'"),
    ({"image": "reg.example/etl:1@sha256:00"}, "image", "is not allowed by profile 'etl'"),
    ({"max_parallelism": 9}, "parallelism", "max_parallelism 9 is above profile 'etl''s cap of 8"),
    ({"max_delivery_attempts": 11}, "attempts", "max_delivery_attempts 11 is outside profile 'etl''s bounds 5..10"),
    ({"ack_deadline_s": 29}, "ack_deadline", "ack_deadline_s 29 is outside profile 'etl''s bounds 30..120"),
    ({"ack_deadline_s": 121}, "ack_deadline", "ack_deadline_s 121 is outside profile 'etl''s bounds 30..120"),
    ({"output": "gs://other-bucket/etl/"}, "output", "output 'gs://other-bucket/etl/' is not under profile 'etl''s "
                                                     "outputs (gs://acme-results/etl/, /srv/results/)"),
    ({"output": "gs://acme-results/etl2/"}, "output", "is not under profile 'etl''s outputs"),
    ({"output": "gs://acme-results/"}, "output", "is not under profile 'etl''s outputs"),
    ({"output": "/srv/results/../secrets/"}, "output", "is not under profile 'etl''s outputs"),
    ({"output": "/srv/results-other"}, "output", "is not under profile 'etl''s outputs"),
]


@pytest.mark.parametrize(("fields", "rule", "reason"), REFUSED)
def test_each_rule_refuses_with_a_reason_naming_it(fields: dict[str, Any], rule: str, reason: str) -> None:
    rejection = check_request(request(**fields), PROFILES)
    assert rejection is not None and rejection.rule == rule
    assert reason in rejection.reason and "\n" not in rejection.reason


def test_rules_are_checked_in_order() -> None:
    """Everything wrong at once: the handler is named first (the profile exists)."""
    rejection = check_request(request(handler="x:y", image="e.example/x:1", max_parallelism=99), PROFILES)
    assert rejection == Rejection("handler", "handler 'x:y' is not allowed by profile 'etl'")


def test_a_profile_without_outputs_allows_no_output_and_the_default_any() -> None:
    closed = {"etl": replace(ETL, outputs=())}
    rejection = check_request(request(output="gs://acme-results/etl/"), closed)
    assert rejection == Rejection("output", "output 'gs://acme-results/etl/' is not allowed: profile 'etl' lists "
                                            "no outputs")
    assert check_request(request(), closed) is None  # no --output: nothing to check
    assert check_request(request(profile="default", output="gs://anywhere/x/"), PROFILES) is None


def test_no_profiles_offers_none() -> None:
    assert check_request(request(), {}) == Rejection("profile", "profile 'etl' is not offered (offered: none)")


def test_size_rule() -> None:
    assert check_size(MAX_REQUEST_BYTES) is None
    rejection = check_size(MAX_REQUEST_BYTES + 1)
    assert rejection is not None and rejection.rule == "size"
    assert rejection.reason == f"request of {MAX_REQUEST_BYTES + 1} bytes is larger than {MAX_REQUEST_BYTES} bytes"


def test_malformed_rule_carries_the_decoder_reason() -> None:
    expected = Rejection("malformed", "malformed request: field 'x' is missing")
    assert malformed(BadInput("field 'x' is missing")) == expected


def test_every_rule_is_listed() -> None:
    rules = {r for _, r, _ in REFUSED} | {"size", "malformed"}
    assert rules == set(RULES)


NAMED = [
    (b"\xff\xfe", {"action": "launch", "batch_id": "b1"}, "b1"),
    (json.dumps({"action": "launch", "batch_id": "b1", "request": 3}).encode(), {}, "b1"),
    (json.dumps({"action": "launch", "batch_id": "b1"}).encode(), {"action": "launch", "batch_id": "b1"}, "b1"),
    (b"x" * (MAX_REQUEST_BYTES + 1), {"action": "launch", "batch_id": "big"}, "big"),
    (b"", {"action": "launch", "batch_id": "b1"}, "b1"),
]
NOT_NAMED = [
    (b"\xff", {}),
    (b"[1]", {"action": "launch"}),
    (json.dumps({"action": "cancel", "batch_id": "b1"}).encode(), {}),
    (json.dumps({"batch_id": "b1"}).encode(), {}),
    (json.dumps({"action": "launch", "batch_id": "b1"}).encode(), {"batch_id": "b2"}),
    (json.dumps({"action": "launch", "batch_id": "b1"}).encode(), {"action": "cancel"}),
    (json.dumps({"action": "launch", "batch_id": "Not_Valid"}).encode(), {}),
    (json.dumps({"action": "launch", "batch_id": 7}).encode(), {}),
    (b"x" * (MAX_REQUEST_BYTES + 1), {}),
    (json.dumps({"action": "launch", "batch_id": "b1", "pad": "x" * MAX_REQUEST_BYTES}).encode(), {}),
    (json.dumps({"action": ["launch"], "batch_id": "b1"}).encode(), {}),
    (json.dumps({"action": "launch", "batch_id": ["b1"]}).encode(), {}),
    (json.dumps({"action": {"a": 1}, "batch_id": {"b": 1}}).encode(), {"action": "launch"}),
]


@pytest.mark.parametrize(("data", "attributes", "batch_id"), NAMED)
def test_an_undecodable_launch_names_its_batch(data: bytes, attributes: dict[str, str], batch_id: str) -> None:
    assert batch_named(data, attributes) == batch_id


@pytest.mark.parametrize(("data", "attributes"), NOT_NAMED)
def test_a_message_that_names_no_single_launch_names_no_batch(data: bytes, attributes: dict[str, str]) -> None:
    assert batch_named(data, attributes) is None
