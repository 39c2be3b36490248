"""A batch whose profile was removed from the profiles file after it was admitted (issue 10).

Checks: the Job shape of such a batch (kube ``job_config``, local worker env) raises ``ProfileGone``
naming the profile; the launcher's error judgement gives up on the first try (no retry can bring
the profile back: the file is read once at start), with a one-line reason naming the profile.
"""

from __future__ import annotations

from typing import Any

import pytest

from batchctl.core.errors import BadInput, ProfileGone
from batchctl.core.messages import BatchRequest
from batchctl.launcher import failures
from batchctl.launcher.jobconfig import JobConfig
from batchctl.launcher.kube_backend import job_config
from batchctl.launcher.local_backend import profile_of
from batchctl.launcher.state import BatchState

OFFERED = {"etl": JobConfig().default_profile()}


def gone_batch() -> BatchState:
    return BatchState(BatchRequest("b1", parts=1, records=1, bytes=1, handler="m:f", profile="removed"))


@pytest.mark.parametrize("shape", [lambda b: job_config(JobConfig(), OFFERED, b), lambda b: profile_of(OFFERED, b)],
                         ids=["kube", "local"])
def test_a_removed_profile_is_profile_gone(shape: Any) -> None:
    with pytest.raises(ProfileGone) as caught:
        shape(gone_batch())
    assert "profile 'removed'" in str(caught.value)
    assert isinstance(caught.value, BadInput)


def test_profile_gone_fails_the_batch_at_once_naming_the_profile() -> None:
    error = ProfileGone("profile 'removed' of batch b1 is no longer offered")
    verdict = failures.judge(error, 1)
    assert verdict.give_up
    reason = failures.reason(error)
    assert "profile 'removed'" in reason and "\n" not in reason


def test_other_bad_input_still_retries_first() -> None:
    assert not failures.judge(BadInput("untagged image"), 1).give_up
