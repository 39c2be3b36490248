"""``submit --priority`` picks the workers' PriorityClass where the profile says so.

Checks: a profile's ``priority_classes`` maps low/normal/high to PriorityClass names (read from the
profiles file; an unknown priority or a bad name is one BadInput naming file, profile and key); the
Job of a ``high`` batch gets the profile's high class, a priority the profile does not list keeps the
profile's ``priority_class``; a request's priority out of low/normal/high is rejected on decode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from batchctl.core.errors import BadInput
from batchctl.core.messages import BatchRequest, Control, decode_control, encode_control
from batchctl.core.profiles import parse_profiles
from batchctl.launcher.jobconfig import JobConfig
from batchctl.launcher.kube_backend import job_config
from batchctl.launcher.state import BatchState

BASE = JobConfig().default_profile()


def profiles(body: dict[str, Any]) -> Any:
    return parse_profiles(yaml.safe_dump({"profiles": {"etl": {"handlers": ["m:*"], **body}}}), source="p.yaml",
                          base=BASE)


def batch(priority: str) -> BatchState:
    return BatchState(BatchRequest("b1", parts=1, records=1, bytes=1, handler="m:f", profile="etl",
                                   priority=priority))


def test_priority_picks_the_profiles_class() -> None:
    """high → the profile's high class; normal (not listed) → the profile's priority_class."""
    offered = profiles({"priority_class": "batch-normal", "priority_classes": {"high": "batch-high"}})
    assert offered["etl"].priority_classes == {"high": "batch-high"}
    assert job_config(JobConfig(), offered, batch("high")).priority_class == "batch-high"
    assert job_config(JobConfig(), offered, batch("normal")).priority_class == "batch-normal"
    assert job_config(JobConfig(), offered, batch("low")).priority_class == "batch-normal"


@pytest.mark.parametrize(("value", "complaint"), [({"urgent": "x"}, "urgent not known"),
                                                  ({"high": "Not_A_Name"}, "not a Kubernetes object name"),
                                                  ("batch-high", "must be a mapping")])
def test_bad_priority_classes_name_the_key(value: Any, complaint: str) -> None:
    """One BadInput naming file, profile and key."""
    with pytest.raises(BadInput) as caught:
        profiles({"priority_classes": value})
    assert str(caught.value).startswith("p.yaml: profile 'etl': key 'priority_classes': ")
    assert complaint in str(caught.value)


def test_request_priority_is_checked_on_decode() -> None:
    """A control message whose priority is not low/normal/high is BadInput naming the field."""
    request = dataclasses.replace(batch("high").request, priority="urgent")
    data, attributes = encode_control(Control("launch", "b1", request))
    with pytest.raises(BadInput, match=r"request\.priority"):
        decode_control(data, attributes)
