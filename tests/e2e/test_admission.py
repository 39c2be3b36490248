"""Hostile batch requests published raw on the requests topic (the contract's message format).

Checks, against a running launcher whose profiles file offers ``cpu`` and ``gpu``: a request
naming an unknown profile, a handler outside the profile's patterns, an image the profile
does not list, parallelism above the cap, the GPU pool's profile with a CPU handler, a
placement of its own, an ``--output`` outside the profile's ``outputs`` (or for a profile that
lists none), 10 MB of data, invalid UTF-8. Each ends ``rejected`` with a reason
naming the rule, is counted in ``batchctl_requests_rejected_total{rule}`` and logged with its
message id; no Job is created; the batch's topics and subscriptions (created first, as a
submitter does) are deleted; ``status`` exits 2 with the reason. A message that names no
batch is dropped with a log line. On the Kubernetes backend: the same requests create no
Job, and an admitted one gets a Job shaped by its profile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from batchctl.core import topology
from batchctl.core.pubsub import PubSub
from batchctl.core.settings import Settings
from batchctl.frontend.cli import main
from batchctl.launcher.app import assemble
from tests.e2e.test_hostile_inputs import assert_acked_and_alive, idle_launcher, launch_body, publish
from tests.support.kube_fixtures import KubeApi
from tests.support.launching import running_launcher
from tests.support.pulling import leftovers
from tests.support.waiting import wait_for

HANDLER = "batchctl.worker.demo:handle"
PROFILES = {"profiles": {
    "cpu": {"handlers": ["batchctl.worker.demo:*"], "max_parallelism": 4, "image": "reg.example/batchctl:1.0.0",
            "images": ["reg.example/batchctl:1.0.1"], "node_selector": {"pool": "cpu"}, "tolerations": [],
            "outputs": ["gs://acme-results/cpu/"]},
    "gpu": {"handlers": ["acme.models:*"], "max_parallelism": 2, "image": "reg.example/gpu@sha256:" + "b" * 64,
            "node_selector": {"pool": "gpu"}, "resources": {"limits": {"nvidia.com/gpu": 1}},
            "tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
}}
TEN_MB = 10_000_000 - 1024
"""Just under Pub/Sub's 10 MB message limit, with room for the attributes."""


def cpu(batch_id: str, **request: Any) -> dict[str, Any]:
    """A launch request for the ``cpu`` profile, with ``request`` fields replaced."""
    return launch_body(batch_id, **{"handler": HANDLER, "profile": "cpu", "max_parallelism": 2, **request})


def message(hostile: dict[str, Any] | bytes, batch_id: str) -> dict[str, Any] | bytes:
    """The hostile case for ``batch_id``: request fields over a valid cpu request, or raw bytes."""
    return cpu(batch_id, **hostile) if isinstance(hostile, dict) else hostile


HOSTILE = [
    pytest.param(dict(profile="root"), "profile", "profile 'root' is not offered (offered: cpu, gpu)",
                 id="unknown-profile"),
    pytest.param(dict(handler="os:system"), "handler", "handler 'os:system' is not allowed by profile 'cpu'",
                 id="handler-outside-allow-list"),
    pytest.param(dict(image="evil.example/miner:1"), "image",
                 "image 'evil.example/miner:1' is not allowed by profile 'cpu'", id="image-not-allowed"),
    pytest.param(dict(max_parallelism=1000), "parallelism",
                 "max_parallelism 1000 is above profile 'cpu''s cap of 4", id="parallelism-above-cap"),
    pytest.param(dict(profile="gpu"), "handler", f"handler '{HANDLER}' is not allowed by profile 'gpu'",
                 id="other-pool-profile"),
    pytest.param(dict(node_selector={"pool": "gpu"}), "malformed",
                 "field 'request.node_selector' is not known", id="own-node-pool"),
    pytest.param(dict(output="gs://other-bucket/x/"), "output",
                 "output 'gs://other-bucket/x/' is not under profile 'cpu''s outputs (gs://acme-results/cpu/)",
                 id="output-outside-the-profiles-outputs"),
    pytest.param(dict(profile="gpu", handler="acme.models:run", output="gs://acme-results/cpu/"), "output",
                 "output 'gs://acme-results/cpu/' is not allowed: profile 'gpu' lists no outputs",
                 id="output-for-a-profile-without-outputs"),
    pytest.param(b"{" * TEN_MB, "size", f"request of {TEN_MB} bytes is larger than", id="10mb"),
    pytest.param(b"\xff\xfe{\"action\": \"launch\"}", "malformed", "not JSON", id="invalid-utf8"),
]


@pytest.fixture
def profiled(env: dict[str, str], tmp_path: Path) -> Settings:
    """Settings whose launcher offers the ``cpu`` and ``gpu`` profiles."""
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(PROFILES))
    return Settings.from_env({**env, "BATCHCTL_PROFILES": str(path), "BATCHCTL_BACKEND": "local"})


def rejected_count(run: Any, rule: str) -> float:
    value = run.launcher.metrics.registry.get_sample_value("batchctl_requests_rejected_total", {"rule": rule})
    return float(value or 0.0)


@pytest.mark.parametrize(("hostile", "rule", "reason"), HOSTILE)
@pytest.mark.timeout(90)
def test_hostile_request_ends_rejected_with_nothing_left(
    hostile: dict[str, Any] | bytes, rule: str, reason: str, profiled: Settings, pubsub: PubSub,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rejected with a reason naming the rule, counted, logged with the message id; no Job; no topic left."""
    topology.create_batch(pubsub, "h", topology.BatchTopology())  # what a submit leaves before its request
    with idle_launcher(profiled, pubsub) as (run, ledger, backend), capture_logs() as logged:
        data = message(hostile, "h")
        message_id = publish(pubsub, profiled.names.requests_topic, data, {"action": "launch", "batch_id": "h"})
        assert_acked_and_alive(run, ledger, message_id)
        batch = run.parts.store.load("h")
        assert batch is not None and batch.state == "rejected", batch
        assert reason in batch.reason and "\n" not in batch.reason
        assert batch.cleaned
        assert backend.launched == {}
        assert rejected_count(run, rule) == 1
    lines = [e for e in logged if e["event"] == "request_rejected"]
    assert [(e["rule"], e["message_id"], e["batch_id"]) for e in lines] == [(rule, message_id, "h")]
    assert leftovers(pubsub, profiled.prefix) == ([], [])
    capsys.readouterr()
    assert main(["status", "h"], environ=dict(profiled.environ)) == 2
    out = capsys.readouterr().out
    assert "rejected" in out and reason in out


@pytest.mark.timeout(60)
def test_request_naming_no_batch_is_dropped_with_a_log_line(profiled: Settings, pubsub: PubSub) -> None:
    """Invalid UTF-8 with no attributes cannot name a batch: dropped, logged with its message id, counted."""
    with idle_launcher(profiled, pubsub) as (run, ledger, backend), capture_logs() as logged:
        message_id = publish(pubsub, profiled.names.requests_topic, b"\xff\xfe", {})
        assert_acked_and_alive(run, ledger, message_id)
        assert run.parts.store.load_all() == [] and backend.launched == {}
        assert rejected_count(run, "malformed") == 1
    assert [e["message_id"] for e in logged if e["event"] == "request_dropped"] == [message_id]


@pytest.mark.timeout(60)
def test_admitted_request_for_an_allowed_image_is_launched(profiled: Settings, pubsub: PubSub) -> None:
    """The control: a request within its profile (an alternative image) is launched, nothing counted."""
    with idle_launcher(profiled, pubsub) as (run, _, backend):
        publish(pubsub, profiled.names.requests_topic, cpu("ok", image="reg.example/batchctl:1.0.1"), {})
        wait_for(lambda: backend.launched, timeout=15, what="the request to be launched")
        assert backend.launched == {"ok": [profiled.names.job("ok", 1)]}
        assert run.parts.store.load("ok").state == "running"  # type: ignore[union-attr]
        assert all(rejected_count(run, rule) == 0 for rule in ("profile", "handler", "image"))


@pytest.mark.timeout(120)
def test_on_kubernetes_hostile_requests_create_no_job(
    profiled: Settings, pubsub: PubSub, kube_api: KubeApi,
) -> None:
    """Every hostile request above against the Kubernetes backend: 0 Jobs; then an admitted ``gpu``
    request gets one Job with the gpu profile's image, pool, toleration and GPU."""
    from tests.support.kube import JOBS

    settings = Settings.from_env({**profiled.environ, "BATCHCTL_BACKEND": "kubernetes",
                                  "KUBECONFIG": str(kube_api.kubeconfig), "BATCHCTL_NAMESPACE": kube_api.namespace,
                                  "BATCHCTL_LEADER_ELECTION": "false"})
    topology.ensure_shared(pubsub)
    with running_launcher(settings, pubsub, parts=assemble(settings)) as run:
        for n, case in enumerate(HOSTILE):
            data = message(case.values[0], f"h{n}")  # type: ignore[arg-type]
            publish(pubsub, settings.names.requests_topic, data, {"action": "launch", "batch_id": f"h{n}"})
        wait_for(lambda: sum(1 for b in run.parts.store.load_all() if b.state == "rejected") == len(HOSTILE),
                 timeout=60, what="every hostile request rejected")
        assert kube_api.server.list_objects(JOBS, kube_api.namespace) == []
        good = launch_body("good", handler="acme.models:predict", profile="gpu", max_parallelism=2)
        publish(pubsub, settings.names.requests_topic, good, {})
        wait_for(lambda: kube_api.server.list_objects(JOBS, kube_api.namespace), timeout=30, what="the gpu Job")
    (job,) = kube_api.server.list_objects(JOBS, kube_api.namespace)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == PROFILES["profiles"]["gpu"]["image"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert json.dumps(job).count("evil.example") == 0
